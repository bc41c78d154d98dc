"""The comparison report: parquet rows in; one self-contained HTML page and a Markdown summary out.

Why from the parquet alone: the table is the record (harness/results.py); a report that needs the
artifacts, the logs or the machine could not be rebuilt in CI or on a laptop. The charts are
hand-made SVG (harness/svg.py says why): inline in the HTML (it opens offline, no scripts) and
written beside it as files for the Markdown. This module decides what each figure and table shows
(from the columns that exist, a labelled placeholder otherwise); what each shows, and how a
regression is flagged: docs/report.md.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness import engines as engine_registry
from harness import formats as format_registry
from harness import memory
from harness.errors import HarnessError
from harness.gpus import GPUS, Gpu
from harness.results import COLUMNS
from harness.svg import COLORS, Chart, limits, spans_decade

GIB = 2**30
MIB = 2**20
#: calibration domains that count as "generic" in the calibration-domain delta
GENERIC_DOMAINS = ("prose", "generic", "chat", "c4", "wikitext")
#: the in-domain eval of a calibration domain (its column); others fall back to perplexity recovery, then KLD
DOMAIN_METRICS = {"code": "pass_at_1", "math": "math_exact_match"}
#: metrics trended across runs, and the sign of a change that is worse (tok/s down, perplexity up)
TREND_METRICS: tuple[tuple[str, str, int], ...] = (("output_tok_s", "output tok/s", -1), ("perplexity", "perplexity", +1))
LATENCY_PLACEHOLDER = (
    "no serving-load figures in these results: latency (TTFT and ITL, p50/p99) against concurrency needs the "
    "serving benchmark's sweep (the `serving` column), which these rows do not have or left empty"
)


@dataclass(frozen=True)
class Regression:
    """One cell whose metric got worse than `threshold_pct` between two consecutive runs."""

    section: str
    config_name: str
    cell_name: str
    metric: str
    previous_run: str
    current_run: str
    previous: float
    current: float
    change_pct: float  # (current - previous) / previous x 100
    speed_class: str = "serving"  # of the cell's engine: a reference engine's tok/s is flagged against itself only

    def line(self) -> str:
        engine = " (reference engine)" if self.metric == "output_tok_s" and self.speed_class != "serving" else ""
        return (
            f"{self.section}: {self.cell_name}: {self.metric}{engine} {self.previous:.4g} → {self.current:.4g} "
            f"({self.change_pct:+.1f} %) from run {self.previous_run} to {self.current_run}"
        )


@dataclass(frozen=True)
class Figure:
    """A plot (one or more SVG panels) or, when the rows cannot support it, a labelled placeholder."""

    key: str
    title: str
    caption: str
    svgs: tuple[str, ...] = ()
    placeholder: str | None = None


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    plots: tuple[Path, ...]
    regressions: tuple[Regression, ...] = ()


# ---------------------------------------------------------------------------------------------
# Reading


def _paths(results: Path | str | Sequence[Path | str]) -> list[Path]:
    items = [results] if isinstance(results, (str, Path)) else list(results)
    if not items:
        raise HarnessError("no results given: pass one or more results.parquet files (or their directories)")
    paths = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            path = path / "results.parquet"
        if not path.is_file():
            raise HarnessError(f"{item}: no such results file (give a results.parquet or the directory holding it)")
        paths.append(path)
    return paths


def load_results(results: Path | str | Sequence[Path | str]) -> pd.DataFrame:
    """Every row of the given tables, with the schema's columns (older tables lack some: empty),
    `engine_speed_class` filled from the engine registry where an older table has none."""
    frames = []
    for path in _paths(results):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise HarnessError(f"{path}: not a readable parquet table ({exc})") from exc
        frame = frame.astype(object).where(frame.notna(), None)
        for column in COLUMNS:
            if column not in frame.columns:
                frame[column] = None
        frame["source_file"] = str(path)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise HarnessError(", ".join(str(p) for p in _paths(results)) + ": no rows")
    missing = frame["engine_speed_class"].isna()
    frame.loc[missing, "engine_speed_class"] = frame.loc[missing, "engine"].map(
        lambda e: engine_registry.REGISTRY[e].speed_class if e in engine_registry.REGISTRY else None
    )
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    return frame


# ---------------------------------------------------------------------------------------------
# Small helpers


def is_missing(value: Any) -> bool:
    """None, NaN, NaT or pandas NA: a figure the row does not have."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _f(value: Any) -> float | None:
    return None if is_missing(value) else float(value)


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    number = _f(value)
    return "" if number is None else format(number / scale, spec)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "model"


