"""How the report writes one row's figures as text, and reads its sweep points."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from harness import formats as format_registry
from harness.plan.cell_plan import row_plan
from harness.results.compare import paired_stats
from harness.results.decide import DEFAULT_FLOOR_PCT, judge
from harness.results.metrics import BY_COLUMN, METRICS
from harness.results.read import is_missing
from harness.results.read import number as as_float
from harness.shapes import ModelShape

GIB = 2**30
MIB = 2**20


def fmt_value(value: Any, spec: str, scale: float = 1.0) -> str:
    number = as_float(value)
    return "" if number is None else format(number / scale, spec)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "model"


def engine_split(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """The engine's own split (vLLM's log): weights loaded and KV cache allocated, in bytes."""
    return as_float(row.get("engine_weights_bytes")), as_float(row.get("engine_kv_cache_bytes"))


def sweep_points(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's serving sweep points: concurrency points by level, then rate points by rate.
    pandas gives the list column as a numpy array of dicts, or None in rows (and tables) without it."""
    value = row.get("serving")
    if value is None or isinstance(value, (str, bytes, float, int)):
        return []
    try:
        items = [dict(p) for p in value if isinstance(p, dict)]
    except TypeError:
        return []
    return sorted(
        items, key=lambda p: (is_rate(p), as_float(p.get("concurrency")) or 0.0, as_float(p.get("request_rate")) or 0.0)
    )


def is_rate(point: dict[str, Any]) -> bool:
    return point.get("mode") == "rate" or (
        as_float(point.get("concurrency")) is None and as_float(point.get("request_rate")) is not None
    )


def point_x(point: dict[str, Any]) -> float | None:
    """The point's x: its concurrency, or (rate mode) its Poisson rate; None where not finite."""
    x = as_float(point.get("request_rate") if is_rate(point) else point.get("concurrency"))
    return x if x is not None and math.isfinite(x) and x > 0 else None


def point_label(point: dict[str, Any]) -> str:
    """c8: concurrency 8; r2.5: Poisson 2.5 requests/s (r∞: all at once)."""
    if is_rate(point):
        rate = as_float(point.get("request_rate"))
        return "r∞" if rate is None or math.isinf(rate) else f"r{rate:g}"
    level = as_float(point.get("concurrency"))
    return "c?" if level is None else f"c{level:g}"


def ms_text(value: Any) -> str:
    number = as_float(value)
    if number is None:
        return "–"
    return f"{number:.1f}" if number < 10 else f"{number:.0f}"


def latency_text(points: list[dict[str, Any]], metric: str) -> str:
    """Compact p50/p99 per sweep point: "c1 12/30 · c8 40/95 ms"."""
    parts = [
        f"{point_label(p)} {ms_text(p.get(f'{metric}_p50_ms'))}/{ms_text(p.get(f'{metric}_p99_ms'))}"
        for p in points
        if as_float(p.get(f"{metric}_p50_ms")) is not None or as_float(p.get(f"{metric}_p99_ms")) is not None
    ]
    return " · ".join(parts) + " ms" if parts else ""


def goodput_text(points: list[dict[str, Any]]) -> str:
    """The best goodput (req/s meeting every SLO) and where, with the SLO-attained share there, and
    the requests that failed over the whole sweep (each point's figures: the serving table)."""
    scored = [(good, p) for p in points if (good := as_float(p.get("goodput_rps"))) is not None]
    failed = sum(int(as_float(p.get("failed")) or 0) for p in points)
    text = ""
    if scored:
        good, best = max(scored, key=lambda item: item[0])
        share = as_float(best.get("slo_attained_pct"))
        text = f"{good:.2f} @{point_label(best)}" + (f" ({share:.0f} %)" if share is not None else "")
    if failed:
        text += ("; " if text else "") + f"{failed} failed"
    return text


def slo_text(value: Any) -> str:
    try:
        slo = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        return str(value)
    if not isinstance(slo, dict):
        return ""
    names = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "e2el_ms": "E2EL"}
    return ", ".join(f"{names.get(k, k)} ≤ {v:g} ms" for k, v in slo.items() if isinstance(v, (int, float)))


def roofline_text(row: dict[str, Any]) -> str:
    fraction = as_float(row.get("roofline_fraction"))
    if fraction is not None:
        bound = row.get("roofline_bound")
        return f"{100 * fraction:.1f}" + (f" ({bound})" if not is_missing(bound) else "")
    return "" if is_missing(row.get("roofline_note")) else str(row["roofline_note"])


def peak_memory(row: dict[str, Any]) -> tuple[float | None, str]:
    gpu = as_float(row.get("engine_peak_gpu_bytes"))
    if gpu is not None:
        return gpu, "GPU"
    return as_float(row.get("engine_peak_rss_bytes")), "RSS"


def quality_score(row: dict[str, Any]) -> tuple[float, str] | None:
    """perplexity recovery %, or 100 - 100 x mean KLD where that is missing."""
    ppl = as_float(row.get("perplexity_recovery_pct"))
    if ppl is not None:
        return ppl, "ppl"
    kld = as_float(row.get("kld_mean"))
    return (100.0 - 100.0 * kld, "kld") if kld is not None else None


