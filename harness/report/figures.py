"""The report's plots: each is one function of a section's rows, and one entry in FIGURES.

A new plot: write `def my_figure(view: SectionView) -> Figure` (SVG panels from harness.report.svg,
or a labelled placeholder when the rows cannot support it) and add it to FIGURES.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.plan.cell_plan import row_plan
from harness.report.rows import (
    GIB,
    as_float,
    engine_split,
    is_missing,
    is_rate,
    peak_memory,
    point_label,
    point_x,
    quality_interval,
    quality_score,
    sweep_points,
)
from harness.report.svg import COLORS, Chart, limits, spans_decade
from harness.results import trend
from harness.results.trend import TREND_METRICS, Regression
from harness.shapes import ModelShape


@dataclass(frozen=True)
class SectionView:
    """What a figure may draw from: one section (model, config, machine) of the tables."""

    rows: list[dict[str, Any]]  # every row, of every run, in start order
    latest: list[dict[str, Any]]  # the latest row of each cell
    runs: list[str]  # run ids in start order
    regressions: list[Regression]
    threshold: float  # % change flagged as a regression
    shape: ModelShape | None  # the model's shape, when known
    recommended: str | None = None  # the cell the section's decision ships (harness.results.decide)


#: the ring around the recommended cell in the quality plot
RECOMMENDED_COLOR = "#2e7d32"

LATENCY_PLACEHOLDER = (
    "no serving-load figures in these results: latency (TTFT and ITL, p50/p99) against concurrency needs the "
    "serving benchmark's sweep (the `serving` column), which these rows do not have or left empty"
)


#: calibration domains that count as "generic" in the calibration-domain delta
GENERIC_DOMAINS = ("prose", "generic", "chat", "c4", "wikitext")


#: the in-domain eval of a calibration domain (its column); others fall back to perplexity recovery, then KLD
DOMAIN_METRICS = {"code": "pass_at_1", "math": "math_exact_match"}


@dataclass(frozen=True)
class Figure:
    """A plot (one or more SVG panels) or, when the rows cannot support it, a labelled placeholder."""

    key: str
    title: str
    caption: str
    svgs: tuple[str, ...] = ()
    placeholder: str | None = None


def pareto(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point beats on both speed (x) and quality (y)."""
    front, best = set(), -math.inf
    for i in sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.add(i)
            best = points[i][1]
    return front


def quality_figure(view: SectionView) -> Figure:
    rows = view.latest
    title = "Quality against output tok/s (serving engines)"
    caption = (
        "y: perplexity recovery % (circles) or, where a row has none, 100 - 100 x mean KLD (squares); x: offline "
        "output tok/s. "
        "Filled points joined by the line are the Pareto front (no other cell is both faster and better). "
        "Reference-engine cells (transformers) are left out: their tok/s is not a serving speed. "
        "Vertical bars: 95 % intervals (paired bootstrap over documents; for KLD, over held-out windows). "
        "The green ring marks the recommended cell. Labels that would overlap are left to the points' tooltips."
    )
    points = []
    for r in rows:
        if r.get("status") != "ok" or r.get("engine_speed_class") != "serving":
            continue
        speed, quality = as_float(r.get("output_tok_s")), quality_score(r)
        if speed is not None and quality is not None:
            points.append((speed, quality[0], quality[1], r["cell_name"], quality_interval(r)))
    if not points:
        return Figure(
            "quality",
            title,
            caption,
            placeholder="no serving-engine cell has both output tok/s and a quality figure (perplexity recovery or "
            "KLD) in these results",
        )
    xy = [(p[0], p[1]) for p in points]
    front = pareto(xy)
    spans = [v for p in points for v in ((p[1],) if p[4] is None else (p[1], *p[4]))]
    svg = Chart(
        title,
        "output tok/s (offline, serving engines)",
        "quality (%)",
        limits(spans),
        xlim=limits([p[0] for p in points], zero=True),
    )
    front_pts = sorted((xy[i] for i in front), key=lambda p: p[0])
    if len(front_pts) > 1:
        svg.line(front_pts, color="#c44e52", width=1.5, dash="5,3", tip="Pareto front")
    for i, (x, y, source, name, interval) in enumerate(points):
        on = i in front
        if interval is not None:
            svg.line(
                [(x, interval[0]), (x, interval[1])],
                color="#888",
                width=1.2,
                tip=f"{name}: 95 % interval {interval[0]:.2f}–{interval[1]:.2f}",
            )
        chosen = name == view.recommended
        svg.dot(
            x,
            y,
            "#c44e52" if on else "#4c72b0",
            r=5 if on else 4,
            filled=on,
            square=source == "kld",
            tip=f"{name}: {x:.1f} tok/s, quality {y:.2f} "
            f"({'perplexity recovery' if source == 'ppl' else '100 - 100 x KLD'}){' (Pareto front)' if on else ''}"
            f"{' (recommended)' if chosen else ''}",
        )
        if chosen:
            svg.ring(x, y, RECOMMENDED_COLOR, tip=f"{name}: the format the report recommends")
    # the recommended cell's label first, then the front's, then the rest: where space runs out, the
    # least important labels are the ones left to their tooltips
    order = sorted(range(len(points)), key=lambda i: (points[i][3] != view.recommended, i not in front, i))
    svg.point_labels([(points[i][0], points[i][1], points[i][3]) for i in order])
    legend = [("Pareto front", "#c44e52"), ("other cells", "#4c72b0")]
    if view.recommended is not None and any(p[3] == view.recommended for p in points):
        legend.append(("recommended", RECOMMENDED_COLOR))
    svg.legend(legend)
    return Figure("quality", title, caption, svgs=(svg.render(),))


