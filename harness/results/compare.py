"""The pass after the cells: every relative figure, derived from what each cell stored about itself.

A cell never reads another cell while it runs. This pass reads the whole table (and each cell's
stored log-probabilities) and fills, for every row, against a reference chosen by a rule:

  quality reference  the ok baseline cell of the same model with bf16 weights (else another
                     baseline dtype), KV cache `auto` and the same eval settings, on the same
                     engine (llama.cpp's baselines are gguf-bf16 and gguf-f16, as llama.cpp's own
                     KL divergence is against an F16 model); where that engine ran no such cell,
                     the engine it declares (Engine.reference_engine: GGUF cells against vLLM's
                     bf16), never one picked by name.
                     → kld_*, top1_agreement, <metric>_recovery_pct, reference_cell_key, and
                     paired_stats: per metric, the paired statistics over the documents both
                     scored (harness.results.paired), and the KLD figures' 95 % intervals
                     (bootstrap over the held-out windows).
  speed reference    the ok baseline cell of the same model, engine, host and workload with KV
                     cache `auto` (bf16 first) → speedup, speed_reference_key.

Ties go to the same config, then the latest finished row. A row with no reference says why in
reference_rule. It runs on every merge of the results table (so a baseline that finishes last,
on Ray or in a concurrent or resumed run, changes nothing) and again when report and gate load a
table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness import engines, formats
from harness.results.divergence import exact_kl_divergence, kl_divergence
from harness.results.logprobs import Stored, loader
from harness.results.metrics import BY_COLUMN, METRICS, recovery_pct
from harness.results.paired import compare as paired_compare

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
    "kld_median",
    "kld_method",
    "paired_stats",
)
SPEED_COLUMNS = ("speedup", "speed_reference_key")
_KLD_COLUMNS = (
    "kld_mean",
    "kld_median",
    "kld_p99",
    "top1_agreement",
    "kld_positions",
    "kld_reference",
    "kld_method",
)
#: baseline formats in the order a reference is preferred (bf16 first, as the field compares)
BASELINE_ORDER: tuple[str, ...] = tuple(
    sorted(
        (name for name, fmt in formats.REGISTRY.items() if fmt.is_baseline),
        key=lambda n: (n.removeprefix("gguf-") != "bf16", n),
    )
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


def reference_engines(engine: str) -> tuple[str, ...]:
    """The engines whose baseline cells may be `engine`'s quality reference, in order: itself
    when it serves a baseline format, then the engine it declares."""
    serves_baseline = any(engine in formats.REGISTRY[name].serving_engines() for name in BASELINE_ORDER)
    known = engines.REGISTRY.get(engine)
    declared = known.reference_engine if known is not None else None
    return tuple(dict.fromkeys([*([engine] if serves_baseline else []), *([declared] if declared else [])]))


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
        order = BASELINE_ORDER.index(c["format"])
        return (order, int(c.get("config_name") != row.get("config_name")), -stamp)

    return min(candidates, key=rank)


def quality_reference(row: dict[str, Any], rows: list[dict[str, Any]]) -> Reference:
    """The reference of `row`'s quality figures (the module docstring states the rule)."""
    own = str(row.get("engine"))
    tried = reference_engines(own)
    if not tried:
        return Reference(None, f"no reference: engine {own} serves no baseline format and declares no reference engine")
    for engine in tried:
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
        if chosen is not None:
            where = engine if engine == own else f"{engine} (declared by {own})"
            return Reference(chosen, f"baseline {chosen['format']} on {where}, KV cache auto, same eval settings")
    return Reference(
        None,
        f"no reference: no ok baseline cell of this model on {' or '.join(tried)} with KV cache auto and the same "
        "eval settings",
    )


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


def _kld_windows(row: dict[str, Any]) -> int:
    """How many held-out windows the row's eval settings asked the KLD positions to come from."""
    try:
        kld = json.loads(str(row.get("eval_settings"))).get("kld") or {}
        return int(kld.get("windows") or 0)
    except (ValueError, TypeError, AttributeError):
        return 0


