"""The pass after the cells: every relative figure, derived from what each cell stored about itself.

A cell never reads another cell while it runs. This pass reads the whole table (and each cell's
stored log-probabilities) and fills, for every row, against a reference chosen by a rule:

  quality reference  the ok baseline cell of the same model with bf16 weights (else another
                     baseline dtype), KV cache `auto` and the same eval settings, on the same
                     engine; an engine that serves no baseline format declares whose baseline it
                     is compared with (Engine.reference_engine: GGUF cells against vLLM's bf16).
                     → kld_*, top1_agreement, <metric>_recovery_pct, reference_cell_key.
  speed reference    the ok baseline cell of the same model, engine, host and workload with KV
                     cache `auto` (bf16 first) → speedup, speed_reference_key.

Ties go to the same config, then the latest finished row. A row with no reference says why in
reference_rule. It runs on every merge of the results table (so a baseline that finishes last,
on Ray or in a concurrent or resumed run, changes nothing) and again when report and gate load a
table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import engines, formats
from harness.results.divergence import kl_divergence
from harness.results.metrics import METRICS, recovery_pct

#: the relative columns this pass owns (cells leave them empty)
QUALITY_COLUMNS = (
    "reference_cell_key",
    "reference_rule",
    "kld_mean",
    "kld_p99",
    "top1_agreement",
    "kld_positions",
    "kld_reference",
    *[m.recovery_column for m in METRICS if m.recovered],
    "recovery_reference",
)
SPEED_COLUMNS = ("speedup", "speed_reference_key")
_KLD_COLUMNS = ("kld_mean", "kld_p99", "top1_agreement", "kld_positions", "kld_reference")
#: baseline formats in the order a reference is preferred (bf16 first, as the field compares)
BASELINE_ORDER: tuple[str, ...] = tuple(
    sorted((name for name, fmt in formats.REGISTRY.items() if fmt.is_baseline), key=lambda n: n != "bf16")
)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _finite(value: Any) -> float | None:
    if _missing(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _same(a: Any, b: Any) -> bool:
    return (_missing(a) and _missing(b)) or (not _missing(a) and not _missing(b) and a == b)


def reference_engine(engine: str) -> str | None:
    """The engine whose baseline cells are `engine`'s quality reference: itself when it serves a
    baseline format, else what it declares."""
    serves_baseline = any(engine in formats.REGISTRY[name].serving_engines() for name in BASELINE_ORDER)
    if serves_baseline:
        return engine
    known = engines.REGISTRY.get(engine)
    return known.reference_engine if known is not None else None


@dataclass(frozen=True)
class Reference:
    row: dict[str, Any] | None
    rule: str  # the rule that chose it, or why there is none


def _pick(row: dict[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of equally valid references: bf16 first, the row's own config, then the latest."""
    if not candidates:
        return None

    def rank(c: dict[str, Any]) -> tuple[int, int, float]:
        finished = c.get("finished_at")
        stamp = 0.0 if _missing(finished) else pd.Timestamp(finished).timestamp()
        return (BASELINE_ORDER.index(c["format"]), int(c.get("config_name") != row.get("config_name")), -stamp)

    return min(candidates, key=rank)


def quality_reference(row: dict[str, Any], rows: list[dict[str, Any]]) -> Reference:
    """The reference of `row`'s quality figures (the module docstring states the rule)."""
    engine = reference_engine(str(row.get("engine")))
    if engine is None:
        return Reference(
            None, f"no reference: engine {row.get('engine')} serves no baseline format and declares no reference engine"
        )
    candidates = [
        r
        for r in rows
        if r.get("status") == "ok"
        and r.get("format") in BASELINE_ORDER
        and r.get("engine") == engine
        and r.get("kv_cache_dtype") == "auto"
        and r.get("model_identity") == row.get("model_identity")
        and _same(r.get("eval_settings"), row.get("eval_settings"))
        and _same(r.get("eval_limit"), row.get("eval_limit"))
    ]
    chosen = _pick(row, candidates)
    where = f"{engine}" + (" (declared by " + str(row.get("engine")) + ")" if engine != row.get("engine") else "")
    if chosen is None:
        return Reference(
            None,
            f"no reference: no ok baseline cell of this model on {where} with KV cache auto and the same eval settings",
        )
    return Reference(chosen, f"baseline {chosen['format']} on {where}, KV cache auto, same eval settings")


