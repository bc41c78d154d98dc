"""The gate a nightly run must pass: results rows in, pass or fail out (docs/production.md).

A cell fails the gate when
- its status is `failed` (with the stage and reason it failed with);
- a recovery is `worse` than the floor its config's `gate.recovery_floor_pct` sets (one number
  for every recovery metric, or per metric): decided by the paired statistics of the compare
  pass (harness.results.paired: two one-sided tests on the paired bootstrap interval of the
  recovery, over the documents cell and reference both scored). `equivalent` passes; an
  `inconclusive` cell (the interval straddles the floor) is reported with the number of
  documents that would decide it, or fails when the config says `gate.inconclusive: fail`.
  A row without per-document outcomes (an older table) falls back to its point recovery below
  the floor, as llm-compressor's own accuracy CI fails a model;
- its output tok/s dropped by more than the allowed % against the same cell in a previous run's
  table (`--baseline`), on the same model, hardware and workload.
- it ran on none of the kernels its format is made for (`kernel_expected` false: Marlin or
  Machete for W4A16 on a GPU, CUTLASS for FP8, the type's own ggml tensors for GGUF...) and its
  config says `gate.unexpected_kernel: fail`; otherwise that is a note.
A config given to the gate with no row in the results fails too, and so does a floor that no
ok cell has a figure for (the evals did not run): a gate that judged nothing must not pass.
`unsupported` cells are not failures (the engine refuses the format on this hardware, and says
so in the row); neither is a recovery that is undefined because the baseline scored 0 (no % of
zero exists): both are listed as "not gated".

The current figure of a cell is its latest row (by start time) in the results; the previous
figure is its latest `ok` row in the baseline. Rows are read with `results.read.load_results`, and a
throughput drop is recorded as a `results.trend.Regression`, the type the report flags regressions
with, computed the same way: (current - previous) / previous x 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config import Config
from harness.errors import HarnessError
from harness.results.compare import paired_stats
from harness.results.paired import Paired, verdict
from harness.results.read import is_missing, load_results, number
from harness.results.trend import Regression

#: output tok/s may drop by this % against the previous run when neither the command line
#: nor the config's `gate.max_throughput_regression_pct` says otherwise
DEFAULT_MAX_THROUGHPUT_REGRESSION_PCT = 10.0
#: a previous figure is compared only with a row of the same model, machine and workload
COMPARABLE_ON = (
    "model_source",
    "hw_device",
    "hw_name",
    "hw_count",
    "workload_prompts",
    "workload_input_len",
    "workload_output_len",
)
REASON_LIMIT = 400

Results = Path | str | Sequence[Path | str]


@dataclass(frozen=True)
class Failure:
    """One reason the gate fails: a cell (or a config without rows) and what is wrong, with the figures."""

    config_name: str
    cell_name: str
    check: str  # status, verdict (paired), recovery (point: no per-document outcomes), throughput, kernel, rows
    detail: str
    figure: float | None = None
    limit: float | None = None  # the floor (recovery %) or the largest drop allowed (throughput %)

    def line(self) -> str:
        return f"FAIL {self.config_name} {self.cell_name}: {self.detail}"


@dataclass(frozen=True)
class GateResult:
    failures: tuple[Failure, ...]
    not_gated: tuple[str, ...]  # cells or figures the gate saw but does not judge, with why
    notes: tuple[str, ...]  # what was not checked at all (no floor set, no baseline, ...)
    cells: int
    recovery_checks: int
    throughput_checks: int
    regressions: tuple[Regression, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    def verdict(self) -> str:
        checked = (
            f"{self.cells} cells, {self.recovery_checks} recovery figures against a floor, "
            f"{self.throughput_checks} tok/s against the previous run"
        )
        if self.passed:
            return f"gate: passed ({checked})"
        return f"gate: FAILED: {len(self.failures)} failure{'s' if len(self.failures) != 1 else ''} ({checked})"

    def lines(self) -> list[str]:
        return (
            [f.line() for f in self.failures]
            + [f"not gated: {line}" for line in self.not_gated]
            + [f"note: {line}" for line in self.notes]
            + [self.verdict()]
        )

    def markdown(self) -> str:
        out = ["## Gate", "", f"**{self.verdict()}**", ""]
        if self.failures:
            out += ["| config | cell | check | what failed |", "| --- | --- | --- | --- |"]
            out += [f"| {f.config_name} | {f.cell_name} | {f.check} | {_md(f.detail)} |" for f in self.failures]
            out.append("")
        out += [f"- not gated: {_md(line)}" for line in self.not_gated]
        out += [f"- note: {_md(line)}" for line in self.notes]
        return "\n".join(out).rstrip() + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _latest(frame: pd.DataFrame, only_ok: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """(config_name, cell_name) → the cell's latest row by start time."""
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    earliest = pd.Timestamp.min.tz_localize("UTC")
    records.sort(key=lambda r: earliest if is_missing(r.get("started_at")) else r["started_at"])
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in records:
        if only_ok and row.get("status") != "ok":
            continue
        latest[(str(row.get("config_name")), str(row.get("cell_name")))] = row
    return latest