def memory_figure(view: SectionView) -> Figure:
    rows, shape = view.latest, view.shape
    title = "Memory per format: weights, KV cache, activations"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if (
            as_float(r.get("artifact_bytes")) is not None
            or row_plan(r, None) is not None
            or any(v is not None for v in engine_split(r))
        ):
            groups.setdefault(
                (str(r.get("format_id") or r.get("format")), str(r.get("kv_cache_dtype") or "auto")), []
            ).append(r)
    plan_words = (
        "the row's own plan (planned_* columns) where the run wrote one; otherwise weights = the artifact's size on "
        "disk (artifact_bytes), KV cache and activations = harness.memory's plan for the row's workload (prompts x "
        "(input + output) tokens; activations for vLLM's profile pass, indicative off a GPU)."
    )
    measured_words = (
        " Right bar, where the engine reported it: the measured split (weights loaded, KV cache allocated; vLLM "
        "allocates its whole KV space up front, so it exceeds the workload's need)."
    )
    tail = (
        " Black ticks: the measured peak memory of the engine's processes (GPU memory on a GPU, RSS on a CPU, which "
        "counts "
        "the runtime and the CPU KV-cache space too); dashed red: the capacity the engine may use (GPU memory x "
        "gpu_memory_utilization, or the run's planned capacity)."
    )
    two = any(any(v is not None for v in engine_split(m)) for members in groups.values() for m in members)
    caption = ("Left bar, the plan: " + plan_words + measured_words if two else "The plan: " + plan_words) + tail
    if not groups:
        return Figure(
            "memory",
            title,
            caption,
            placeholder="no cell in these results has an artifact size, a memory plan or the engine's memory split",
        )
    if shape is None and not any(row_plan(m, None) for members in groups.values() for m in members):
        caption += " The model's shape is not known to harness.memory: weights only."
    labels: list[str] = []
    stacks: list[tuple[float, float, float]] = []
    measured: list[tuple[float, float] | None] = []
    peaks: list[float | None] = []
    capacities: list[float | None] = []
    for (fmt, kv), members in sorted(groups.items()):
        plans = [(p, m) for m in members if (p := row_plan(m, shape)) is not None]
        plans.sort(key=lambda item: not item[0].from_row)  # a run's own plan before one computed here
        plan, first = plans[0] if plans else (None, members[0])
        disk = as_float(first.get("artifact_bytes")) or 0.0
        weights = plan.weights if plan is not None and plan.from_row and plan.weights else disk
        stacks.append((weights, plan.kv if plan else 0, plan.activations if plan else 0))
        split = next((engine_split(m) for m in members if any(v is not None for v in engine_split(m))), None)
        measured.append(None if split is None else (split[0] or 0.0, split[1] or 0.0))
        peak_values = [v for v in (peak_memory(m)[0] for m in members) if v is not None]
        peaks.append(max(peak_values) if peak_values else None)
        capacities.append(None if plan is None or plan.capacity is None else float(plan.capacity))
        labels.append(f"{fmt} kv-{kv}")
    tops = (
        [sum(s) / GIB for s in stacks]
        + [sum(m) / GIB for m in measured if m]
        + [p / GIB for p in peaks if p is not None]
        + [c / GIB for c in capacities if c]
    )
    svg = Chart(
        title,
        "format and KV-cache dtype" + (" (left: plan, right: measured)" if two else ""),
        "GiB",
        (0.0, max(max(tops), 1e-3) * 1.08),
        categories=labels,
        bottom=120,
        top=74 if two else 58,
    )
    plan_colors = (("weights", COLORS[0]), ("KV cache (plan)", COLORS[1]), ("activations (plan)", COLORS[2]))
    measured_colors = (
        ("weights (measured)", COLORS[10]),
        ("KV cache (allocated)", COLORS[11]),
    )  # darker shades of the plan's
    share, shift = (0.36, 0.2) if two else (0.6, 0.0)
    for i, (label, stack) in enumerate(zip(labels, stacks)):
        base = 0.0
        for (name, color), part in zip(plan_colors, stack):
            if part:
                svg.bar(
                    i,
                    base,
                    base + part / GIB,
                    color,
                    f"{label}: {name} {part / GIB:.3f} GiB",
                    share=share,
                    offset=-shift,
                )
                base += part / GIB
        parts = measured[i]
        if parts:
            base = 0.0
            for (name, color), part in zip(measured_colors, parts):
                if part:
                    svg.bar(
                        i,
                        base,
                        base + part / GIB,
                        color,
                        f"{label}: {name} {part / GIB:.3f} GiB",
                        share=share,
                        offset=shift,
                        outline="#000",
                    )
                    base += part / GIB
        peak = peaks[i]
        if peak is not None:
            y = peak / GIB
            svg.line([(i - 0.42, y), (i + 0.42, y)], color="#000", width=2.5, tip=f"{label}: measured peak {y:.2f} GiB")
    known = {c for c in capacities if c}
    if len(known) == 1 and all(capacities):
        only = known.pop() / GIB
        svg.line([(-0.5, only), (len(labels) - 0.5, only)], color="#c44e52", dash="6,4", tip=f"capacity {only:.2f} GiB")
    else:
        for i, cap in enumerate(capacities):
            if cap:
                svg.line(
                    [(i - 0.45, cap / GIB), (i + 0.45, cap / GIB)],
                    color="#c44e52",
                    dash="6,4",
                    tip=f"{labels[i]}: capacity {cap / GIB:.2f} GiB",
                )
    svg.legend([*plan_colors, *(measured_colors if two else ()), ("measured peak", "#000")])
    return Figure("memory", title, caption, svgs=(svg.render(),))


