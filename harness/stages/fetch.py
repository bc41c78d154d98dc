"""`harness fetch CONFIG`: download everything a run of the config reads from the hub (the model,
hub calibration datasets pinned to their commit, lm-eval's hub task datasets, the packaged eval
data) into the caches, so the run itself needs no network and no hub token (the nightly gives
HF_TOKEN to this step only and runs with HF_HUB_OFFLINE=1)."""

from __future__ import annotations

from collections.abc import Callable

from harness.config import Config
from harness.stages import calibration, hub_data, models
from harness.stages.evaluate import lm_eval
from harness.stages.evaluate.stage import lm_eval_tasks


def fetch(config: Config, say: Callable[[str], None]) -> None:
    cache_dir = config.cache_dir or models.default_cache_dir()
    say(f"model {config.model.source}: resolving")
    model = models.resolve(config.model.source, config.model.revision, cache_dir, dtype=config.model.dtype)
    say(f"model {config.model.source}: {model.identity} at {model.path}")
    for spec in config.calibration:
        if spec.source.startswith(hub_data.PREFIX):
            pinned = hub_data.pin(spec, cache_dir)
            path = hub_data.fetch(pinned, cache_dir, calibration.hub_chars(pinned))
            say(f"calibration {spec.name}: {spec.source}@{pinned.revision} in {path}")
    if config.evals is not None:
        tasks, _ = lm_eval_tasks(config.evals)
        include = lm_eval.prepare_task_dir(cache_dir, tasks, config.evals.max_gen_toks)  # the packaged data
        hub_tasks = [t for t in tasks if t not in lm_eval.OFFLINE_TASKS.values()]
        if hub_tasks:
            from lm_eval.tasks import TaskManager, get_task_dict

            get_task_dict(hub_tasks, TaskManager(include_path=str(include)))  # downloads their datasets
        say(f"evals: {', '.join(tasks) or 'none'} ready ({len(hub_tasks)} from the hub)")
