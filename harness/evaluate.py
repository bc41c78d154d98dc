"""The evaluate stage, parent side: choose the tasks, build the held-out windows, run
harness.evals in an isolated process, and compare with the model's baseline cell
(KL divergence on the same tokens; recovery in % of the baseline's scores)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import eval_data, evals, formats, results
from harness.config import EvalSpec
from harness.engines.base import EngineRequest
from harness.isolation import memory_limit_bytes, run_isolated

BASELINES = [name for name, fmt in formats.REGISTRY.items() if fmt.is_baseline]
# Higher is better for every recovered metric but perplexity.
RECOVERED = {"pass_at_1": True, "math_exact_match": True, "gsm8k_strict_match": True, "perplexity": False}


def lm_eval_tasks(spec: EvalSpec) -> tuple[list[str], str | None]:
    """lm-eval task names, and a note when HumanEval is skipped for lack of permission."""
    tasks = [evals.OFFLINE_TASKS.get(name, name) for name in spec.tasks]
    notes = []
    unsandboxed = [t for t in tasks if t in evals.UNSANDBOXED_CODE_TASKS]
    if unsandboxed:
        tasks = [t for t in tasks if t not in unsandboxed]
        notes.append(f"{', '.join(unsandboxed)} refused: lm-eval runs its code outside harness.sandbox")
    if not spec.allow_code_execution:
        skipped = [t for t in tasks if t in evals.CODE_TASKS]
        if skipped:
            tasks = [t for t in tasks if t not in skipped]
            notes.append(f"{', '.join(skipped)} skipped: it runs model-generated code; set evals.allow_code_execution: true to run it in the sandbox")
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
    return [tokens[i * spec.kld.seq_len : (i + 1) * spec.kld.seq_len] for i in range(min(spec.kld.windows, len(tokens) // spec.kld.seq_len))]


def _reference_path(out_dir: Path, model_identity: str, spec: EvalSpec, engine: str) -> Path:
    digest = hashlib.sha256(json.dumps([model_identity, spec.kld.model_dump() if spec.kld else None]).encode()).hexdigest()[:12]
    return out_dir / "reference" / f"{digest}-{engine}.npz"


def _find_reference(out_dir: Path, model_identity: str, spec: EvalSpec, engine: str) -> Path | None:
    """The same engine's baseline first; otherwise any engine's (e.g. GGUF cells against vLLM's bf16)."""
    same = _reference_path(out_dir, model_identity, spec, engine)
    if same.is_file():
        return same
    others = sorted(same.parent.glob(same.name.split("-")[0] + "-*.npz"))
    return others[0] if others else None


def run_stage(
    *, out_dir: Path, cache_dir: Path, model_dir: Path, model_identity: str, spec: EvalSpec, engine: str,
    engine_request: EngineRequest, is_baseline: bool, log_path: Path,
) -> dict[str, Any]:
    """Columns for the row: the quality figures, or an eval_note saying what failed."""
    tasks, note = lm_eval_tasks(spec)
    include = evals.prepare_task_dir(cache_dir, tasks, spec.max_gen_toks)
    request = evals.EvalRequest(
        engine=engine,
        engine_request=replace(engine_request, max_model_len=max(engine_request.max_model_len, spec.max_model_len), logprobs_k=spec.kld.top_k if spec.kld else 0),
        tasks=tuple(tasks),
        include_path=include,
        limit=spec.limit,
        allow_code_execution=spec.allow_code_execution,
        batch_size=spec.batch_size,
        add_bos_token=spec.add_bos_token,
        kld_windows=kld_windows(model_dir, cache_dir, spec),
        kld_top_k=spec.kld.top_k if spec.kld else 0,
    )
    outcome = run_isolated(evals.run, (request,), log_path, spec.timeout_s, memory_limit_bytes(engine_request.spec.memory_limit_gib))
    columns: dict[str, Any] = {
        "eval_limit": spec.limit,
        "eval_settings": json.dumps({"greedy": True, "n": 1, "temperature": 0.0, "max_gen_toks": spec.max_gen_toks, "tasks": tasks, "kld": spec.kld.model_dump() if spec.kld else None}),
        "eval_s": outcome.wall_s,
    }
    if not outcome.ok:
        columns["eval_note"] = "; ".join(filter(None, [note, f"evaluate failed: {outcome.error}"]))
        return columns
    value: evals.EvalOutcome = outcome.value
    columns.update(value.metrics)
    columns.update(
        lm_eval_version=value.lm_eval_version,
        eval_samples=json.dumps(value.samples),
        eval_task_versions=json.dumps(value.task_versions, default=str),
        eval_note=note,
    )
    if value.top_ids is not None:
        if is_baseline:
            path = _reference_path(out_dir, model_identity, spec, engine)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, ids=value.top_ids, logprobs=value.top_logprobs)
        reference = _find_reference(out_dir, model_identity, spec, engine)
        if reference is not None:
            base = np.load(reference)
            divergence = evals.kl_divergence(base["ids"], base["logprobs"], value.top_ids, value.top_logprobs)
            columns.update(kld_mean=divergence.kld_mean, kld_p99=divergence.kld_p99, top1_agreement=divergence.top1_agreement, kld_positions=divergence.positions, kld_reference=reference.stem)
    return columns


def recovery(row: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Each metric in % of the baseline cell's value (same model; same engine when there is one)."""
    frame = pd.concat([pd.DataFrame([row]), results.read_rows(out_dir)], ignore_index=True)  # a baseline is its own reference
    ok = frame["status"].fillna("ok") == "ok"  # the row being finished has no status yet
    base = frame[(frame["model_identity"] == row["model_identity"]) & frame["format"].isin(BASELINES) & ok]
    if base.empty:
        return {}
    same_engine = base[base["engine"] == row["engine"]]
    reference = (same_engine if not same_engine.empty else base).iloc[0]
    columns: dict[str, Any] = {"recovery_reference": reference["cell_name"]}
    for metric, higher_is_better in RECOVERED.items():
        mine, theirs = row.get(metric), reference[metric]
        if mine is None or pd.isna(theirs) or theirs == 0 or mine == 0 and not higher_is_better:
            continue
        columns[f"{metric}_recovery_pct"] = 100.0 * (mine / theirs if higher_is_better else theirs / mine)
    return columns