def calibration_figure(view: SectionView) -> Figure:
    rows = view.latest
    title = "Calibration-domain delta: in-domain minus generic calibration"
    caption = (
        "Per format, engine and KV dtype built with both an in-domain calibration set and a generic one "
        f"(domain {', '.join(GENERIC_DOMAINS)}): the in-domain cell's metric minus the generic cell's. The metric is "
        "the "
        "in-domain eval where the domain has one (code: Pass@1, math: MATH), else perplexity recovery %, else mean KLD "
        "(lower is better)."
    )
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "ok" and not is_missing(r.get("calibration_domain")):
            groups.setdefault(
                (str(r["format_id"] or r["format"]), str(r["engine"]), str(r["kv_cache_dtype"])), []
            ).append(r)
    deltas: dict[str, list[tuple[str, float, str]]] = {}
    for (fmt, engine, kv), members in sorted(groups.items()):
        generic = [m for m in members if m["calibration_domain"] in GENERIC_DOMAINS]
        inside = [m for m in members if m["calibration_domain"] not in GENERIC_DOMAINS]
        for own in inside:
            for other in generic:
                for metric in (DOMAIN_METRICS.get(own["calibration_domain"]), "perplexity_recovery_pct", "kld_mean"):
                    a, b = (as_float(own.get(metric)), as_float(other.get(metric))) if metric else (None, None)
                    if a is not None and b is not None:
                        label = f"{fmt}/{engine}/kv-{kv}"
                        deltas.setdefault(metric or "", []).append(
                            (label, a - b, f"{own['calibration_name']} - {other['calibration_name']}")
                        )
                        break
    if not deltas:
        return Figure(
            "calibration",
            title,
            caption,
            placeholder="no format in these results has a quality figure for both an in-domain and a generic "
            "calibration set",
        )
    svgs = []
    for metric, items in deltas.items():
        values = [v for _, v, _ in items]
        better = "lower is better" if metric == "kld_mean" else "higher is better"
        svg = Chart(
            f"{metric}: in-domain - generic",
            "format / engine / KV dtype",
            f"delta {metric} ({better})",
            limits(values, pad=0.15, zero=True),
            categories=[i[0] for i in items],
            bottom=120,
        )
        svg.line([(-0.5, 0.0), (len(items) - 0.5, 0.0)], color="#555")
        for i, (label, value, pair) in enumerate(items):
            good = value < 0 if metric == "kld_mean" else value > 0
            svg.bar(i, 0.0, value, COLORS[2] if good else COLORS[3], f"{label} ({pair}): {value:+.4g}")
        svgs.append(svg.render())
    return Figure("calibration", title, caption, svgs=tuple(svgs))


