"""Changes between runs of the same cell: which run came first, each cell's figure per run, and
the steps that got worse by more than a threshold and more than the noise (read by the report's
trend and by the gate).

A change is compared only between runs on the same host (name, CPU or GPU model, device count):
another machine's figure is not a regression of this one. It is flagged when it is worse by more
than the threshold AND outside the noise: where both runs repeated the measurement
(`workload.repeats`), twice the standard error of the difference of their means; for single
measurements, twice the spread (standard deviation × √2) of the cell's earlier figures on that
host when there are at least three, else the threshold alone (the line says the noise was not
measured). A run measured beside other jobs shows as noise, not as a regression."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.results.read import is_missing, number

#: metrics trended across runs, and the sign of a change that is worse (tok/s down, perplexity up)
TREND_METRICS: tuple[tuple[str, str, int], ...] = (
    ("output_tok_s", "output tok/s", -1),
    ("perplexity", "perplexity", +1),
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
    noise_pct: float | None = None  # the change the noise alone could make (None: not measured)
    noise_basis: str = ""  # how the noise was measured

    def line(self) -> str:
        engine = " (reference engine)" if self.metric == "output_tok_s" and self.speed_class != "serving" else ""
        noise = (
            f"; outside the noise ±{self.noise_pct:.1f} % ({self.noise_basis})"
            if self.noise_pct is not None
            else "; single measurements: noise not measured"
        )
        return (
            f"{self.section}: {self.cell_name}: {self.metric}{engine} {self.previous:.4g} → {self.current:.4g} "
            f"({self.change_pct:+.1f} %) from run {self.previous_run} to {self.current_run}{noise}"
        )


def runs(rows: list[dict[str, Any]]) -> list[str]:
    """Run ids in the order they started."""
    start: dict[str, Any] = {}
    for r in rows:
        run, at = str(r.get("run_id")), r.get("started_at")
        if run not in start or (not is_missing(at) and (is_missing(start[run]) or at < start[run])):
            start[run] = at
    return sorted(
        start, key=lambda run: (pd.Timestamp.max.tz_localize("UTC") if is_missing(start[run]) else start[run], run)
    )


def host_of(row: dict[str, Any]) -> str:
    """The machine a figure was measured on: name, device model and count."""
    return f"{row.get('hostname')}|{row.get('hw_name')}|{row.get('hw_count')}"


def _repeats(row: dict[str, Any], metric: str) -> list[float]:
    if metric != "output_tok_s" or is_missing(row.get("output_tok_s_repeats")):
        return []
    try:
        values = [float(v) for v in json.loads(str(row["output_tok_s_repeats"]))]
    except (ValueError, TypeError):
        return []
    return values if len(values) > 1 else []


Point = tuple[str, float, list[float]]  # run, value, the repeats behind it


def points(rows: list[dict[str, Any]], runs: list[str], metric: str) -> dict[tuple[str, str, str], list[Point]]:
    """(config, cell, host) → the metric per run in run order (the run's latest ok row of that cell
    on that host), for cells with two or more."""
    order = {run: i for i, run in enumerate(runs)}
    latest: dict[tuple[str, str, str], dict[str, Point]] = {}
    for r in sorted(
        rows, key=lambda r: pd.Timestamp.min.tz_localize("UTC") if is_missing(r.get("started_at")) else r["started_at"]
    ):
        value = number(r.get(metric)) if r.get("status") == "ok" else None
        if value is None:
            continue
        key = (str(r.get("config_name")), str(r["cell_name"]), host_of(r))
        run = str(r.get("run_id"))
        latest.setdefault(key, {})[run] = (run, value, _repeats(r, metric))
    return {
        key: sorted(by_run.values(), key=lambda p: order.get(p[0], len(order)))
        for key, by_run in latest.items()
        if len(by_run) >= 2
    }


def series(rows: list[dict[str, Any]], runs: list[str], metric: str) -> dict[tuple[str, str], list[float | None]]:
    """(config, cell) → the metric in each run (the run's latest row of that cell), for cells with two or
    more values."""
    index = {run: i for i, run in enumerate(runs)}
    out: dict[tuple[str, str], list[float | None]] = {}
    for r in sorted(
        rows, key=lambda r: pd.Timestamp.min.tz_localize("UTC") if is_missing(r.get("started_at")) else r["started_at"]
    ):
        value = number(r.get(metric)) if r.get("status") == "ok" else None
        values = out.setdefault((str(r.get("config_name")), str(r["cell_name"])), [None] * len(runs))
        if value is not None:
            values[index[str(r.get("run_id"))]] = value
    return {k: v for k, v in out.items() if sum(x is not None for x in v) >= 2}


def noise(previous: Point, current: Point, history: list[Point]) -> tuple[float | None, str]:
    """The % change noise alone could make between two points (module docstring), and its basis."""
    (_, a, ra), (_, _, rb) = previous, current
    if ra and rb and a:
        se = math.sqrt(statistics.variance(ra) / len(ra) + statistics.variance(rb) / len(rb))
        return 200.0 * se / a, f"{len(ra)} and {len(rb)} repeats"
    earlier = [value for _, value, _ in history]
    if len(earlier) >= 3 and statistics.mean(earlier):
        spread = statistics.stdev(earlier) * math.sqrt(2) / statistics.mean(earlier)
        return 200.0 * spread, f"spread of {len(earlier)} earlier runs on this host"
    return None, ""


def regressions(section: str, rows: list[dict[str, Any]], runs: list[str], threshold: float) -> list[Regression]:
    found = []
    classes = {str(r["cell_name"]): str(r.get("engine_speed_class") or "unknown") for r in rows}
    for metric, _, worse in TREND_METRICS:
        for (config, cell, _host), seen in points(rows, runs, metric).items():
            for i in range(1, len(seen)):
                (run_a, a, _), (run_b, b, _) = seen[i - 1], seen[i]
                change = (b - a) / a * 100 if a else 0.0
                noise_pct, basis = noise(seen[i - 1], seen[i], seen[:i])
                if change * worse > max(threshold, noise_pct or 0.0):
                    found.append(
                        Regression(
                            section, config, cell, metric, run_a, run_b, a, b, change, classes[cell], noise_pct, basis
                        )
                    )
    return found
