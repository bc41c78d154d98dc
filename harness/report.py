"""The comparison report: parquet rows in; one self-contained HTML page and a Markdown summary out.

Why from the parquet alone: the table is the record (harness/results.py); a report that needs the
artifacts, the logs or the machine could not be rebuilt in CI or on a laptop. Why hand-made SVG:
matplotlib is not installed in the harness's environment, and a few axes, dots and bars need no
plotting library; the SVG is inline in the HTML (it opens offline, no scripts) and
written beside it as files for the Markdown. What each figure shows, and how a regression is
flagged: docs/report.md.
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
    "serving benchmark's columns, which these rows do not have"
)
COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")


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


def _na(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _f(value: Any) -> float | None:
    return None if _na(value) else float(value)


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
    capacity: int | None  # None off a known GPU

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.activations


def _planned(row: dict[str, Any], shape: memory.ModelShape | None) -> _Planned | None:
    """harness.memory's plan for the row's own workload: batch = prompts, context = input + output."""
    from harness.picker import format_params, row_entry

    if shape is None or row.get("format") not in format_registry.REGISTRY or _na(row.get("workload_prompts")):
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
# SVG


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        lo, hi = 0.0, 1.0
    if hi - lo < 1e-12:
        lo, hi = lo - (abs(lo) * 0.1 or 1.0), hi + (abs(hi) * 0.1 or 1.0)
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks if len(ticks) > 1 else [first, first + step]


class _Svg:
    """One chart: a plot area with numeric y (and numeric or categorical x), in viewBox units."""

    def __init__(self, title: str, xlabel: str, ylabel: str, ylim: tuple[float, float], xlim: tuple[float, float] | None = None,
                 categories: Sequence[str] = (), width: int = 760, height: int = 420, bottom: int = 70) -> None:
        self.title, self.width, self.height = title, width, height
        self.left, self.right, self.top, self.bottom = 78, 24, 58, bottom
        self.yticks = _ticks(*ylim)
        self.categories = list(categories)
        self.xticks = _ticks(*xlim) if xlim is not None else []
        self.parts: list[str] = []
        self._axes(xlabel, ylabel)

    def sx(self, x: float) -> float:
        span = self.width - self.left - self.right
        if self.categories:
            return self.left + span * (x + 0.5) / len(self.categories)
        lo, hi = self.xticks[0], self.xticks[-1]
        return self.left + span * (x - lo) / (hi - lo)

    def sy(self, y: float) -> float:
        lo, hi = self.yticks[0], self.yticks[-1]
        return self.height - self.bottom - (self.height - self.top - self.bottom) * (y - lo) / (hi - lo)

    def text(self, x: float, y: float, words: str, size: int = 11, anchor: str = "start", color: str = "#222", rotate: float = 0.0, bold: bool = False) -> None:
        turn = f' transform="rotate({rotate:g} {x:.1f} {y:.1f})"' if rotate else ""
        weight = ' font-weight="bold"' if bold else ""
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{color}"{weight}{turn}>{html.escape(words)}</text>')

    def line(self, points: Sequence[tuple[float, float]], color: str = "#222", width: float = 1.5, dash: str = "", tip: str = "") -> None:
        coords = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in points)
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        title = f"<title>{html.escape(tip)}</title>" if tip else ""
        self.parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="{width}"{dashed}>{title}</polyline>')

    def dot(self, x: float, y: float, color: str, r: float = 4.0, filled: bool = True, tip: str = "", square: bool = False) -> None:
        fill = color if filled else "#fff"
        title = f"<title>{html.escape(tip)}</title>" if tip else ""
        cx, cy = self.sx(x), self.sy(y)
        if square:
            self.parts.append(f'<rect x="{cx - r:.1f}" y="{cy - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" fill="{fill}" stroke="{color}" stroke-width="1.5">{title}</rect>')
        else:
            self.parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{fill}" stroke="{color}" stroke-width="1.5">{title}</circle>')

    def bar(self, index: int, y0: float, y1: float, color: str, tip: str, share: float = 0.6) -> None:
        slot = (self.width - self.left - self.right) / len(self.categories)
        x = self.sx(index) - slot * share / 2
        top, bottom = min(self.sy(y0), self.sy(y1)), max(self.sy(y0), self.sy(y1))
        self.parts.append(f'<rect x="{x:.1f}" y="{top:.1f}" width="{slot * share:.1f}" height="{max(bottom - top, 0.5):.1f}" fill="{color}"><title>{html.escape(tip)}</title></rect>')

    def legend(self, items: Sequence[tuple[str, str]]) -> None:
        x = self.left + 8
        for label, color in items:
            self.parts.append(f'<rect x="{x:.1f}" y="{self.top - 18:.1f}" width="10" height="10" fill="{color}"/>')  # above the plot area
            self.text(x + 14, self.top - 9, label, size=10)
            x += 24 + 6.2 * len(label)

    def _axes(self, xlabel: str, ylabel: str) -> None:
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        self.parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fafafa" stroke="#999"/>')
        for t in self.yticks:
            y = self.sy(t)
            self.parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e4e4e4"/>')
            self.text(x0 - 6, y + 4, f"{t:g}", size=10, anchor="end")
        for t in self.xticks:
            self.text(self.sx(t), y0 + 16, f"{t:g}", size=10, anchor="middle")
        for i, name in enumerate(self.categories):
            self.text(self.sx(i), y0 + 14, name, size=10, anchor="end", rotate=-25)
        self.text(self.width / 2, 22, self.title, size=14, anchor="middle", bold=True)
        self.text((x0 + x1) / 2, self.height - 8, xlabel, size=11, anchor="middle")
        self.text(16, (y0 + y1) / 2, ylabel, size=11, anchor="middle", rotate=-90)

    def render(self) -> str:
        """Inline SVG (HTML5 needs no namespace on it; build_report adds one to the .svg files)."""
        head = f'<svg viewBox="0 0 {self.width} {self.height}" width="{self.width}" height="{self.height}" role="img" aria-label="{html.escape(self.title)}" font-family="sans-serif">'
        return head + "".join(self.parts) + "</svg>"


def _limits(values: Sequence[float], pad: float = 0.05, zero: bool = False) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = (hi - lo) or abs(hi) or 1.0
    return (lo if zero and lo == 0 else lo - span * pad, hi + span * pad)


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
    svg = _Svg(title, "output tok/s (offline, serving engines)", "quality (%)", _limits([p[1] for p in points]), xlim=_limits([p[0] for p in points], zero=True))
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
        if _f(r.get("artifact_bytes")) is not None:
            groups.setdefault((str(r.get("format_id") or r.get("format")), str(r.get("kv_cache_dtype") or "auto")), []).append(r)
    caption = ("Weights: the artifact's size on disk (artifact_bytes). KV cache and activations: harness.memory's plan for the "
               "row's workload (prompts x (input + output) tokens; activations for vLLM's profile pass, indicative off a GPU). "
               "Black ticks: the measured peak memory of the engine's processes (GPU memory on a GPU, RSS on a CPU, which counts "
               "the runtime and the CPU KV-cache space too); dashed line: the GPU's capacity x gpu_memory_utilization.")
    if not groups:
        return Figure("memory", title, caption, placeholder="no cell in these results has an artifact size")
    if shape is None:
        caption += " The model's shape is not known to harness.memory: weights only."
    labels, stacks, peaks, capacity = [], [], [], None
    for (fmt, kv), members in sorted(groups.items()):
        first = members[0]
        plan = _planned(first, shape)
        peak_values = [v for v in (_peak(m)[0] for m in members) if v is not None]
        labels.append(f"{fmt} kv-{kv}")
        stacks.append((float(first["artifact_bytes"]), plan.kv if plan else 0, plan.activations if plan else 0))
        peaks.append(max(peak_values) if peak_values else None)
        if plan is not None and plan.capacity is not None:
            capacity = plan.capacity
    tops = [sum(s) / GIB for s in stacks] + [p / GIB for p in peaks if p is not None] + ([capacity / GIB] if capacity else [])
    svg = _Svg(title, "format and KV-cache dtype", "GiB", (0.0, max(tops) * 1.08), categories=labels, bottom=120)
    colors = (("weights (on disk)", COLORS[0]), ("KV cache (planned)", COLORS[1]), ("activations (planned)", COLORS[2]))
    for i, (label, stack) in enumerate(zip(labels, stacks)):
        base = 0.0
        for (name, color), part in zip(colors, stack):
            if part:
                svg.bar(i, base, base + part / GIB, color, f"{label}: {name} {part / GIB:.3f} GiB")
                base += part / GIB
        if peaks[i] is not None:
            y = peaks[i] / GIB
            svg.line([(i - 0.35, y), (i + 0.35, y)], color="#000", width=2.5, tip=f"{label}: measured peak {y:.2f} GiB")
    if capacity:
        svg.line([(-0.5, capacity / GIB), (len(labels) - 0.5, capacity / GIB)], color="#c44e52", dash="6,4", tip=f"capacity {capacity / GIB:.2f} GiB")
    svg.legend([*colors, ("measured peak", "#000")])
    return Figure("memory", title, caption, svgs=(svg.render(),))


def _calibration_figure(rows: list[dict[str, Any]]) -> Figure:
    title = "Calibration-domain delta: in-domain minus generic calibration"
    caption = ("Per format, engine and KV dtype built with both an in-domain calibration set and a generic one "
               f"(domain {', '.join(GENERIC_DOMAINS)}): the in-domain cell's metric minus the generic cell's. The metric is the "
               "in-domain eval where the domain has one (code: Pass@1, math: MATH), else perplexity recovery %, else mean KLD "
               "(lower is better).")
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "ok" and not _na(r.get("calibration_domain")):
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
        svg = _Svg(f"{metric}: in-domain - generic", "format / engine / KV dtype", f"delta {metric} ({better})",
                   _limits(values, pad=0.15, zero=True), categories=[i[0] for i in items], bottom=120)
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
        if run not in start or (not _na(at) and (_na(start[run]) or at < start[run])):
            start[run] = at
    return sorted(start, key=lambda run: (pd.Timestamp.max.tz_localize("UTC") if _na(start[run]) else start[run], run))


def _series(rows: list[dict[str, Any]], runs: list[str], metric: str) -> dict[tuple[str, str], list[float | None]]:
    """(config, cell) → the metric in each run (the run's latest row of that cell), for cells with two or more values."""
    index = {run: i for i, run in enumerate(runs)}
    out: dict[tuple[str, str], list[float | None]] = {}
    for r in sorted(rows, key=lambda r: (pd.Timestamp.min.tz_localize("UTC") if _na(r.get("started_at")) else r["started_at"])):
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
        svg = _Svg(f"{label}: % of the cell's first run", "run (start order)", f"{label} (% of first run)", _limits(values + [100.0], pad=0.1),
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


def _latency_figure() -> Figure:
    return Figure("latency", "Latency against concurrency", "TTFT and ITL percentiles per concurrency level, from the serving benchmark.", placeholder=LATENCY_PLACEHOLDER)


# ---------------------------------------------------------------------------------------------
# The table


def _kernels(value: Any) -> str:
    return "" if _na(value) else ", ".join(k.split(" for ")[0] for k in str(value).split("; "))


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


TABLE_HEADERS = ("cell", "format", "calibration", "KV", "engine", "kernel", "size MiB", "planned GiB", "peak GiB", "out tok/s",
                 "speedup", "Pass@1", "MATH", "GSM8K", "ppl", "KLD", "recovery %", "status", "reason")


def _table_rows(rows: list[dict[str, Any]], shape: memory.ModelShape | None) -> list[list[str]]:
    table = []
    for r in rows:
        plan = _planned(r, shape)
        peak, kind = _peak(r)
        speed = _fmt(r.get("output_tok_s"), ".1f")
        table.append([
            str(r["cell_name"]), str(r.get("format_id") or r.get("format") or ""), "" if _na(r.get("calibration_name")) else str(r["calibration_name"]),
            str(r.get("kv_cache_dtype") or ""), str(r.get("engine") or ""), _kernels(r.get("kernels")), _fmt(r.get("artifact_bytes"), ".1f", MIB),
            f"{plan.total / GIB:.2f}" if plan else "", f"{peak / GIB:.2f} {kind}" if peak is not None else "",
            f"{speed} ({r.get('engine_speed_class') or 'unknown'})" if speed else "", _speedup(r, rows),
            _fmt(r.get("pass_at_1"), ".3f"), _fmt(r.get("math_exact_match"), ".3f"), _fmt(r.get("gsm8k_strict_match"), ".3f"),
            _fmt(r.get("perplexity"), ".2f"), _fmt(r.get("kld_mean"), ".4f"), _recovery_text(r), str(r.get("status") or ""),
            "" if r.get("status") == "ok" or _na(r.get("reason")) else str(r["reason"]),
        ])
    return table


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
        rows.sort(key=lambda r: (pd.Timestamp.min.tz_localize("UTC") if _na(r.get("started_at")) else r["started_at"]))
        current: dict[str, dict[str, Any]] = {}
        for r in rows:  # the latest row of each cell
            current[str(r["cell_name"])] = r
        latest = sorted(current.values(), key=lambda r: (str(r.get("format")), str(r.get("calibration_name") or ""), str(r.get("engine")), str(r.get("kv_cache_dtype"))))
        shape = _shape_of(model)
        runs = _runs(rows)
        regressions = _regressions(title, rows, runs, threshold)
        figures = [_quality_figure(latest), _memory_figure(latest, shape), _calibration_figure(latest),
                   _trend_figure(rows, runs, regressions, threshold), _latency_figure()]
        sections.append(_Section(title, _slug(f"{model}-{config}-{hw}"), runs, _table_rows(latest, shape), figures, regressions))
    return sections


CSS = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#eee;position:sticky;top:0}
td.failed{background:#fde0e0}td.unsupported{background:#fff3cd}td.reason{max-width:420px;white-space:pre-wrap}
figure{margin:18px 0}figcaption{font-size:12px;color:#555;max-width:760px}.placeholder{border:1px dashed #999;padding:12px;
color:#555;max-width:740px;background:#f7f7f7}.regression{color:#b00}svg{max-width:100%;height:auto;display:block}"""


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
        out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in TABLE_HEADERS) + "</tr></thead><tbody>")
        for row in s.table:
            status = row[TABLE_HEADERS.index("status")]
            cells = []
            for header, value in zip(TABLE_HEADERS, row):
                cls = status if header == "status" and status != "ok" else ("reason" if header == "reason" else "")
                cells.append(f'<td class="{cls}">{e(value)}</td>' if cls else f"<td>{e(value)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
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