def trend_figure(view: SectionView) -> Figure:
    rows, runs, regressions, threshold = view.rows, view.runs, view.regressions, view.threshold
    title = "Trend across runs"
    caption = (
        "Each line is one cell (same config and cell name on this hardware) across runs in start order, as % of its "
        "value in "
        f"its first run. Red: a step worse than {threshold:g} % (output tok/s down, perplexity up) — a flagged "
        "regression. "
        "The tok/s panel shows serving engines only; a reference engine's slow-down is flagged in the list, not "
        "plotted."
    )
    if len(runs) < 2:
        return Figure(
            "trend",
            title,
            caption,
            placeholder=f"one run in these results ({runs[0] if runs else 'none'}): no trend to plot",
        )
    flagged = {(r.metric, r.config_name, r.cell_name, r.current_run) for r in regressions}
    svgs = []
    serving = {str(r["cell_name"]) for r in rows if r.get("engine_speed_class") == "serving"}
    for metric, label, _ in TREND_METRICS:
        series = trend.series(rows, runs, metric)
        if metric == "output_tok_s":  # reference engines' speed stays out of the speed plot (still flagged in the list)
            series = {key: values for key, values in series.items() if key[1] in serving}
        if not series:
            continue
        relative: dict[tuple[str, str], list[float | None]] = {}
        for key, vals in series.items():
            first = next(x for x in vals if x is not None)
            if first:  # a cell whose first value is 0 has no relative trend
                relative[key] = [None if v is None else 100.0 * v / first for v in vals]
        values = [v for vals in relative.values() for v in vals if v is not None]
        if not values:
            continue
        svg = Chart(
            f"{label}: % of the cell's first run",
            "run (start order)",
            f"{label} (% of first run)",
            limits(values + [100.0], pad=0.1),
            categories=[run[:32] for run in runs],
            bottom=130,
        )
        labels: list[tuple[float, float, str, str]] = []  # (y px, x px, text, color) at each line's last point
        for n, ((config, cell), vals) in enumerate(sorted(relative.items())):
            color = COLORS[n % len(COLORS)]
            pts = [(i, v) for i, v in enumerate(vals) if v is not None]
            svg.line(pts, color=color, width=1.2, tip=f"{cell}")
            regressed = False
            for (i0, v0), (i1, v1) in zip(pts, pts[1:]):
                if (metric, config, cell, runs[i1]) in flagged:
                    svg.line(
                        [(i0, v0), (i1, v1)],
                        color="#d62728",
                        width=3.0,
                        tip=f"regression: {cell} {metric} {v1 - v0:+.1f} points",
                    )
                    regressed = regressed or i1 == pts[-1][0]
            last_x, last_y = pts[-1]
            labels.append(
                (
                    svg.sy(last_y),
                    svg.sx(last_x) + 6,
                    cell + (" (regressed)" if regressed else ""),
                    "#d62728" if regressed else color,
                )
            )
        floor = -math.inf
        for y, x, words, color in sorted(labels):  # stack end labels so they never overlap
            y = max(y + 3, floor + 11)
            floor = y
            svg.text(x, y, words, size=9, color=color)
        svgs.append(svg.render())
    if not svgs:
        return Figure("trend", title, caption, placeholder="no cell has output tok/s or perplexity in two or more runs")
    return Figure("trend", title, caption, svgs=tuple(svgs))


def serving_lines(rows: list[dict[str, Any]], rate: bool) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """cell → its sweep points of one mode, as (x, point), x ascending (points with no finite x left out)."""
    lines = {}
    for r in rows:
        points = [(x, p) for p in sweep_points(r) if is_rate(p) == rate and (x := point_x(p)) is not None]
        if points:
            lines[str(r["cell_name"])] = sorted(points, key=lambda item: item[0])
    return lines


