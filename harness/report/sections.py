"""The report's sections: one per model, config and machine, with its table, figures and regressions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.report.figures import FIGURES, Figure, SectionView
from harness.report.rows import slug
from harness.report.tables import kv_trap_table, serving_notes, serving_rows, table_rows
from harness.results import trend
from harness.results.decide import Decision, decide
from harness.results.read import is_missing
from harness.results.trend import Regression
from harness.shapes import shape_of_source


@dataclass(frozen=True)
class Section:
    title: str
    slug: str
    runs: list[str]
    table: list[list[str]]
    figures: list[Figure]
    regressions: list[Regression]
    serving: list[list[str]]  # one line per cell and sweep point; empty without serving figures
    serving_notes: list[str]
    decision: Decision | None = None  # the format to ship (harness.results.decide)
    kv_headers: list[str] = field(default_factory=list)  # the KV-cache trap table (tables.kv_trap_table)
    kv_trap: list[list[str]] = field(default_factory=list)


def build_sections(frame: pd.DataFrame, threshold: float) -> list[Section]:
    """One section per model, config and machine: its cells share a workload and a machine, so
    their tok/s compare; tok/s from different machines or workloads are never one comparison."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    keyed: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        model = str(r.get("model_source") or r.get("model_identity") or "unknown model")
        key = (
            model,
            str(r.get("config_name") or "?"),
            str(r.get("hw_device") or "?"),
            str(r.get("hw_name") or "unknown hardware"),
        )
        keyed.setdefault(key, []).append(r)
    sections = []
    for (model, config, device, hw), rows in sorted(keyed.items()):
        title = f"{model} · config {config} · {hw} ({device})"
        rows.sort(
            key=lambda r: pd.Timestamp.min.tz_localize("UTC") if is_missing(r.get("started_at")) else r["started_at"]
        )
        current: dict[str, dict[str, Any]] = {}
        for r in rows:  # the latest row of each cell
            current[str(r["cell_name"])] = r
        latest = sorted(
            current.values(),
            key=lambda r: (
                str(r.get("format")),
                str(r.get("calibration_name") or ""),
                str(r.get("engine")),
                str(r.get("kv_cache_dtype")),
            ),
        )
        shape = shape_of_source(model)
        runs = trend.runs(rows)
        regressions = trend.regressions(title, rows, runs, threshold)
        decision = decide(latest)
        chosen = decision.choice.name if decision.choice is not None else None
        view = SectionView(rows, latest, runs, regressions, threshold, shape, chosen)
        figures = [figure(view) for figure in FIGURES]
        serving = serving_rows(latest)
        kv_headers, kv_trap = kv_trap_table(latest)
        sections.append(
            Section(
                title,
                slug(f"{model}-{config}-{hw}"),
                runs,
                table_rows(latest, shape),
                figures,
                regressions,
                serving,
                serving_notes(latest) if serving else [],
                decision,
                kv_headers,
                kv_trap,
            )
        )
    return sections
