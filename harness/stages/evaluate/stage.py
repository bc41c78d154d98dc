"""The evaluate stage, parent side: choose the tasks, build the held-out windows, run
lm_eval.run in an isolated process, and keep what the cell measured about itself: its scores,
each document's score, and its top log-probabilities on the windows (a file beside its row).
Nothing here reads another cell: recovery and KL divergence are the compare pass's
(harness.results.compare)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness import engines
from harness.config import EvalSpec
from harness.engines.base import EngineRequest
from harness.isolation import memory_limit_bytes, run_isolated
from harness.results import logprobs as stored_logprobs
from harness.stages.evaluate import data as eval_data
from harness.stages.evaluate import lm_eval, passkey, sandbox


def lm_eval_tasks(spec: EvalSpec) -> tuple[list[str], str | None]:
    """lm-eval task names, and a note when HumanEval is skipped: no permission, or no sandbox."""
    tasks = [lm_eval.OFFLINE_TASKS.get(name, name) for name in spec.tasks]
    notes = []
    unsandboxed = [t for t in tasks if t in lm_eval.UNSANDBOXED_CODE_TASKS]
    if unsandboxed:
        tasks = [t for t in tasks if t not in unsandboxed]
        notes.append(f"{', '.join(unsandboxed)} refused: lm-eval runs its code outside harness.sandbox")
    code = [t for t in tasks if t in lm_eval.CODE_TASKS]
    if code and not spec.allow_code_execution:
        tasks = [t for t in tasks if t not in code]
        notes.append(
            f"{', '.join(code)} skipped: it runs model-generated code; set evals.allow_code_execution: true to "
            "run it in the sandbox"
        )
    elif code and (problem := sandbox.boundary_problem()) is not None:  # fail closed: no score without the boundary
        tasks = [t for t in tasks if t not in code]
        notes.append(f"{', '.join(code)} not run: no sandbox: {problem}")
    return tasks, "; ".join(notes) or None


def kld_windows(model_dir: Path, cache_dir: Path, spec: EvalSpec) -> list[list[int]]:
    """Held-out prose (disjoint from calibration), tokenized by the source model, cut into windows."""
    if spec.kld is None:
        return []
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokens: list[int] = []
    need = spec.kld.windows * spec.kld.seq_len
    for line in eval_data.heldout_prose_file(cache_dir).read_text().splitlines():
        tokens.extend(tokenizer(json.loads(line)["text"], add_special_tokens=False)["input_ids"])
        if len(tokens) >= need:
            break
    count = min(spec.kld.windows, len(tokens) // spec.kld.seq_len)
    return [tokens[i * spec.kld.seq_len : (i + 1) * spec.kld.seq_len] for i in range(count)]


def eval_settings(spec: EvalSpec, tasks: list[str]) -> str:
    """The settings two cells' quality figures are comparable under (the compare pass matches on them)."""
    return json.dumps(
        {
            "greedy": True,
            "n": 1,
            "temperature": 0.0,
            "max_gen_toks": spec.max_gen_toks,
            "tasks": tasks,
            "kld": spec.kld.model_dump(exclude={"full_vocabulary"}) if spec.kld else None,
            **({"passkey": passkey_spec.model_dump()} if (passkey_spec := spec.passkey_spec()) else {}),
        }
    )


@dataclass(frozen=True)
class QualityResult:
    """What the evaluate stage measured about the cell itself."""

    limit: int | None
    settings: str
    seconds: float
    note: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    lm_eval_version: str | None = None
    samples: dict[str, int] = field(default_factory=dict)
    task_versions: dict[str, Any] = field(default_factory=dict)
    logprobs_file: str | None = None  # relative to the output directory
    passkey_by_length: dict[str, float] = field(default_factory=dict)  # prompt length → accuracy
    load_s: float | None = None  # loading the engine for lm-eval

    def columns(self) -> dict[str, Any]:
        columns: dict[str, Any] = {
            "eval_limit": self.limit,
            "eval_settings": self.settings,
            "eval_s": self.seconds,
            "eval_note": self.note,
        }
        if self.lm_eval_version is None:  # the evaluation failed: only its note
            return columns
        return {
            **columns,
            **self.metrics,
            "eval_items": json.dumps(self.items, sort_keys=True) if self.items else None,
            "lm_eval_version": self.lm_eval_version,
            "eval_samples": json.dumps(self.samples),
            "eval_task_versions": json.dumps(self.task_versions, default=str),
            "kld_logprobs": self.logprobs_file,
            "passkey_by_length": json.dumps(self.passkey_by_length) if self.passkey_by_length else None,
            "eval_load_s": self.load_s,
        }


#: the columns of a cell whose model has random weights
SYNTHETIC = {"eval_note": "synthetic model (random weights): no quality figures"}


def measure(
    *,
    out_dir: Path,
    key: str,
    cache_dir: Path,
    model_dir: Path,
    spec: EvalSpec,
    engine_request: EngineRequest,
    log_path: Path,
) -> QualityResult:
    """The cell's quality figures, or a QualityResult whose note says what failed (the cell stays ok)."""
    tasks, note = lm_eval_tasks(spec)
    passkey_spec = spec.passkey_spec()
    passkey_file = (
        passkey.data_file(eval_data.data_dir(cache_dir), model_dir, passkey_spec) if passkey_spec is not None else None
    )
    include = lm_eval.prepare_task_dir(cache_dir, tasks, spec.max_gen_toks, passkey_file)
    k = spec.kld.top_k if spec.kld else 0
    request = lm_eval.EvalRequest(
        engine=engines.get(engine_request.spec.name),
        engine_request=replace(
            engine_request, max_model_len=max(engine_request.max_model_len, spec.max_model_len), logprobs_k=k
        ),
        tasks=tuple(tasks),
        include_path=include,
        limit=spec.limit,
        allow_code_execution=spec.allow_code_execution,
        batch_size=spec.batch_size,
        add_bos_token=spec.add_bos_token,
        kld_windows=kld_windows(model_dir, cache_dir, spec),
        kld_top_k=k,
        full_logprobs_path=out_dir / stored_logprobs.full_relative(stored_logprobs.top_relative(key))
        if spec.kld is not None and spec.kld.full_vocabulary
        else None,
    )
    outcome = run_isolated(
        lm_eval.run, (request,), log_path, spec.timeout_s, memory_limit_bytes(engine_request.spec.memory_limit_gib)
    )
    base = QualityResult(spec.limit, eval_settings(spec, tasks), outcome.wall_s, note)
    if not outcome.ok:
        return replace(base, note="; ".join(filter(None, [note, f"evaluate failed: {outcome.error}"])))
    value: lm_eval.EvalOutcome = outcome.value
    logprobs_file = None
    if value.top_ids is not None and value.top_logprobs is not None:
        logprobs_file = stored_logprobs.save_top(out_dir, key, value.top_ids, value.top_logprobs)
    return replace(
        base,
        metrics=value.metrics,
        items=value.items,
        lm_eval_version=value.lm_eval_version,
        samples=value.samples,
        task_versions=value.task_versions,
        logprobs_file=logprobs_file,
        load_s=value.load_s,
        passkey_by_length=passkey.by_length(passkey_file, value.items.get("passkey_exact_match", {}))
        if passkey_file is not None
        else {},
    )