def speed_reference(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The reference of `row`'s speedup: the same engine's baseline on the same host and workload, KV auto."""
    same_on = (
        "model_identity",
        "engine",
        "hostname",
        "hw_name",
        "hw_count",
        "workload_prompts",
        "workload_input_len",
        "workload_output_len",
        "workload_seed",
    )
    candidates = [
        r
        for r in rows
        if r.get("status") == "ok"
        and r.get("format") in BASELINE_ORDER
        and r.get("kv_cache_dtype") == "auto"
        and not _missing(r.get("output_tok_s"))
        and all(_same(r.get(c), row.get(c)) for c in same_on)
    ]
    return _pick(row, candidates)


Logprobs = tuple[np.ndarray, np.ndarray]


def logprobs_loader(out_dir: Path | None) -> Callable[[dict[str, Any]], Logprobs | None]:
    """Reads a row's stored top log-probabilities (its kld_logprobs file under `out_dir`), once each."""
    cache: dict[str, Logprobs | None] = {}

    def load(row: dict[str, Any]) -> Logprobs | None:
        relative = row.get("kld_logprobs")
        if out_dir is None or _missing(relative):
            return None
        name = str(relative)
        if name not in cache:
            path = out_dir / name
            try:
                with np.load(path) as stored:
                    cache[name] = (stored["ids"], stored["logprobs"])
            except (OSError, KeyError, ValueError):
                cache[name] = None
        return cache[name]

    return load


def _kld_columns(
    row: dict[str, Any], ref: dict[str, Any], load: Callable[[dict[str, Any]], Logprobs | None]
) -> dict[str, Any]:
    mine, theirs = load(row), load(ref)
    if mine is None or theirs is None:
        # Only the stored figures are at hand (a table copied without its output directory):
        # kept where they were computed against this very reference, dropped otherwise.
        if row.get("reference_cell_key") == ref.get("cell_key") and not _missing(row.get("kld_mean")):
            return {c: row.get(c) for c in _KLD_COLUMNS}
        return dict.fromkeys(_KLD_COLUMNS)
    if mine[0].shape != theirs[0].shape:
        return dict.fromkeys(_KLD_COLUMNS)
    divergence = kl_divergence(theirs[0], theirs[1], mine[0], mine[1])
    return {
        "kld_mean": divergence.kld_mean,
        "kld_p99": divergence.kld_p99,
        "top1_agreement": divergence.top1_agreement,
        "kld_positions": divergence.positions,
        "kld_reference": ref.get("cell_name"),
    }


def compare_row(
    row: dict[str, Any], rows: list[dict[str, Any]], load: Callable[[dict[str, Any]], Logprobs | None]
) -> dict[str, Any]:
    """The relative columns of one row."""
    columns: dict[str, Any] = dict.fromkeys((*QUALITY_COLUMNS, *SPEED_COLUMNS))
    if row.get("status") != "ok":
        return columns
    speed = speed_reference(row, rows)
    if speed is not None and not _missing(row.get("output_tok_s")) and float(speed["output_tok_s"]) > 0:
        columns.update(
            speedup=float(row["output_tok_s"]) / float(speed["output_tok_s"]), speed_reference_key=speed["cell_key"]
        )
    if _missing(row.get("eval_settings")):
        return columns
    reference = quality_reference(row, rows)
    columns["reference_rule"] = reference.rule
    ref = reference.row
    if ref is None:
        return columns
    columns.update(reference_cell_key=ref["cell_key"], recovery_reference=ref.get("cell_name"))
    for metric in METRICS:
        if not metric.recovered:
            continue
        mine, theirs = _finite(row.get(metric.column)), _finite(ref.get(metric.column))
        if mine is not None and theirs is not None:
            columns[metric.recovery_column] = recovery_pct(metric, mine, theirs)
    columns.update(_kld_columns(row, ref, load))
    return columns


def apply(frame: pd.DataFrame, out_dir: Path | None) -> pd.DataFrame:
    """`frame` with every relative column filled (a copy). `out_dir`: where the rows' stored
    log-probabilities are (None: only the figures already in the table are at hand)."""
    if frame.empty:
        return frame.copy()
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    load = logprobs_loader(out_dir)
    relative = [compare_row(r, records, load) for r in records]
    result = frame.copy()
    for column in (*QUALITY_COLUMNS, *SPEED_COLUMNS):
        result[column] = pd.Series([values[column] for values in relative], index=frame.index, dtype=object)
    return result