def _kld_columns(
    row: dict[str, Any], ref: dict[str, Any], load: Callable[[dict[str, Any]], Stored | None]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The KLD columns, and their 95 % intervals (None when not computed here)."""
    mine, theirs = load(row), load(ref)
    if mine is None or theirs is None:
        # Only the stored figures are at hand (a table copied without its output directory):
        # kept where they were computed against this very reference, dropped otherwise.
        if row.get("reference_cell_key") == ref.get("cell_key") and not _missing(row.get("kld_mean")):
            return {c: row.get(c) for c in _KLD_COLUMNS}, None
        return dict.fromkeys(_KLD_COLUMNS), None
    if mine.ids.shape != theirs.ids.shape:
        return dict.fromkeys(_KLD_COLUMNS), None
    if mine.full is not None and theirs.full is not None and mine.full.shape == theirs.full.shape:
        divergence = exact_kl_divergence(theirs.full, mine.full)
    else:
        divergence = kl_divergence(theirs.ids, theirs.logprobs, mine.ids, mine.logprobs, mine.full)
    windows = _kld_windows(row)
    intervals = divergence.intervals(divergence.positions // windows if windows else 0)
    columns = {
        "kld_mean": divergence.kld_mean,
        "kld_median": divergence.kld_median,
        "kld_p99": divergence.kld_p99,
        "top1_agreement": divergence.top1_agreement,
        "kld_positions": divergence.positions,
        "kld_reference": ref.get("cell_name"),
        "kld_method": divergence.method,
    }
    return columns, {"windows": windows, "ci95": intervals}


def _json_dict(row: dict[str, Any], column: str) -> dict[str, Any]:
    """A JSON object column of the row, read back ({} when empty or not an object)."""
    try:
        stored = json.loads(str(row.get(column))) if not _missing(row.get(column)) else {}
    except ValueError:
        return {}
    return stored if isinstance(stored, dict) else {}


def _paired(row: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Per metric, the paired statistics of `row` against `ref` over the documents both scored."""
    mine, theirs = _json_dict(row, "eval_items"), _json_dict(ref, "eval_items")
    found: dict[str, Any] = {}
    for column in sorted(set(mine) & set(theirs)):
        metric = BY_COLUMN.get(column)
        if metric is None or not metric.recovered:
            continue
        stats = paired_compare(mine[column], theirs[column], metric.higher_is_better)
        if stats is not None:
            found[column] = stats.as_dict()
    return found


def compare_row(
    row: dict[str, Any], rows: list[dict[str, Any]], load: Callable[[dict[str, Any]], Stored | None]
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
    kld, kld_intervals = _kld_columns(row, ref, load)
    columns.update(kld)
    paired = _paired(row, ref)
    if kld_intervals is not None:
        paired["kld"] = kld_intervals
    elif row.get("reference_cell_key") == ref.get("cell_key"):  # stored intervals of the same reference
        kept = paired_stats(row).get("kld")
        if kept is not None:
            paired["kld"] = kept
    columns["paired_stats"] = json.dumps(paired, sort_keys=True) if paired else None
    return columns


def paired_stats(row: dict[str, Any]) -> dict[str, Any]:
    """A compared row's paired_stats column, read back ({} when it has none)."""
    return _json_dict(row, "paired_stats")


def apply(frame: pd.DataFrame, out_dir: Path | None) -> pd.DataFrame:
    """`frame` with every relative column filled (a copy). `out_dir`: where the rows' stored
    log-probabilities are (None: only the figures already in the table are at hand)."""
    if frame.empty:
        return frame.copy()
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    load = loader(out_dir)
    relative = [compare_row(r, records, load) for r in records]
    result = frame.copy()
    for column in (*QUALITY_COLUMNS, *SPEED_COLUMNS):
        result[column] = pd.Series([values[column] for values in relative], index=frame.index, dtype=object)
    return result