def _settings(row: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(row.get("engine_settings") or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _gpu_of(row: dict[str, Any]) -> Gpu | None:
    if row.get("hw_device") != "cuda":
        return None
    return next((g for g in GPUS.values() if g.product == row.get("hw_name")), None)


def _shape_of(model_source: str) -> memory.ModelShape | None:
    """The model's shape when harness.memory knows it (a known name, a hub id of one, a local dir)."""
    from harness.picker import known_shape

    name = known_shape(model_source)
    if name is not None:
        return memory.load_shape(name)
    path = Path(model_source).expanduser()
    if (path / "config.json").is_file():
        try:
            return memory.load_shape(path)
        except HarnessError:
            return None
    return None


@dataclass(frozen=True)
class _Planned:
    weights: int
    kv: int
    activations: int
    capacity: int | None  # None off a known GPU (and in older rows)
    stated_total: int | None = None  # the row's planned_total_bytes, where it has one
    from_row: bool = False  # True: the row's own planned_* columns (the run's plan); False: computed here

    @property
    def total(self) -> int:
        return self.stated_total if self.stated_total is not None else self.weights + self.kv + self.activations


def _planned(row: dict[str, Any], shape: memory.ModelShape | None) -> _Planned | None:
    """The row's own plan (planned_* columns, written by the run) where it has one; otherwise
    harness.memory's plan for the row's workload: batch = prompts, context = input + output."""
    stated = {part: _f(row.get(f"planned_{part}_bytes")) for part in ("weights", "kv_cache", "activation", "total", "capacity")}
    if stated["weights"] is not None or stated["total"] is not None:
        return _Planned(int(stated["weights"] or 0), int(stated["kv_cache"] or 0), int(stated["activation"] or 0),
                        None if stated["capacity"] is None else int(stated["capacity"]),
                        None if stated["total"] is None else int(stated["total"]), from_row=True)
    return _computed_plan(row, shape)


def _computed_plan(row: dict[str, Any], shape: memory.ModelShape | None) -> _Planned | None:
    from harness.picker import format_params, row_entry

    if shape is None or row.get("format") not in format_registry.REGISTRY or is_missing(row.get("workload_prompts")):
        return None
    batch = int(row["workload_prompts"])
    context = int(row["workload_input_len"]) + int(row["workload_output_len"])
    settings = _settings(row)
    gpu = _gpu_of(row)
    tokens = settings.get("max_num_batched_tokens") or (memory.default_batched_tokens(gpu) if gpu else 8192)
    kv = str(row.get("kv_cache_dtype") or "auto")
    try:
        params = format_params(row_entry(row))
        if gpu is not None:
            p = memory.plan(shape, params, kv, batch, context, gpu, utilization=float(settings.get("gpu_memory_utilization", 0.9)),
                            tensor_parallel=int(settings.get("tensor_parallel_size", 1)), max_num_batched_tokens=int(tokens))
            return _Planned(p.weights_bytes, p.kv_bytes, p.activation_bytes, p.capacity_bytes)
        return _Planned(memory.weights(shape, params).total, memory.kv_bytes(shape, kv, batch, context),
                        memory.activation_bytes(shape, batch, int(tokens)), None)
    except (HarnessError, KeyError, ValueError, TypeError):
        return None


def _engine_split(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """The engine's own split (vLLM's log): weights loaded and KV cache allocated, in bytes."""
    return _f(row.get("engine_weights_bytes")), _f(row.get("engine_kv_cache_bytes"))


# ---------------------------------------------------------------------------------------------
# Serving sweep points (the `serving` column: a list of structs, one per sweep point)


def _points(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's serving sweep points: concurrency points by level, then rate points by rate.
    pandas gives the list column as a numpy array of dicts, or None in rows (and tables) without it."""
    value = row.get("serving")
    if value is None or isinstance(value, (str, bytes, float, int)):
        return []
    try:
        items = [dict(p) for p in value if isinstance(p, dict)]
    except TypeError:
        return []
    return sorted(items, key=lambda p: (_is_rate(p), _f(p.get("concurrency")) or 0.0, _f(p.get("request_rate")) or 0.0))


def _is_rate(point: dict[str, Any]) -> bool:
    return point.get("mode") == "rate" or (_f(point.get("concurrency")) is None and _f(point.get("request_rate")) is not None)


def _point_x(point: dict[str, Any]) -> float | None:
    """The point's x: its concurrency, or (rate mode) its Poisson rate; None where not finite."""
    x = _f(point.get("request_rate") if _is_rate(point) else point.get("concurrency"))
    return x if x is not None and math.isfinite(x) and x > 0 else None


def _point_label(point: dict[str, Any]) -> str:
    """c8: concurrency 8; r2.5: Poisson 2.5 requests/s (r∞: all at once)."""
    if _is_rate(point):
        rate = _f(point.get("request_rate"))
        return "r∞" if rate is None or math.isinf(rate) else f"r{rate:g}"
    level = _f(point.get("concurrency"))
    return "c?" if level is None else f"c{level:g}"


def _ms(value: Any) -> str:
    number = _f(value)
    if number is None:
        return "–"
    return f"{number:.1f}" if number < 10 else f"{number:.0f}"


def _latency_text(points: list[dict[str, Any]], metric: str) -> str:
    """Compact p50/p99 per sweep point: "c1 12/30 · c8 40/95 ms"."""
    parts = [f"{_point_label(p)} {_ms(p.get(f'{metric}_p50_ms'))}/{_ms(p.get(f'{metric}_p99_ms'))}" for p in points
             if _f(p.get(f"{metric}_p50_ms")) is not None or _f(p.get(f"{metric}_p99_ms")) is not None]
    return " · ".join(parts) + " ms" if parts else ""


def _goodput_text(points: list[dict[str, Any]]) -> str:
    """The best goodput (req/s meeting every SLO) and where, with the SLO-attained share there, and
    the requests that failed over the whole sweep (each point's figures: the serving table)."""
    scored = [(good, p) for p in points if (good := _f(p.get("goodput_rps"))) is not None]
    failed = sum(int(_f(p.get("failed")) or 0) for p in points)
    text = ""
    if scored:
        good, best = max(scored, key=lambda item: item[0])
        share = _f(best.get("slo_attained_pct"))
        text = f"{good:.2f} @{_point_label(best)}" + (f" ({share:.0f} %)" if share is not None else "")
    if failed:
        text += ("; " if text else "") + f"{failed} failed"
    return text


def _slo_text(value: Any) -> str:
    try:
        slo = json.loads(value) if isinstance(value, str) else None
    except json.JSONDecodeError:
        return str(value)
    if not isinstance(slo, dict):
        return ""
    names = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "e2el_ms": "E2EL"}
    return ", ".join(f"{names.get(k, k)} ≤ {v:g} ms" for k, v in slo.items() if isinstance(v, (int, float)))


def _roofline_text(row: dict[str, Any]) -> str:
    fraction = _f(row.get("roofline_fraction"))
    if fraction is not None:
        bound = row.get("roofline_bound")
        return f"{100 * fraction:.1f}" + (f" ({bound})" if not is_missing(bound) else "")
    return "" if is_missing(row.get("roofline_note")) else str(row["roofline_note"])


def _peak(row: dict[str, Any]) -> tuple[float | None, str]:
    gpu = _f(row.get("engine_peak_gpu_bytes"))
    if gpu is not None:
        return gpu, "GPU"
    return _f(row.get("engine_peak_rss_bytes")), "RSS"


def _quality(row: dict[str, Any]) -> tuple[float, str] | None:
    """perplexity recovery %, or 100 - 100 x mean KLD where that is missing."""
    ppl = _f(row.get("perplexity_recovery_pct"))
    if ppl is not None:
        return ppl, "ppl"
    kld = _f(row.get("kld_mean"))
    return (100.0 - 100.0 * kld, "kld") if kld is not None else None


def _is_baseline(fmt: Any) -> bool:
    spec = format_registry.REGISTRY.get(str(fmt))
    return spec is not None and spec.is_baseline


# ---------------------------------------------------------------------------------------------
# Figures


def _pareto(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point beats on both speed (x) and quality (y)."""
    front, best = set(), -math.inf
    for i in sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.add(i)
            best = points[i][1]
    return front


def _quality_figure(rows: list[dict[str, Any]]) -> Figure:
    title = "Quality against output tok/s (serving engines)"
    caption = ("y: perplexity recovery % (circles) or, where a row has none, 100 - 100 x mean KLD (squares); x: offline output tok/s. "
               "Filled points joined by the line are the Pareto front (no other cell is both faster and better). "
               "Reference-engine cells (transformers) are left out: their tok/s is not a serving speed.")
    points = []
    for r in rows:
        if r.get("status") != "ok" or r.get("engine_speed_class") != "serving":
            continue
        speed, quality = _f(r.get("output_tok_s")), _quality(r)
        if speed is not None and quality is not None:
            points.append((speed, quality[0], quality[1], r["cell_name"]))
    if not points:
        return Figure("quality", title, caption, placeholder="no serving-engine cell has both output tok/s and a quality figure (perplexity recovery or KLD) in these results")
    xy = [(p[0], p[1]) for p in points]
    front = _pareto(xy)
    svg = Chart(title, "output tok/s (offline, serving engines)", "quality (%)", limits([p[1] for p in points]), xlim=limits([p[0] for p in points], zero=True))
    front_pts = sorted((xy[i] for i in front), key=lambda p: p[0])
    if len(front_pts) > 1:
        svg.line(front_pts, color="#c44e52", width=1.5, dash="5,3", tip="Pareto front")
    for i, (x, y, source, name) in enumerate(points):
        on = i in front
        svg.dot(x, y, "#c44e52" if on else "#4c72b0", r=5 if on else 4, filled=on, square=source == "kld",
                tip=f"{name}: {x:.1f} tok/s, quality {y:.2f} ({'perplexity recovery' if source == 'ppl' else '100 - 100 x KLD'}){' (Pareto front)' if on else ''}")
        svg.text(svg.sx(x) + 7, svg.sy(y) - 5, name, size=9, color="#444")
    svg.legend([("Pareto front", "#c44e52"), ("other cells", "#4c72b0")])
    return Figure("quality", title, caption, svgs=(svg.render(),))


def _memory_figure(rows: list[dict[str, Any]], shape: memory.ModelShape | None) -> Figure:
    title = "Memory per format: weights, KV cache, activations"
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if _f(r.get("artifact_bytes")) is not None or _planned(r, None) is not None or any(v is not None for v in _engine_split(r)):
            groups.setdefault((str(r.get("format_id") or r.get("format")), str(r.get("kv_cache_dtype") or "auto")), []).append(r)
    plan_words = ("the row's own plan (planned_* columns) where the run wrote one; otherwise weights = the artifact's size on "
                  "disk (artifact_bytes), KV cache and activations = harness.memory's plan for the row's workload (prompts x "
                  "(input + output) tokens; activations for vLLM's profile pass, indicative off a GPU).")
    measured_words = (" Right bar, where the engine reported it: the measured split (weights loaded, KV cache allocated; vLLM "
                      "allocates its whole KV space up front, so it exceeds the workload's need).")
    tail = (" Black ticks: the measured peak memory of the engine's processes (GPU memory on a GPU, RSS on a CPU, which counts "
            "the runtime and the CPU KV-cache space too); dashed red: the capacity the engine may use (GPU memory x "
            "gpu_memory_utilization, or the run's planned capacity).")
    two = any(any(v is not None for v in _engine_split(m)) for members in groups.values() for m in members)
    caption = ("Left bar, the plan: " + plan_words + measured_words if two else "The plan: " + plan_words) + tail
    if not groups:
        return Figure("memory", title, caption, placeholder="no cell in these results has an artifact size, a memory plan or the engine's memory split")
    if shape is None and not any(_planned(m, None) for members in groups.values() for m in members):
        caption += " The model's shape is not known to harness.memory: weights only."
    labels: list[str] = []
    stacks: list[tuple[float, float, float]] = []
    measured: list[tuple[float, float] | None] = []
    peaks: list[float | None] = []
    capacities: list[float | None] = []
    for (fmt, kv), members in sorted(groups.items()):
        plans = [(p, m) for m in members if (p := _planned(m, shape)) is not None]
        plans.sort(key=lambda item: not item[0].from_row)  # a run's own plan before one computed here
        plan, first = plans[0] if plans else (None, members[0])
        disk = _f(first.get("artifact_bytes")) or 0.0
        weights = plan.weights if plan is not None and plan.from_row and plan.weights else disk
        stacks.append((weights, plan.kv if plan else 0, plan.activations if plan else 0))
        split = next((_engine_split(m) for m in members if any(v is not None for v in _engine_split(m))), None)
        measured.append(None if split is None else (split[0] or 0.0, split[1] or 0.0))
        peak_values = [v for v in (_peak(m)[0] for m in members) if v is not None]
        peaks.append(max(peak_values) if peak_values else None)
        capacities.append(None if plan is None or plan.capacity is None else float(plan.capacity))
        labels.append(f"{fmt} kv-{kv}")
    tops = ([sum(s) / GIB for s in stacks] + [sum(m) / GIB for m in measured if m] + [p / GIB for p in peaks if p is not None]
            + [c / GIB for c in capacities if c])
    svg = Chart(title, "format and KV-cache dtype" + (" (left: plan, right: measured)" if two else ""), "GiB",
                (0.0, max(max(tops), 1e-3) * 1.08), categories=labels, bottom=120, top=74 if two else 58)
    plan_colors = (("weights", COLORS[0]), ("KV cache (plan)", COLORS[1]), ("activations (plan)", COLORS[2]))
    measured_colors = (("weights (measured)", COLORS[10]), ("KV cache (allocated)", COLORS[11]))  # darker shades of the plan's
    share, shift = (0.36, 0.2) if two else (0.6, 0.0)
    for i, (label, stack) in enumerate(zip(labels, stacks)):
        base = 0.0
        for (name, color), part in zip(plan_colors, stack):
            if part:
                svg.bar(i, base, base + part / GIB, color, f"{label}: {name} {part / GIB:.3f} GiB", share=share, offset=-shift)
                base += part / GIB
        if measured[i]:
            base = 0.0
            for (name, color), part in zip(measured_colors, measured[i]):
                if part:
                    svg.bar(i, base, base + part / GIB, color, f"{label}: {name} {part / GIB:.3f} GiB", share=share, offset=shift, outline="#000")
                    base += part / GIB
        if peaks[i] is not None:
            y = peaks[i] / GIB
            svg.line([(i - 0.42, y), (i + 0.42, y)], color="#000", width=2.5, tip=f"{label}: measured peak {y:.2f} GiB")
    known = {c for c in capacities if c}
    if len(known) == 1 and all(capacities):
        cap = known.pop() / GIB
        svg.line([(-0.5, cap), (len(labels) - 0.5, cap)], color="#c44e52", dash="6,4", tip=f"capacity {cap:.2f} GiB")
    else:
        for i, cap in enumerate(capacities):
            if cap:
                svg.line([(i - 0.45, cap / GIB), (i + 0.45, cap / GIB)], color="#c44e52", dash="6,4", tip=f"{labels[i]}: capacity {cap / GIB:.2f} GiB")
    svg.legend([*plan_colors, *(measured_colors if two else ()), ("measured peak", "#000")])
    return Figure("memory", title, caption, svgs=(svg.render(),))


def _calibration_figure(rows: list[dict[str, Any]]) -> Figure:
    title = "Calibration-domain delta: in-domain minus generic calibration"
    caption = ("Per format, engine and KV dtype built with both an in-domain calibration set and a generic one "
               f"(domain {', '.join(GENERIC_DOMAINS)}): the in-domain cell's metric minus the generic cell's. The metric is the "
               "in-domain eval where the domain has one (code: Pass@1, math: MATH), else perplexity recovery %, else mean KLD "
               "(lower is better).")
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "ok" and not is_missing(r.get("calibration_domain")):
            groups.setdefault((str(r["format_id"] or r["format"]), str(r["engine"]), str(r["kv_cache_dtype"])), []).append(r)
    deltas: dict[str, list[tuple[str, float, str]]] = {}
    for (fmt, engine, kv), members in sorted(groups.items()):
        generic = [m for m in members if m["calibration_domain"] in GENERIC_DOMAINS]
        inside = [m for m in members if m["calibration_domain"] not in GENERIC_DOMAINS]
        for own in inside:
            for other in generic:
                for metric in (DOMAIN_METRICS.get(own["calibration_domain"]), "perplexity_recovery_pct", "kld_mean"):
                    a, b = (_f(own.get(metric)), _f(other.get(metric))) if metric else (None, None)
                    if a is not None and b is not None:
                        label = f"{fmt}/{engine}/kv-{kv}"
                        deltas.setdefault(metric or "", []).append((label, a - b, f"{own['calibration_name']} - {other['calibration_name']}"))
                        break
    if not deltas:
        return Figure("calibration", title, caption, placeholder="no format in these results has a quality figure for both an in-domain and a generic calibration set")
    svgs = []
    for metric, items in deltas.items():
        values = [v for _, v, _ in items]
        better = "lower is better" if metric == "kld_mean" else "higher is better"
        svg = Chart(f"{metric}: in-domain - generic", "format / engine / KV dtype", f"delta {metric} ({better})",
                   limits(values, pad=0.15, zero=True), categories=[i[0] for i in items], bottom=120)
        svg.line([(-0.5, 0.0), (len(items) - 0.5, 0.0)], color="#555")
        for i, (label, value, pair) in enumerate(items):
            good = value < 0 if metric == "kld_mean" else value > 0
            svg.bar(i, 0.0, value, COLORS[2] if good else COLORS[3], f"{label} ({pair}): {value:+.4g}")
        svgs.append(svg.render())
    return Figure("calibration", title, caption, svgs=tuple(svgs))


def _runs(rows: list[dict[str, Any]]) -> list[str]:
    """Run ids in the order they started."""
    start: dict[str, Any] = {}
    for r in rows:
        run, at = str(r.get("run_id")), r.get("started_at")
        if run not in start or (not is_missing(at) and (is_missing(start[run]) or at < start[run])):
            start[run] = at
    return sorted(start, key=lambda run: (pd.Timestamp.max.tz_localize("UTC") if is_missing(start[run]) else start[run], run))


def _series(rows: list[dict[str, Any]], runs: list[str], metric: str) -> dict[tuple[str, str], list[float | None]]:
    """(config, cell) → the metric in each run (the run's latest row of that cell), for cells with two or more values."""
    index = {run: i for i, run in enumerate(runs)}
    out: dict[tuple[str, str], list[float | None]] = {}
    for r in sorted(rows, key=lambda r: (pd.Timestamp.min.tz_localize("UTC") if is_missing(r.get("started_at")) else r["started_at"])):
        value = _f(r.get(metric)) if r.get("status") == "ok" else None
        values = out.setdefault((str(r.get("config_name")), str(r["cell_name"])), [None] * len(runs))
        if value is not None:
            values[index[str(r.get("run_id"))]] = value
    return {k: v for k, v in out.items() if sum(x is not None for x in v) >= 2}


def _regressions(section: str, rows: list[dict[str, Any]], runs: list[str], threshold: float) -> list[Regression]:
    found = []
    classes = {str(r["cell_name"]): str(r.get("engine_speed_class") or "unknown") for r in rows}
    for metric, _, worse in TREND_METRICS:
        for (config, cell), values in _series(rows, runs, metric).items():
            seen = [(runs[i], v) for i, v in enumerate(values) if v is not None]
            for (run_a, a), (run_b, b) in zip(seen, seen[1:]):
                change = (b - a) / a * 100 if a else 0.0
                if change * worse > threshold:
                    found.append(Regression(section, config, cell, metric, run_a, run_b, a, b, change, classes[cell]))
    return found


def _trend_figure(rows: list[dict[str, Any]], runs: list[str], regressions: list[Regression], threshold: float) -> Figure:
    title = "Trend across runs"
    caption = (f"Each line is one cell (same config and cell name on this hardware) across runs in start order, as % of its value in "
               f"its first run. Red: a step worse than {threshold:g} % (output tok/s down, perplexity up) — a flagged regression. "
               "The tok/s panel shows serving engines only; a reference engine's slow-down is flagged in the list, not plotted.")
    if len(runs) < 2:
        return Figure("trend", title, caption, placeholder=f"one run in these results ({runs[0] if runs else 'none'}): no trend to plot")
    flagged = {(r.metric, r.config_name, r.cell_name, r.current_run) for r in regressions}
    svgs = []
    serving = {str(r["cell_name"]) for r in rows if r.get("engine_speed_class") == "serving"}
    for metric, label, _ in TREND_METRICS:
        series = _series(rows, runs, metric)
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
        svg = Chart(f"{label}: % of the cell's first run", "run (start order)", f"{label} (% of first run)", limits(values + [100.0], pad=0.1),
                   categories=[run[:32] for run in runs], bottom=130)
        labels: list[tuple[float, float, str, str]] = []  # (y px, x px, text, color) at each line's last point
        for n, ((config, cell), vals) in enumerate(sorted(relative.items())):
            color = COLORS[n % len(COLORS)]
            pts = [(i, v) for i, v in enumerate(vals) if v is not None]
            svg.line(pts, color=color, width=1.2, tip=f"{cell}")
            regressed = False
            for (i0, v0), (i1, v1) in zip(pts, pts[1:]):
                if (metric, config, cell, runs[i1]) in flagged:
                    svg.line([(i0, v0), (i1, v1)], color="#d62728", width=3.0, tip=f"regression: {cell} {metric} {v1 - v0:+.1f} points")
                    regressed = regressed or i1 == pts[-1][0]
            last_x, last_y = pts[-1]
            labels.append((svg.sy(last_y), svg.sx(last_x) + 6, cell + (" (regressed)" if regressed else ""), "#d62728" if regressed else color))
        floor = -math.inf
        for y, x, words, color in sorted(labels):  # stack end labels so they never overlap
            y = max(y + 3, floor + 11)
            floor = y
            svg.text(x, y, words, size=9, color=color)
        svgs.append(svg.render())
    if not svgs:
        return Figure("trend", title, caption, placeholder="no cell has output tok/s or perplexity in two or more runs")
    return Figure("trend", title, caption, svgs=tuple(svgs))


def _serving_lines(rows: list[dict[str, Any]], rate: bool) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """cell → its sweep points of one mode, as (x, point), x ascending (points with no finite x left out)."""
    lines = {}
    for r in rows:
        points = [(x, p) for p in _points(r) if _is_rate(p) == rate and (x := _point_x(p)) is not None]
        if points:
            lines[str(r["cell_name"])] = sorted(points, key=lambda item: item[0])
    return lines


def _sweep_chart(title: str, xname: str, ylabel: str, lines: dict[str, list[tuple[float, dict[str, Any]]]],
                 series: Sequence[tuple[str, str, str, bool]], unit: str) -> str | None:
    """One panel: for each cell a line per (column, stat label, dash, filled) in `series`, against x.
    Log x where the points span a decade or more (1 ... 64 concurrency), log y where values span 30x."""
    values = [v for pts in lines.values() for _, p in pts for column, *_ in series if (v := _f(p.get(column))) is not None and v > 0]
    if not values:
        return None
    xs = sorted({x for pts in lines.values() for x, _ in pts})
    xlog, ylog = spans_decade(xs), spans_decade(values, 30.0)
    ylim = (min(values), max(values)) if ylog else limits(values, pad=0.08, zero=True)
    names = sorted(lines)
    legend_width = min(300, 40 + 6 * max(len(n) for n in names))
    height = max(420, 58 + 24 + 13 * len(names) + 70)
    chart = Chart(title, xname, ylabel, ylim, xlim=(xs[0], xs[-1]), xlog=xlog, ylog=ylog,
                  xticks=xs if len(xs) <= 12 else None, legend_width=legend_width, height=height)
    for n, cell in enumerate(names):
        color = COLORS[n % len(COLORS)]
        for column, stat, dash, filled in series:
            xy = [(x, v, p) for x, p in lines[cell] if (v := _f(p.get(column))) is not None and v > 0]
            if len(xy) > 1:
                chart.line([(x, v) for x, v, _ in xy], color=color, width=1.6, dash=dash, tip=f"{cell}: {stat}")
            for x, v, p in xy:
                chart.dot(x, v, color, r=3.5, filled=filled, tip=f"{cell} {_point_label(p)}: {stat} {v:.4g} {unit}")
    chart.side_legend([(name, COLORS[n % len(COLORS)]) for n, name in enumerate(names)], heading="cell")
    return chart.render()


def _latency_figure(rows: list[dict[str, Any]]) -> Figure:
    title = "Latency against concurrency (serving under load)"
    caption = ("From the serving benchmark (the rows' `serving` sweep: an OpenAI-compatible server on 127.0.0.1, streaming "
               "requests). Time to first token and inter-token latency against the number of in-flight requests, a line per "
               "cell: p50 solid with filled dots, p99 dashed with open dots; then the serving output tok/s at each level. "
               "Poisson-arrival (rate-mode) points are plotted separately against the request rate (a rate of ∞, every request "
               "at once, is in the tables only). The x axis turns logarithmic where the levels span a decade or more, the y axis "
               "where the values span 30x or more (the axis label says so). Every point's figures: the serving table above the plots.")
    svgs: list[str] = []
    for rate, xname, against in ((False, "concurrency (in-flight requests)", "concurrency"), (True, "request rate (req/s, Poisson arrivals)", "request rate")):
        lines = _serving_lines(rows, rate)
        if not lines:
            continue
        for metric, label in (("ttft", "TTFT"), ("itl", "ITL")):
            svg = _sweep_chart(f"{label} p50 (solid) and p99 (dashed) against {against}", xname, f"{label} (ms)", lines,
                               [(f"{metric}_p50_ms", f"{label} p50", "", True), (f"{metric}_p99_ms", f"{label} p99", "6,4", False)], "ms")
            if svg:
                svgs.append(svg)
        svg = _sweep_chart(f"Serving output tok/s against {against}", xname, "output tok/s (serving)", lines,
                           [("output_tok_s", "output tok/s", "", True)], "tok/s")
        if svg:
            svgs.append(svg)
    if not svgs:
        return Figure("latency", title, caption, placeholder=LATENCY_PLACEHOLDER)
    return Figure("latency", title, caption, svgs=tuple(svgs))


def _roofline_figure(rows: list[dict[str, Any]]) -> Figure:
    title = "Roofline fraction per cell"
    caption = ("Offline output tok/s as % of the roofline's bound for the row's workload: min(batch x bandwidth / bytes read per "
               "decode step, FLOP/s / FLOPs per token), with the peaks named in hw_peak_source (a datasheet, or measured on this "
               "host). Blue: memory-bound, orange: compute-bound. Reference-engine cells (transformers) are drawn light: "
               "their tok/s is not a serving speed.")
    items = [(str(r["cell_name"]), 100.0 * f, str(r.get("roofline_bound") or ""), r.get("engine_speed_class") == "serving", str(r.get("hw_peak_source") or ""))
             for r in rows if r.get("status") == "ok" and (f := _f(r.get("roofline_fraction"))) is not None]
    if not items:
        notes = sorted({str(r["roofline_note"]) for r in rows if not is_missing(r.get("roofline_note"))})
        why = "; ".join(notes[:3]) if notes else "these rows have no roofline columns (a table from before the roofline model)"
        return Figure("roofline", title, caption, placeholder=f"no roofline fraction in these results: {why}")
    top = max(v for _, v, *_ in items)
    svg = Chart(title, "cell", "% of the roofline tok/s", (0.0, max(top * 1.1, 1.0)), categories=[i[0] for i in items], bottom=120)
    for i, (cell, value, bound, serving, source) in enumerate(items):
        color = COLORS[1] if bound == "compute" else COLORS[0]
        svg.bar(i, 0.0, value, color if serving else color + "66", f"{cell}: {value:.1f} % of the roofline ({bound or 'bound not given'}-bound; {source})")
    if top >= 80:
        svg.line([(-0.5, 100.0), (len(items) - 0.5, 100.0)], color="#c44e52", dash="6,4", tip="the roofline (100 %)")
    svg.legend([("memory-bound", COLORS[0]), ("compute-bound", COLORS[1])] + ([("reference engine", COLORS[0] + "66")] if not all(i[3] for i in items) else []))
    return Figure("roofline", title, caption, svgs=(svg.render(),))


# ---------------------------------------------------------------------------------------------
# The table


def _kernels(value: Any) -> str:
    return "" if is_missing(value) else ", ".join(k.split(" for ")[0] for k in str(value).split("; "))


def _recovery_text(row: dict[str, Any]) -> str:
    parts = []
    for column, label in (("perplexity_recovery_pct", "ppl"), ("pass_at_1_recovery_pct", "Pass@1"), ("math_exact_match_recovery_pct", "MATH"), ("gsm8k_strict_match_recovery_pct", "GSM8K")):
        value = _f(row.get(column))
        if value is not None:
            parts.append(f"{label} {value:.1f}")
    return ", ".join(parts)


def _speedup(row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """output tok/s over the same engine's baseline cell (same config; same KV dtype when there is one)."""
    mine = _f(row.get("output_tok_s"))
    if mine is None or row.get("status") != "ok":
        return ""
    same = [r for r in rows if _is_baseline(r.get("format")) and r.get("engine") == row.get("engine") and r.get("config_name") == row.get("config_name")
            and r.get("status") == "ok" and _f(r.get("output_tok_s"))]
    same.sort(key=lambda r: r.get("kv_cache_dtype") != row.get("kv_cache_dtype"))
    return f"{mine / float(same[0]['output_tok_s']):.2f}x" if same else ""


def _tokens(count: float) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e6 else (f"{count / 1e3:.1f}k" if count >= 1e3 else f"{count:.0f}")


def _planned_text(row: dict[str, Any], shape: memory.ModelShape | None) -> str:
    plan = _planned(row, shape)
    if plan is not None:
        return f"{plan.total / GIB:.2f}"
    return "" if is_missing(row.get("planned_note")) else f"none: {row['planned_note']}"


def _split_text(row: dict[str, Any]) -> str:
    weights, kv = _engine_split(row)
    parts = ([f"w {weights / GIB:.2f}"] if weights is not None else []) + ([f"KV {kv / GIB:.2f}"] if kv is not None else [])
    tokens = _f(row.get("engine_kv_cache_tokens"))
    return " + ".join(parts) + (f" ({_tokens(tokens)} tok)" if tokens is not None and parts else "")


TABLE_HEADERS = ("cell", "format", "calibration", "KV", "engine", "kernel", "size MiB", "planned GiB", "engine GiB (w + KV)", "peak GiB",
                 "out tok/s", "speedup", "roofline %", "TTFT p50/p99", "ITL p50/p99", "best goodput req/s (SLO met)", "Pass@1", "MATH",
                 "GSM8K", "ppl", "KLD", "recovery %", "status", "reason")


def _table_rows(rows: list[dict[str, Any]], shape: memory.ModelShape | None) -> list[list[str]]:
    table = []
    for r in rows:
        peak, kind = _peak(r)
        speed = _fmt(r.get("output_tok_s"), ".1f")
        points = _points(r)
        table.append([
            str(r["cell_name"]), str(r.get("format_id") or r.get("format") or ""), "" if is_missing(r.get("calibration_name")) else str(r["calibration_name"]),
            str(r.get("kv_cache_dtype") or ""), str(r.get("engine") or ""), _kernels(r.get("kernels")), _fmt(r.get("artifact_bytes"), ".1f", MIB),
            _planned_text(r, shape), _split_text(r), f"{peak / GIB:.2f} {kind}" if peak is not None else "",
            f"{speed} ({r.get('engine_speed_class') or 'unknown'})" if speed else "", _speedup(r, rows), _roofline_text(r),
            _latency_text(points, "ttft"), _latency_text(points, "itl"), _goodput_text(points),
            _fmt(r.get("pass_at_1"), ".3f"), _fmt(r.get("math_exact_match"), ".3f"), _fmt(r.get("gsm8k_strict_match"), ".3f"),
            _fmt(r.get("perplexity"), ".2f"), _fmt(r.get("kld_mean"), ".4f"), _recovery_text(r), str(r.get("status") or ""),
            "" if r.get("status") == "ok" or is_missing(r.get("reason")) else str(r["reason"]),
        ])
    return table


SERVING_HEADERS = ("cell", "point", "requests", "failed", "req/s", "out tok/s", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms",
                   "TPOT p50 ms", "E2EL p50 ms", "E2EL p99 ms", "goodput req/s", "SLO met %", "error")


def _serving_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One line per cell and sweep point: every figure of the point (the table above keeps two percentiles)."""
    table = []
    for r in rows:
        for p in _points(r):
            table.append([
                str(r["cell_name"]), _point_label(p), _fmt(p.get("requests"), ".0f"), _fmt(p.get("failed"), ".0f"),
                _fmt(p.get("request_throughput"), ".2f"), _fmt(p.get("output_tok_s"), ".1f"),
                *(_ms(p.get(c)) if _f(p.get(c)) is not None else "" for c in ("ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms",
                                                                             "tpot_p50_ms", "e2el_p50_ms", "e2el_p99_ms")),
                _fmt(p.get("goodput_rps"), ".2f"), _fmt(p.get("slo_attained_pct"), ".0f"), "" if is_missing(p.get("error")) else str(p["error"]),
            ])
    return table


def _serving_notes(rows: list[dict[str, Any]]) -> list[str]:
    """What the serving sweep ran under: the SLO goodput counts against, and the servers' start-up."""
    slos = sorted({text for r in rows if _points(r) and (text := _slo_text(r.get("serving_slo")))})
    startups = [s for r in rows if _points(r) and (s := _f(r.get("serving_startup_s"))) is not None]
    notes = ["c8: 8 requests in flight; r2: Poisson arrivals at 2 requests/s. Latencies in ms."]
    notes.append("SLO (goodput counts the requests meeting every one): " + ("; ".join(slos) if slos else "none set"))
    if startups:
        notes.append(f"server start-up to ready: {min(startups):.1f}–{max(startups):.1f} s")
    return notes


# ---------------------------------------------------------------------------------------------
# Sections and output


@dataclass(frozen=True)
class _Section:
    title: str
    slug: str
    runs: list[str]
    table: list[list[str]]
    figures: list[Figure]
    regressions: list[Regression]
    serving: list[list[str]]  # one line per cell and sweep point; empty without serving figures
    serving_notes: list[str]


def _sections(frame: pd.DataFrame, threshold: float) -> list[_Section]:
    """One section per model, config and machine: its cells share a workload and a machine, so
    their tok/s compare; tok/s from different machines or workloads are never one comparison."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    keyed: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        model = str(r.get("model_source") or r.get("model_identity") or "unknown model")
        key = (model, str(r.get("config_name") or "?"), str(r.get("hw_device") or "?"), str(r.get("hw_name") or "unknown hardware"))
        keyed.setdefault(key, []).append(r)
    sections = []
    for (model, config, device, hw), rows in sorted(keyed.items()):
        title = f"{model} · config {config} · {hw} ({device})"
        rows.sort(key=lambda r: (pd.Timestamp.min.tz_localize("UTC") if is_missing(r.get("started_at")) else r["started_at"]))
        current: dict[str, dict[str, Any]] = {}
        for r in rows:  # the latest row of each cell
            current[str(r["cell_name"])] = r
        latest = sorted(current.values(), key=lambda r: (str(r.get("format")), str(r.get("calibration_name") or ""), str(r.get("engine")), str(r.get("kv_cache_dtype"))))
        shape = _shape_of(model)
        runs = _runs(rows)
        regressions = _regressions(title, rows, runs, threshold)
        figures = [_quality_figure(latest), _memory_figure(latest, shape), _calibration_figure(latest),
                   _trend_figure(rows, runs, regressions, threshold), _latency_figure(latest), _roofline_figure(latest)]
        serving = _serving_rows(latest)
        sections.append(_Section(title, _slug(f"{model}-{config}-{hw}"), runs, _table_rows(latest, shape), figures, regressions,
                                 serving, _serving_notes(latest) if serving else []))
    return sections


#: table columns whose text wraps (the others keep to one line; the table scrolls sideways, its first column stays)
WRAPPED = {"kernel": "kernel", "planned GiB": "note", "roofline %": "note", "TTFT p50/p99": "sweep", "ITL p50/p99": "sweep", "reason": "reason"}
CSS = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#eee;position:sticky;top:0}td{white-space:nowrap}
td.failed{background:#fde0e0}td.unsupported{background:#fff3cd}td.reason{white-space:pre-wrap;min-width:260px;max-width:420px}
td.kernel{white-space:normal;overflow-wrap:anywhere;min-width:120px;max-width:200px}td.sweep{white-space:normal;min-width:170px;max-width:260px}
td.note{white-space:normal;min-width:110px;max-width:220px}summary{cursor:pointer;font-weight:bold;margin:12px 0}
tr>:first-child{position:sticky;left:0;background:#fff;z-index:1}tr>th:first-child{background:#eee;z-index:2}
figure{margin:18px 0}figcaption{font-size:12px;color:#555;max-width:760px}.placeholder{border:1px dashed #999;padding:12px;
color:#555;max-width:740px;background:#f7f7f7}.regression{color:#b00}svg{max-width:100%;height:auto;display:block}
div.wide{overflow-x:auto;max-width:100%}"""


def _html(sections: list[_Section], sources: list[str], threshold: float, regressions: list[Regression]) -> str:
    e = html.escape
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>harness report</title>', f"<style>{CSS}</style></head><body>",
           "<h1>Quantization report</h1>", "<p>From " + ", ".join(f"<code>{e(s)}</code>" for s in sources) + ". Tok/s are labelled by the engine's "
           "speed class: <em>serving</em> (vLLM, llama.cpp) or <em>reference</em> (transformers); the two are never compared.</p>",
           f'<h2 id="regressions">Regressions (threshold {threshold:g} %)</h2>']
    if regressions:
        out.append("<ul>" + "".join(f'<li class="regression">{e(r.line())}</li>' for r in regressions) + "</ul>")
    else:
        out.append("<p>none flagged" + (" (a single run per section: nothing to compare)" if all(len(s.runs) < 2 for s in sections) else "") + "</p>")
    for s in sections:
        out.append(f'<section id="{s.slug}"><h2>{e(s.title)}</h2><p>runs: {e(", ".join(s.runs))}; the table holds the latest row of each cell.</p>')
        out.append('<div class="wide"><table class="cells"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in TABLE_HEADERS) + "</tr></thead><tbody>")
        for row in s.table:
            status = row[TABLE_HEADERS.index("status")]
            cells = []
            for header, value in zip(TABLE_HEADERS, row):
                cls = status if header == "status" and status != "ok" else (WRAPPED.get(header, "") if value else "")
                cells.append(f'<td class="{cls}">{e(value)}</td>' if cls else f"<td>{e(value)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
        if s.serving:
            opened = " open" if len(s.serving) <= 40 else ""  # a long sweep stays folded; <details> needs no script
            out.append(f'<details id="{s.slug}-serving"{opened}><summary>Serving under load, per sweep point ({len(s.serving)} points)</summary>')
            out.append("<p>" + "<br>".join(e(n) for n in s.serving_notes) + "</p>")
            out.append('<div class="wide"><table class="serving"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in SERVING_HEADERS) + "</tr></thead><tbody>")
            for row in s.serving:  # the last column is the sweep point's first request error
                out.append("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row[:-1]) + f'<td class="reason">{e(row[-1])}</td></tr>')
            out.append("</tbody></table></div></details>")
        for fig in s.figures:
            out.append(f'<figure id="{s.slug}-{fig.key}" class="plot"><h3>{e(fig.title)}</h3>')
            out.extend(fig.svgs)
            if fig.placeholder:
                out.append(f'<p class="placeholder">{e(fig.placeholder)}</p>')
            out.append(f"<figcaption>{e(fig.caption)}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def _md_cell(value: str, limit: int = 300) -> str:
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return value.replace("|", "\\|").replace("\n", " ")


def _markdown(sections: list[_Section], sources: list[str], threshold: float, regressions: list[Regression], plot_files: dict[tuple[str, str], list[str]]) -> str:
    out = ["# Quantization report", "", "From " + ", ".join(f"`{s}`" for s in sources) + ".", "",
           "Tok/s are labelled by speed class (serving: vLLM, llama.cpp; reference: transformers), never compared across classes.", "",
           f"## Regressions (threshold {threshold:g} %)", ""]
    out.extend([f"- **regression**: {r.line()}" for r in regressions] or ["none flagged"])
    for s in sections:
        out += ["", f"## {s.title}", "", f"Runs: {', '.join(s.runs)}; the latest row of each cell.", ""]
        out.append("| " + " | ".join(TABLE_HEADERS) + " |")
        out.append("|" + "---|" * len(TABLE_HEADERS))
        out.extend("| " + " | ".join(_md_cell(v) for v in row) + " |" for row in s.table)
        if s.serving:
            out += ["", "### Serving under load, per sweep point", ""]
            out.extend(f"- {note}" for note in s.serving_notes)
            out += ["", "| " + " | ".join(SERVING_HEADERS) + " |", "|" + "---|" * len(SERVING_HEADERS)]
            out.extend("| " + " | ".join(_md_cell(v) for v in row) + " |" for row in s.serving)
        out += ["", "### Plots", ""]
        for fig in s.figures:
            files = plot_files.get((s.slug, fig.key), [])
            if files:
                out.extend(f"![{fig.title}]({f})" for f in files)
            if fig.placeholder:
                out.append(f"> **{fig.title}**: {fig.placeholder}")
            out.append("")
    return "\n".join(out) + "\n"


def build_report(results: Path | str | Sequence[Path | str], out_dir: Path, threshold: float = 5.0) -> ReportFiles:
    """Write OUT/report.html (self-contained), OUT/report.md and OUT/plots/*.svg from the tables."""
    if not threshold > 0:
        raise HarnessError(f"threshold must be a positive percentage (got {threshold})")
    sources = [str(p) for p in _paths(results)]
    frame = load_results(results)
    sections = _sections(frame, threshold)
    regressions = [r for s in sections for r in s.regressions]
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_files: dict[tuple[str, str], list[str]] = {}
    written: list[Path] = []
    for s in sections:
        for fig in s.figures:
            for i, svg in enumerate(fig.svgs):
                path = plots_dir / f"{s.slug}-{fig.key}{'-' + str(i + 1) if len(fig.svgs) > 1 else ''}.svg"
                path.write_text(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1), encoding="utf-8")
                written.append(path)
                plot_files.setdefault((s.slug, fig.key), []).append(f"plots/{path.name}")
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(_html(sections, sources, threshold, regressions), encoding="utf-8")
    md_path.write_text(_markdown(sections, sources, threshold, regressions, plot_files), encoding="utf-8")
    return ReportFiles(html_path, md_path, tuple(written), tuple(regressions))
