"""Changes between runs of the same cell: which run came first, each cell's figure per run, and
the steps that got worse by more than a threshold (read by the report's trend and by the gate)."""

from __future__ import annotations

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

    def line(self) -> str:
        engine = " (reference engine)" if self.metric == "output_tok_s" and self.speed_class != "serving" else ""
        return (
            f"{self.section}: {self.cell_name}: {self.metric}{engine} {self.previous:.4g} → {self.current:.4g} "
            f"({self.change_pct:+.1f} %) from run {self.previous_run} to {self.current_run}"
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


def regressions(section: str, rows: list[dict[str, Any]], runs: list[str], threshold: float) -> list[Regression]:
    found = []
    classes = {str(r["cell_name"]): str(r.get("engine_speed_class") or "unknown") for r in rows}
    for metric, _, worse in TREND_METRICS:
        for (config, cell), values in series(rows, runs, metric).items():
            seen = [(runs[i], v) for i, v in enumerate(values) if v is not None]
            for (run_a, a), (run_b, b) in zip(seen, seen[1:]):
                change = (b - a) / a * 100 if a else 0.0
                if change * worse > threshold:
                    found.append(Regression(section, config, cell, metric, run_a, run_b, a, b, change, classes[cell]))
    return found