def sweep_chart(
    title: str,
    xname: str,
    ylabel: str,
    lines: dict[str, list[tuple[float, dict[str, Any]]]],
    series: Sequence[tuple[str, str, str, bool]],
    unit: str,
) -> str | None:
    """One panel: for each cell a line per (column, stat label, dash, filled) in `series`, against x.
    Log x where the points span a decade or more (1 ... 64 concurrency), log y where values span 30x."""
    values = [
        v
        for pts in lines.values()
        for _, p in pts
        for column, *_ in series
        if (v := as_float(p.get(column))) is not None and v > 0
    ]
    if not values:
        return None
    xs = sorted({x for pts in lines.values() for x, _ in pts})
    xlog, ylog = spans_decade(xs), spans_decade(values, 30.0)
    ylim = (min(values), max(values)) if ylog else limits(values, pad=0.08, zero=True)
    names = sorted(lines)
    legend_width = min(300, 40 + 6 * max(len(n) for n in names))
    height = max(420, 58 + 24 + 13 * len(names) + 70)
    chart = Chart(
        title,
        xname,
        ylabel,
        ylim,
        xlim=(xs[0], xs[-1]),
        xlog=xlog,
        ylog=ylog,
        xticks=xs if len(xs) <= 12 else None,
        legend_width=legend_width,
        height=height,
    )
    for n, cell in enumerate(names):
        color = COLORS[n % len(COLORS)]
        for column, stat, dash, filled in series:
            xy = [(x, v, p) for x, p in lines[cell] if (v := as_float(p.get(column))) is not None and v > 0]
            if len(xy) > 1:
                chart.line([(x, v) for x, v, _ in xy], color=color, width=1.6, dash=dash, tip=f"{cell}: {stat}")
            for x, v, p in xy:
                chart.dot(x, v, color, r=3.5, filled=filled, tip=f"{cell} {point_label(p)}: {stat} {v:.4g} {unit}")
    chart.side_legend([(name, COLORS[n % len(COLORS)]) for n, name in enumerate(names)], heading="cell")
    return chart.render()


def latency_figure(view: SectionView) -> Figure:
    rows = view.latest
    title = "Latency against concurrency (serving under load)"
    caption = (
        "From the serving benchmark (the rows' `serving` sweep: an OpenAI-compatible server on 127.0.0.1, streaming "
        "requests). Time to first token and inter-token latency against the number of in-flight requests, a line per "
        "cell: p50 solid with filled dots, p99 dashed with open dots; then the serving output tok/s at each level. "
        "Poisson-arrival (rate-mode) points are plotted separately against the request rate (a rate of ∞, every "
        "request "
        "at once, is in the tables only). The x axis turns logarithmic where the levels span a decade or more, the y "
        "axis "
        "where the values span 30x or more (the axis label says so). Every point's figures: the serving table above "
        "the plots."
    )
    svgs: list[str] = []
    for rate, xname, against in (
        (False, "concurrency (in-flight requests)", "concurrency"),
        (True, "request rate (req/s, Poisson arrivals)", "request rate"),
    ):
        lines = serving_lines(rows, rate)
        if not lines:
            continue
        for metric, label in (("ttft", "TTFT"), ("itl", "ITL")):
            svg = sweep_chart(
                f"{label} p50 (solid) and p99 (dashed) against {against}",
                xname,
                f"{label} (ms)",
                lines,
                [(f"{metric}_p50_ms", f"{label} p50", "", True), (f"{metric}_p99_ms", f"{label} p99", "6,4", False)],
                "ms",
            )
            if svg:
                svgs.append(svg)
        svg = sweep_chart(
            f"Serving output tok/s against {against}",
            xname,
            "output tok/s (serving)",
            lines,
            [("output_tok_s", "output tok/s", "", True)],
            "tok/s",
        )
        if svg:
            svgs.append(svg)
    if not svgs:
        return Figure("latency", title, caption, placeholder=LATENCY_PLACEHOLDER)
    return Figure("latency", title, caption, svgs=tuple(svgs))