def _one_line(text: Any) -> str:
    words = " ".join(str(text).split())
    return words if len(words) <= REASON_LIMIT else words[: REASON_LIMIT - 1] + "…"


def _threshold(value: float | None, where: str) -> float:
    if value is None:
        return DEFAULT_MAX_THROUGHPUT_REGRESSION_PCT
    if not 0 < value < 100:
        raise HarnessError(
            f"{where}: a throughput regression threshold is a % drop above 0 and below 100 (got {value:g})"
        )
    return float(value)


def evaluate(
    results: Results,
    configs: Sequence[Config] = (),
    baseline: Results | None = None,
    max_throughput_regression_pct: float | None = None,
) -> GateResult:
    """Judge the latest row of every cell in `results` (see the module's docstring).

    `configs` give the recovery floors (and throughput thresholds) of the rows whose config_name
    is theirs; `max_throughput_regression_pct`, when given, overrides every config's threshold."""
    override = (
        None
        if max_throughput_regression_pct is None
        else _threshold(max_throughput_regression_pct, "--max-throughput-regression-pct")
    )
    by_name: dict[str, Config] = {}
    for config in configs:
        if config.name in by_name and by_name[config.name].path != config.path:
            raise HarnessError(
                f"{config.path}: config name {config.name!r} is also the name of {by_name[config.name].path}; the "
                "gate matches rows to configs by name"
            )
        by_name[config.name] = config

    current = _latest(load_results(results))
    previous = _latest(load_results(baseline), only_ok=True) if baseline is not None else None

    failures: list[Failure] = []
    not_gated: list[str] = []
    notes: list[str] = []
    regressions: list[Regression] = []
    recovery_checks = throughput_checks = 0

    seen_configs = {config_name for config_name, _ in current}
    for name, config in by_name.items():
        if name not in seen_configs:
            failures.append(
                Failure(name, "-", "rows", f"no row of config {name!r} ({config.path}) in the results: nothing to gate")
            )
        elif config.gate is None or not config.gate.floors():
            notes.append(f"config {name}: no gate.recovery_floor_pct set; recovery not gated")
    for name in sorted(seen_configs - set(by_name)):
        notes.append(
            f"config {name}: not given with --config; its recovery is not gated (failed cells and tok/s still are)"
        )
    if previous is None:
        notes.append("no --baseline given; throughput not compared with a previous run")

    measured: dict[tuple[str, str], int] = {}  # (config, metric) → cells with a figure
    for (config_name, cell_name), row in sorted(current.items()):
        cell_config = by_name.get(config_name)
        status = row.get("status")
        if status == "failed":
            stage = row.get("failed_stage")
            reason = _one_line(row.get("reason") or "no reason recorded")
            if stage and reason.startswith(f"{stage}: "):  # the pipeline's reasons name their stage already
                reason = reason[len(stage) + 2 :]
            failures.append(
                Failure(config_name, cell_name, "status", f"status failed{f' at {stage}' if stage else ''}: {reason}")
            )
            continue
        if status != "ok":
            reason = _one_line(row.get("reason") or "")
            not_gated.append(f"{config_name} {cell_name}: {status}{f' ({reason})' if reason else ''}")
            continue

        if row.get("kernel_expected") is False:
            ran = ", ".join(k.split(" for ")[0] for k in str(row.get("kernels") or "none").split("; "))
            said = f"ran on {ran}, not on a kernel its format is made for ({row.get('kernels_expected')})"
            if (
                cell_config is not None
                and cell_config.gate is not None
                and cell_config.gate.unexpected_kernel == "fail"
            ):
                failures.append(Failure(config_name, cell_name, "kernel", said))
            else:
                notes.append(f"{config_name} {cell_name}: {said}")
        floors = cell_config.gate.floors() if cell_config is not None and cell_config.gate is not None else {}
        fail_inconclusive = (
            cell_config is not None and cell_config.gate is not None and (cell_config.gate.inconclusive == "fail")
        )
        stats = paired_stats(row)
        for metric, floor in floors.items():
            recovery, figure = number(row.get(f"{metric}_recovery_pct")), number(row.get(metric))
            if figure is not None or recovery is not None:
                measured[(config_name, metric)] = measured.get((config_name, metric), 0) + 1
            paired = stats.get(metric)
            if recovery is not None and paired is not None:
                recovery_checks += 1
                decided = verdict(Paired.from_dict(paired), floor)
                against = row.get("recovery_reference") or "the baseline"
                if decided.label == "worse" or (decided.label == "inconclusive" and fail_inconclusive):
                    failures.append(
                        Failure(
                            config_name,
                            cell_name,
                            "verdict",
                            f"{metric} is {decided.label} against {against}: {decided.detail}",
                            recovery,
                            floor,
                        )
                    )
                elif decided.label == "inconclusive":
                    not_gated.append(
                        f"{config_name} {cell_name}: {metric} inconclusive against {against}: {decided.detail}"
                    )
            elif recovery is not None:
                recovery_checks += 1
                if recovery < floor:
                    against = row.get("recovery_reference") or "the baseline"
                    shown = f"; {metric} {figure:.4g} against {against}" if figure is not None else ""
                    failures.append(
                        Failure(
                            config_name,
                            cell_name,
                            "recovery",
                            f"{metric} recovery {recovery:.2f} % is below the floor {floor:g} %{shown}",
                            recovery,
                            floor,
                        )
                    )
            elif figure is not None:
                reference = row.get("recovery_reference") or "no baseline cell"
                not_gated.append(
                    f"{config_name} {cell_name}: {metric} = {figure:.4g}, recovery undefined "
                    f"(its reference, {reference}, scored 0 or has no {metric})"
                )

        if previous is None:
            continue
        before = previous.get((config_name, cell_name))
        speed = number(row.get("output_tok_s"))
        if speed is None:
            continue
        previous_speed = None if before is None else number(before.get("output_tok_s"))
        if before is None or previous_speed is None:
            not_gated.append(
                f"{config_name} {cell_name}: output tok/s {speed:.4g}, no previous figure (a new cell, or not "
                "ok in the baseline)"
            )
            continue
        differs = [key for key in COMPARABLE_ON if str(before.get(key)) != str(row.get(key))]
        if differs:
            not_gated.append(
                f"{config_name} {cell_name}: output tok/s not compared: {', '.join(differs)} differ from the "
                "baseline's row"
            )
            continue
        threshold = (
            override
            if override is not None
            else _threshold(
                cell_config.gate.max_throughput_regression_pct
                if cell_config is not None and cell_config.gate is not None
                else None,
                f"{cell_config.path if cell_config else config_name}: gate.max_throughput_regression_pct",
            )
        )
        a, b = previous_speed, speed
        change = (b - a) / a * 100 if a else 0.0
        throughput_checks += 1
        if change < -threshold:
            regression = Regression(
                "gate",
                config_name,
                cell_name,
                "output_tok_s",
                str(before.get("run_id")),
                str(row.get("run_id")),
                a,
                b,
                change,
                str(row.get("engine_speed_class") or "unknown"),
            )
            regressions.append(regression)
            engine = " (reference engine)" if regression.speed_class != "serving" else ""
            failures.append(
                Failure(
                    config_name,
                    cell_name,
                    "throughput",
                    f"output tok/s{engine} {b:.4g} is {change:+.1f} % against {a:.4g} in run "
                    f"{regression.previous_run}; "
                    f"the largest drop allowed is {threshold:g} %",
                    change,
                    -threshold,
                )
            )

    for name, config in by_name.items():  # a floor over figures nobody measured would pass on nothing
        if config.gate is None or name not in seen_configs or not config.gate.floors():
            continue
        floors = config.gate.floors()
        unmeasured = [metric for metric in floors if (name, metric) not in measured]
        if isinstance(config.gate.recovery_floor_pct, dict):
            missing = unmeasured
        else:  # one floor for every metric: the config's evals pick which exist
            missing = unmeasured if len(unmeasured) == len(floors) else []
        if missing:
            failures.append(
                Failure(
                    name,
                    "-",
                    "recovery",
                    f"a recovery floor is set for {', '.join(missing)}, but no ok cell has "
                    f"{'that figure' if len(missing) == 1 else 'any of these figures'}: quality was not measured",
                )
            )
    return GateResult(
        tuple(failures),
        tuple(not_gated),
        tuple(notes),
        len(current),
        recovery_checks,
        throughput_checks,
        tuple(regressions),
    )
