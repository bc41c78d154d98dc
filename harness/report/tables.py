"""The report's tables: one line per cell, and one per serving sweep point."""

from __future__ import annotations

from typing import Any

from harness.report.rows import (
    GIB,
    MIB,
    as_float,
    fmt_value,
    goodput_text,
    is_missing,
    kernel_cell,
    latency_text,
    metric_text,
    ms_text,
    peak_memory,
    planned_text,
    point_label,
    quality_cell_text,
    recovery_text,
    roofline_text,
    slo_text,
    speedup_text,
    split_text,
    sweep_points,
)
from harness.results.metrics import BY_COLUMN
from harness.shapes import ModelShape

#: the quality metrics the cell table shows, in this order
TABLE_METRICS = ("pass_at_1", "math_exact_match", "gsm8k_strict_match", "perplexity")


TABLE_HEADERS = (
    "cell",
    "status",  # status and reason beside the cell's name: never cut off on the right of a wide table
    "reason",
    "format",
    "calibration",
    "KV",
    "engine",
    "kernel",
    "size MiB",
    "planned GiB",
    "engine GiB (w + KV)",
    "peak GiB",
    "out tok/s",
    "speedup",
    "roofline %",
    "TTFT p50/p99",
    "ITL p50/p99",
    "best goodput req/s (SLO met)",
    *(BY_COLUMN[c].label for c in TABLE_METRICS),
    "KLD",
    "recovery %",
)


def table_rows(rows: list[dict[str, Any]], shape: ModelShape | None) -> list[list[str]]:
    table = []
    for r in rows:
        peak, kind = peak_memory(r)
        speed = fmt_value(r.get("output_tok_s"), ".1f")
        points = sweep_points(r)
        table.append(
            [
                str(r["cell_name"]),
                str(r.get("status") or ""),
                "" if r.get("status") == "ok" or is_missing(r.get("reason")) else str(r["reason"]),
                str(r.get("format_id") or r.get("format") or ""),
                "" if is_missing(r.get("calibration_name")) else str(r["calibration_name"]),
                str(r.get("kv_cache_dtype") or ""),
                str(r.get("engine") or ""),
                kernel_cell(r),
                fmt_value(r.get("artifact_bytes"), ".1f", MIB),
                planned_text(r, shape),
                split_text(r),
                f"{peak / GIB:.2f} {kind}" if peak is not None else "",
                f"{speed} ({r.get('engine_speed_class') or 'unknown'})" if speed else "",
                speedup_text(r),
                roofline_text(r),
                latency_text(points, "ttft"),
                latency_text(points, "itl"),
                goodput_text(points),
                *(metric_text(r, c) for c in TABLE_METRICS),
                fmt_value(r.get("kld_mean"), ".4f"),
                recovery_text(r),
            ]
        )
    return table


SERVING_HEADERS = (
    "cell",
    "point",
    "requests",
    "failed",
    "req/s",
    "out tok/s",
    "TTFT p50 ms",
    "TTFT p99 ms",
    "ITL p50 ms",
    "ITL p99 ms",
    "TPOT p50 ms",
    "E2EL p50 ms",
    "E2EL p99 ms",
    "goodput req/s",
    "SLO met %",
    "error",
)


def serving_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One line per cell and sweep point: every figure of the point (the table above keeps two percentiles)."""
    table = []
    for r in rows:
        for p in sweep_points(r):
            table.append(
                [
                    str(r["cell_name"]),
                    point_label(p),
                    fmt_value(p.get("requests"), ".0f"),
                    fmt_value(p.get("failed"), ".0f"),
                    fmt_value(p.get("request_throughput"), ".2f"),
                    fmt_value(p.get("output_tok_s"), ".1f"),
                    *(
                        ms_text(p.get(c)) if as_float(p.get(c)) is not None else ""
                        for c in (
                            "ttft_p50_ms",
                            "ttft_p99_ms",
                            "itl_p50_ms",
                            "itl_p99_ms",
                            "tpot_p50_ms",
                            "e2el_p50_ms",
                            "e2el_p99_ms",
                        )
                    ),
                    fmt_value(p.get("goodput_rps"), ".2f"),
                    fmt_value(p.get("slo_attained_pct"), ".0f"),
                    "" if is_missing(p.get("error")) else str(p["error"]),
                ]
            )
    return table


def serving_notes(rows: list[dict[str, Any]]) -> list[str]:
    """What the serving sweep ran under: the SLO goodput counts against, and the servers' start-up."""
    slos = sorted({text for r in rows if sweep_points(r) and (text := slo_text(r.get("serving_slo")))})
    startups = [s for r in rows if sweep_points(r) and (s := as_float(r.get("serving_startup_s"))) is not None]
    notes = ["c8: 8 requests in flight; r2: Poisson arrivals at 2 requests/s. Latencies in ms."]
    notes.append("SLO (goodput counts the requests meeting every one): " + ("; ".join(slos) if slos else "none set"))
    if startups:
        notes.append(f"server start-up to ready: {min(startups):.1f}–{max(startups):.1f} s")
    prompt_notes = sorted(
        {str(r["serving_prompts"]) for r in rows if sweep_points(r) and not is_missing(r.get("serving_prompts"))}
    )
    notes.extend(prompt_notes)
    for r in rows:
        if is_missing(r.get("capacity_note")):
            continue
        line = f"{r['cell_name']}: capacity {r['capacity_note']}"
        tok_s, cost = as_float(r.get("capacity_output_tok_s")), as_float(r.get("usd_per_million_output_tokens"))
        if tok_s is not None:
            line += f"; {tok_s:.1f} output tok/s there"
        if cost is not None:
            line += f"; ${cost:.3g} per million output tokens at the configured price"
        notes.append(line)
    for r in rows:
        if is_missing(r.get("output_check_note")):
            continue
        verdict = "passed" if r.get("output_check_ok") else "FAILED"
        notes.append(f"{r['cell_name']}: output check under load {verdict}: {r['output_check_note']}")
    energy = sorted({str(r["serving_energy_note"]) for r in rows if not is_missing(r.get("serving_energy_note"))})
    notes.extend(energy)
    return notes


def kv_trap_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The KV-cache trap side by side: one line per engine, format and calibration, one column
    per KV-cache dtype, every figure against the same bf16 + KV auto reference. The bf16 line
    under a quantized KV dtype is the KV-only effect; a format under `auto` the weights-only
    effect; a format under a quantized KV dtype both. Only engines run with more than one KV dtype;
    empty where there are none."""
    by_engine: dict[str, set[str]] = {}
    for r in rows:
        by_engine.setdefault(str(r.get("engine")), set()).add(str(r.get("kv_cache_dtype")))
    rows = [r for r in rows if len(by_engine[str(r.get("engine"))]) > 1]
    kv_dtypes = sorted({str(r.get("kv_cache_dtype")) for r in rows}, key=lambda d: (d != "auto", d))
    if len(kv_dtypes) < 2:
        return [], []
    lines: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in rows:
        calibration = "" if is_missing(r.get("calibration_name")) else str(r["calibration_name"])
        key = (str(r.get("engine")), str(r.get("format")), calibration)
        lines.setdefault(key, {})[str(r.get("kv_cache_dtype"))] = quality_cell_text(r)
    headers = ["engine", "format", "calibration", *(f"KV {d}" for d in kv_dtypes)]
    table = [[*key, *(cells.get(d, "") for d in kv_dtypes)] for key, cells in sorted(lines.items())]
    return headers, table