def roofline_figure(view: SectionView) -> Figure:
    rows = view.latest
    title = "Roofline fraction per cell"
    caption = (
        "Offline output tok/s as % of the roofline's bound for the row's workload: min(batch x bandwidth / bytes read "
        "per "
        "decode step, FLOP/s / FLOPs per token), with the peaks named in hw_peak_source (a datasheet, or measured on "
        "this "
        "host). Blue: memory-bound, orange: compute-bound. Reference-engine cells (transformers) are drawn light: "
        "their tok/s is not a serving speed."
    )
    items = [
        (
            str(r["cell_name"]),
            100.0 * f,
            str(r.get("roofline_bound") or ""),
            r.get("engine_speed_class") == "serving",
            str(r.get("hw_peak_source") or ""),
        )
        for r in rows
        if r.get("status") == "ok" and (f := as_float(r.get("roofline_fraction"))) is not None
    ]
    if not items:
        notes = sorted({str(r["roofline_note"]) for r in rows if not is_missing(r.get("roofline_note"))})
        why = (
            "; ".join(notes[:3])
            if notes
            else "these rows have no roofline columns (a table from before the roofline model)"
        )
        return Figure("roofline", title, caption, placeholder=f"no roofline fraction in these results: {why}")
    top = max(v for _, v, *_ in items)
    svg = Chart(
        title,
        "cell",
        "% of the roofline tok/s",
        (0.0, max(top * 1.1, 1.0)),
        categories=[i[0] for i in items],
        bottom=120,
    )
    for i, (cell, value, bound, serving, source) in enumerate(items):
        color = COLORS[1] if bound == "compute" else COLORS[0]
        svg.bar(
            i,
            0.0,
            value,
            color if serving else color + "66",
            f"{cell}: {value:.1f} % of the roofline ({bound or 'bound not given'}-bound; {source})",
        )
    if top >= 80:
        svg.line([(-0.5, 100.0), (len(items) - 0.5, 100.0)], color="#c44e52", dash="6,4", tip="the roofline (100 %)")
    svg.legend(
        [("memory-bound", COLORS[0]), ("compute-bound", COLORS[1])]
        + ([("reference engine", COLORS[0] + "66")] if not all(i[3] for i in items) else [])
    )
    return Figure("roofline", title, caption, svgs=(svg.render(),))


def long_context_figure(view: SectionView) -> Figure:
    title = "Long-context retrieval against context length, per KV-cache dtype"
    caption = (
        "The passkey task (a pass key hidden at a random depth in filler text, exact match): accuracy at each prompt "
        "length in the model's tokens, a line per cell. Solid: KV cache auto; dashed: a quantized KV cache. Where a "
        "quantized KV cache costs accuracy, it shows far back in a long context first (the KV-cache trap)."
    )
    lines: list[tuple[dict[str, Any], list[tuple[float, float]]]] = []
    for r in view.latest:
        if r.get("status") != "ok" or is_missing(r.get("passkey_by_length")):
            continue
        by_length = json.loads(str(r["passkey_by_length"]))
        points = sorted((float(length), 100.0 * float(acc)) for length, acc in by_length.items())
        if points:
            lines.append((r, points))
    if not lines:
        return Figure(
            "long-context",
            title,
            caption,
            placeholder="no cell in these results ran the passkey task (evals.tasks: [passkey], docs/quality.md)",
        )
    lengths = sorted({x for _, points in lines for x, _ in points})
    chart = Chart(
        title,
        "prompt length (tokens)",
        "pass-key accuracy (%)",
        (0.0, 100.0),
        xlim=(lengths[0], lengths[-1]),
        xlog=len(lengths) > 1 and lengths[-1] / lengths[0] >= 4,
        xticks=lengths,
        legend_width=260,
    )
    names = []
    for n, (r, points) in enumerate(lines):
        color = COLORS[n % len(COLORS)]
        quantized_kv = str(r.get("kv_cache_dtype")) not in ("auto", "None")
        if len(points) > 1:
            chart.line(points, color=color, width=1.6, dash="6,4" if quantized_kv else "", tip=str(r["cell_name"]))
        for x, y in points:
            chart.dot(x, y, color, r=3.5, filled=not quantized_kv, tip=f"{r['cell_name']}: {y:.0f} % at {x:.0f} tokens")
        names.append((str(r["cell_name"]), color))
    chart.side_legend(names, heading="cell")
    return Figure("long-context", title, caption, svgs=(chart.render(),))


FIGURES: tuple[Callable[[SectionView], Figure], ...] = (
    quality_figure,
    memory_figure,
    calibration_figure,
    trend_figure,
    latency_figure,
    roofline_figure,
    long_context_figure,
)