def recovery_interval(row: dict[str, Any], metric: str) -> tuple[float, float] | None:
    """The 95 % paired bootstrap interval of `metric`'s recovery % (the compare pass's paired_stats)."""
    found = paired_stats(row).get(metric) or {}
    interval = found.get("recovery_ci95")
    return (float(interval[0]), float(interval[1])) if interval else None


def kld_interval(row: dict[str, Any]) -> tuple[float, float] | None:
    """The 95 % interval of the mean KLD (bootstrap over the held-out windows)."""
    interval = ((paired_stats(row).get("kld") or {}).get("ci95") or {}).get("kld_mean")
    return (float(interval[0]), float(interval[1])) if interval else None


def quality_interval(row: dict[str, Any]) -> tuple[float, float] | None:
    """quality_score's 95 % interval, on the same scale."""
    score = quality_score(row)
    if score is None:
        return None
    if score[1] == "ppl":
        return recovery_interval(row, "perplexity")
    kld = kld_interval(row)
    return None if kld is None else (100.0 - 100.0 * kld[1], 100.0 - 100.0 * kld[0])


def is_baseline(fmt: Any) -> bool:
    spec = format_registry.REGISTRY.get(str(fmt))
    return spec is not None and spec.is_baseline


def kernels_text(value: Any) -> str:
    return "" if is_missing(value) else ", ".join(k.split(" for ")[0] for k in str(value).split("; "))


def kernel_cell(row: dict[str, Any]) -> str:
    """The kernels the cell ran on, flagged where none is one its format is made for."""
    text = kernels_text(row.get("kernels"))
    if row.get("kernel_expected") is False:
        expected = " or ".join(str(row.get("kernels_expected") or "").split("; "))
        return f"{text} [UNEXPECTED: made for {expected}]"
    return text


def verdict_text(row: dict[str, Any]) -> str:
    """The cell's paired verdict as the report's answer decides it (harness.results.decide.judge:
    the worst over its metrics, at DEFAULT_FLOOR_PCT; `harness gate` judges with each config's own
    floors), or "" where the row has no paired statistics or is the reference itself."""
    if not paired_stats(row):
        return ""
    judged = judge(row, DEFAULT_FLOOR_PCT)
    if judged.label not in ("equivalent", "inconclusive", "worse"):
        return ""
    return f"{judged.detail.split(':', 1)[0]} at {DEFAULT_FLOOR_PCT:g} %"


def quality_cell_text(row: dict[str, Any]) -> str:
    """Recovery [95 % interval] and mean KLD [interval] of one cell, for the KV-cache table."""
    parts = []
    ppl = as_float(row.get("perplexity_recovery_pct"))
    if ppl is not None:
        interval = recovery_interval(row, "perplexity")
        parts.append(f"ppl {ppl:.1f} %" + (f" [{interval[0]:.1f}–{interval[1]:.1f}]" if interval else ""))
    kld = as_float(row.get("kld_mean"))
    if kld is not None:
        interval = kld_interval(row)
        parts.append(f"KLD {kld:.4f}" + (f" [{interval[0]:.4f}–{interval[1]:.4f}]" if interval else ""))
    return " · ".join(parts) if parts else ("" if row.get("status") == "ok" else str(row.get("status") or ""))


def recovery_text(row: dict[str, Any]) -> str:
    """Each recovery % the row has, perplexity first (it is measured on every cell with evals), with
    its 95 % paired interval where the compare pass has one."""
    ordered = sorted((m for m in METRICS if m.recovered), key=lambda m: m.column != "perplexity")
    parts = []
    for m in ordered:
        value = as_float(row.get(m.recovery_column))
        if value is None:
            continue
        interval = recovery_interval(row, m.column)
        parts.append(f"{m.label} {value:.1f}" + (f" [{interval[0]:.1f}–{interval[1]:.1f}]" if interval else ""))
    verdict_line = verdict_text(row)
    return ", ".join(parts) + (f"; {verdict_line}" if verdict_line and parts else "")


def speedup_text(row: dict[str, Any]) -> str:
    """output tok/s over the speed reference's (the compare pass's `speedup`)."""
    value = as_float(row.get("speedup"))
    return "" if value is None else f"{value:.2f}x"


def metric_text(row: dict[str, Any], column: str) -> str:
    return fmt_value(row.get(column), BY_COLUMN[column].number_format)


def tokens_text(count: float) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e6 else (f"{count / 1e3:.1f}k" if count >= 1e3 else f"{count:.0f}")


def planned_text(row: dict[str, Any], shape: ModelShape | None) -> str:
    plan = row_plan(row, shape)
    if plan is not None:
        return f"{plan.total / GIB:.2f}"
    return "" if is_missing(row.get("planned_note")) else f"none: {row['planned_note']}"


def split_text(row: dict[str, Any]) -> str:
    weights, kv = engine_split(row)
    parts = ([f"w {weights / GIB:.2f}"] if weights is not None else []) + (
        [f"KV {kv / GIB:.2f}"] if kv is not None else []
    )
    tokens = as_float(row.get("engine_kv_cache_tokens"))
    return " + ".join(parts) + (f" ({tokens_text(tokens)} tok)" if tokens is not None and parts else "")
