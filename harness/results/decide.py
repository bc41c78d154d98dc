"""Which format to ship, from measured rows: the answer the report opens with.

Among one model's cells on one machine (a report section), the candidates are the `ok` cells of
serving engines (a reference engine's tok/s is not a serving speed). Each gets a quality verdict
against the floor: by its paired statistics where the compare pass has them (harness.results.paired:
the worst verdict over its metrics), else by its point recovery (labelled so). A candidate ships
when it is `equivalent` (or is the reference itself) and ran on a kernel its format is made for
(`kernel_expected` not false). Of those the best is the answer and the next the runner-up, ranked
by what every one of them has, first found of: the cost per million output tokens at capacity
(the SLO's; cheapest first), the output tok/s at capacity, the offline output tok/s. Every other
cell gets one line on why it lost: worse, inconclusive (with the documents that would decide
it), a fallback kernel, no quality figure, unsupported or failed (with the engine's words), or
ranked lower (with both figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from harness.results.compare import paired_stats
from harness.results.metrics import BY_COLUMN, RECOVERY_METRICS
from harness.results.paired import Paired, verdict

#: the floor the report decides at: the picker's "balanced" tolerance (docs/picker.md)
DEFAULT_FLOOR_PCT = 97.0
_ORDER = {"equivalent": 0, "inconclusive": 1, "worse": 2}


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class Judged:
    row: dict[str, Any]
    label: str  # reference, equivalent, inconclusive, worse, no quality
    detail: str  # the figures behind the label, in words

    @property
    def name(self) -> str:
        return str(self.row.get("cell_name"))

    @property
    def tok_s(self) -> float | None:
        return _number(self.row.get("output_tok_s"))


@dataclass(frozen=True)
class Decision:
    floor_pct: float
    choice: Judged | None
    runner_up: Judged | None
    lost: list[tuple[str, str]] = field(default_factory=list)  # (cell name, why it lost)
    fastest_unjudged: Judged | None = None  # the fastest serving cell, when none has a quality figure

    def headline(self) -> str:
        if self.choice is not None:
            return f"ship {self.choice.row.get('format')} ({self.choice.name}): {_evidence(self.choice)}"
        if self.fastest_unjudged is not None:
            fastest = self.fastest_unjudged
            return (
                "no format to ship yet: no serving cell has a quality figure against a reference (run with evals); "
                f"the fastest is {fastest.name} at {fastest.tok_s or 0.0:.1f} output tok/s, quality unknown"
            )
        return f"no format to ship: no serving cell is shown equivalent at {self.floor_pct:g} % of its reference"


def _evidence(judged: Judged) -> str:
    speed = judged.tok_s
    parts = []
    cost = _number(judged.row.get("usd_per_million_output_tokens"))
    if cost is not None:
        parts.append(f"${cost:.3g} per million output tokens at capacity")
    capacity = _number(judged.row.get("capacity_rps"))
    if capacity is not None:
        parts.append(f"{capacity:.3g} req/s at its SLO")
    parts.append(f"{speed:.1f} output tok/s" if speed is not None else "no tok/s")
    speedup = _number(judged.row.get("speedup"))
    if speedup is not None:
        parts.append(f"{speedup:.2f}x its baseline")
    parts.append(judged.detail)
    return ", ".join(parts)


def judge(row: dict[str, Any], floor_pct: float) -> Judged:
    """The quality verdict of one ok row against the floor."""
    if row.get("reference_cell_key") is not None and row.get("reference_cell_key") == row.get("cell_key"):
        return Judged(row, "reference", "the reference every other cell is measured against")
    stats = paired_stats(row)
    decided = []
    for metric in RECOVERY_METRICS:
        if metric in stats:
            outcome = verdict(Paired.from_dict(stats[metric]), floor_pct)
            decided.append((_ORDER[outcome.label], BY_COLUMN[metric].label, outcome))
    if decided:
        _, label, outcome = max(decided, key=lambda item: item[0])
        return Judged(row, outcome.label, f"{label} {outcome.label}: {outcome.detail}")
    points = [
        (value, BY_COLUMN[m].label)
        for m in RECOVERY_METRICS
        if (value := _number(row.get(BY_COLUMN[m].recovery_column))) is not None
    ]
    if not points:
        return Judged(row, "no quality", "no recovery figure against a reference")
    value, label = min(points)
    shown = f"{label} recovery {value:.1f} % (a point figure: no per-document outcomes, no interval)"
    return Judged(row, "equivalent" if value >= floor_pct else "worse", shown)


@dataclass(frozen=True)
class Ranking:
    """How the passing candidates are ordered: by one column every one of them has."""

    column: str
    lowest_first: bool
    unit: str  # how a figure is shown: "{:.1f} output tok/s"
    worse: str  # the word for a candidate ranked below the answer

    def key(self, row: dict[str, Any]) -> float:
        value = _number(row.get(self.column))
        if value is None:
            return math.inf
        return value if self.lowest_first else -value

    def shown(self, row: dict[str, Any]) -> str:
        value = _number(row.get(self.column))
        return "no figure" if value is None else self.unit.format(value)


RANKINGS = (
    Ranking("usd_per_million_output_tokens", True, "${:.3g} per million output tokens at capacity", "dearer:"),
    Ranking("capacity_output_tok_s", False, "{:.1f} output tok/s at capacity", "less capacity:"),
    Ranking("output_tok_s", False, "{:.1f} output tok/s", "slower:"),
)


def ranking(candidates: list[Judged]) -> Ranking:
    """The first ranking every candidate has a figure for (offline tok/s, always measured, last)."""
    for option in RANKINGS:
        if candidates and all(_number(j.row.get(option.column)) is not None for j in candidates):
            return option
    return RANKINGS[-1]


def decide(rows: list[dict[str, Any]], floor_pct: float = DEFAULT_FLOOR_PCT) -> Decision:
    """The answer for one model on one machine (`rows`: the latest row of each cell)."""
    judged: list[Judged] = []
    refused: list[tuple[str, str]] = []  # unsupported or failed, in the engine's words
    reference_engine: dict[str, int] = {}
    for row in rows:
        name = str(row.get("cell_name"))
        status = row.get("status")
        if status != "ok":
            reason = " ".join(str(row.get("reason") or "no reason recorded").split())
            refused.append((name, f"{status}: {reason[:160]}"))
        elif row.get("engine_speed_class") != "serving":
            engine = str(row.get("engine"))
            reference_engine[engine] = reference_engine.get(engine, 0) + 1
        elif _number(row.get("output_tok_s")) is None:
            refused.append((name, "no output tok/s measured"))
        else:
            judged.append(judge(row, floor_pct))
    # answers under load that are not the engine's (harness.stages.serving.output_check): never shipped,
    # whatever their quality figures say
    garbled = [j for j in judged if j.row.get("output_check_ok") is False]
    fallback = [
        j
        for j in judged
        if j.label in ("equivalent", "reference") and j.row.get("kernel_expected") is False and j not in garbled
    ]
    passing = [j for j in judged if j.label in ("equivalent", "reference") and j not in fallback + garbled]
    rank = ranking(passing)
    eligible = sorted(passing, key=lambda j: rank.key(j.row))
    choice = eligible[0] if eligible else None
    runner_up = eligible[1] if len(eligible) > 1 else None
    lost: list[tuple[str, str]] = []  # quality losers first (what a reader weighs), then refusals
    unjudged = [j for j in judged if j.label == "no quality" and j not in garbled]
    fastest_unjudged = None
    if unjudged and len(unjudged) == len(judged) - len(garbled):
        fastest_unjudged = max(unjudged, key=lambda j: j.tok_s or 0.0)
    elif unjudged:
        names = ", ".join(j.name for j in unjudged[:3]) + (", ..." if len(unjudged) > 3 else "")
        lost.append((f"{len(unjudged)} serving cells", f"no quality figure against a reference ({names})"))
    for j in sorted(judged, key=lambda j: -(j.tok_s or 0.0)):
        if j is choice or j is runner_up or (j.label == "no quality" and j not in garbled):
            continue
        if j in garbled:
            lost.append((j.name, f"failed its output check under load: {j.row.get('output_check_note')}"))
        elif j in fallback:
            ran = ", ".join(k.split(" for ")[0] for k in str(j.row.get("kernels") or "").split("; "))
            made = " or ".join(str(j.row.get("kernels_expected") or "").split("; "))
            lost.append((j.name, f"ran on a fallback kernel ({ran}), not one it is made for ({made})"))
        elif j.label in ("equivalent", "reference"):
            assert choice is not None
            lost.append((j.name, f"{rank.worse} {rank.shown(j.row)} vs {rank.shown(choice.row)}"))
        else:
            lost.append((j.name, f"{j.tok_s or 0.0:.1f} tok/s but {j.detail}"))
    by_reason: dict[str, list[str]] = {}
    for name, why in refused:  # the same refusal once, with every cell it hit
        by_reason.setdefault(why, []).append(name)
    for why, hit in by_reason.items():
        shown = hit[0] if len(hit) == 1 else f"{hit[0]} and {len(hit) - 1} more"
        lost.append((shown, why))
    for engine, count in sorted(reference_engine.items()):
        lost.append((f"{count} {engine} cells", "a reference engine: its tok/s is not a serving speed"))
    return Decision(floor_pct, choice, runner_up, lost, fastest_unjudged)
