"""The recovery path of `harness pick --validate`: run the validation config the picker writes,
judge the candidate's row against the floor, and walk the fallback chain until a format passes its
gate or none can: the picker's answer, the next candidate of the same rule, then 8-bit, each
placed on more memory (tensor parallelism) where it does not fit one device. When no quantized
format passes, the answer is the unquantized baseline, the reference every gate is measured
against.

Every step is a real `harness run` of the bf16 baseline beside the candidate, into one results
directory: the baseline is measured once and resumed by every later step, and the verdict is the
report's (harness.results.decide.judge: the paired verdict, else the point recovery)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.gpus import Gpu
from harness.picker import eight_bit_format
from harness.results.decide import judge
from harness.results.read import load_results, records

if TYPE_CHECKING:
    from rich.console import Console

    from harness.picker import Recommendation

#: the picker's GGUF rule for a CPU, least bits first (harness.picker._cpu_rule)
CPU_ORDER = ("gguf-q4_k_m", "gguf-q5_k_m")
CPU_EIGHT_BIT = "gguf-q8_0"


@dataclass(frozen=True)
class Step:
    format: str
    why: str  # what this step of the chain is: the picker's answer, the next candidate, 8-bit, ...
    tensor_parallel: int = 1


@dataclass(frozen=True)
class Outcome:
    step: Step
    verdict: str  # equivalent, worse, inconclusive, no quality, failed, unsupported, does not fit
    detail: str
    rows: tuple[str, ...]  # the cells (name @ key) whose rows decided it
    wall_s: float  # what the step cost: the seconds of its run (a resumed baseline costs nothing)

    @property
    def passed(self) -> bool:
        return self.verdict == "equivalent"


@dataclass(frozen=True)
class Validation:
    floor_pct: float
    outcomes: tuple[Outcome, ...]
    answer: str  # the format to ship (the baseline when no quantized format passes)
    results: Path

    def lines(self) -> list[str]:
        out = []
        for i, o in enumerate(self.outcomes, start=1):
            placed = f" on tensor parallel {o.step.tensor_parallel}" if o.step.tensor_parallel > 1 else ""
            out.append(
                f"step {i} ({o.step.why}): {o.step.format}{placed}: {o.verdict} at the {self.floor_pct:g} % floor, "
                f"{o.detail}; {o.wall_s:.0f} s; rows {', '.join(o.rows) or 'none'}"
            )
        passed = next((o for o in self.outcomes if o.passed), None)
        if passed is not None:
            out.append(f"answer: ship {self.answer} (step {self.outcomes.index(passed) + 1}: {passed.step.why})")
        else:
            out.append(
                f"answer: no quantized format passes the {self.floor_pct:g} % floor: ship {self.answer}, the "
                "unquantized reference"
            )
        return out

    def as_json(self) -> str:
        return json.dumps(
            {
                "floor_pct": self.floor_pct,
                "answer": self.answer,
                "results": str(self.results),
                "steps": [
                    {**asdict(o.step), **{k: v for k, v in asdict(o).items() if k != "step"}} for o in self.outcomes
                ],
            },
            indent=2,
        )


def chain(first: str, gpu: Gpu | None, candidates: list[str]) -> list[Step]:
    """The formats to try in order: `first` (the picker's answer), the rule's candidates ranked
    below it, then 8-bit. `candidates` is the rule's list for a GPU (ignored on a CPU)."""
    if gpu is None:
        order = list(CPU_ORDER[CPU_ORDER.index(first) :]) if first in CPU_ORDER else [first]
        eight_bit = CPU_EIGHT_BIT
    else:
        # after `first`, only what the rule ranks below it: an answer measured rows moved to 8-bit
        # does not fall back to 4-bit
        order = [first, *candidates[candidates.index(first) + 1 :]] if first in candidates else [first]
        eight_bit = eight_bit_format(gpu)
    names = list(dict.fromkeys([*order, eight_bit]))
    steps = []
    for i, name in enumerate(names):
        why = "the picker's answer" if i == 0 else ("8-bit" if name == eight_bit else "the next candidate")
        steps.append(Step(name, why))
    return steps


def judge_step(step: Step, rows: list[dict[str, Any]], floor: float) -> tuple[str, str, tuple[str, ...]]:
    """The step's verdict from the rows its run left: the candidate's latest row, judged as the
    report judges it; a failed or unsupported cell is its status and reason."""
    mine = [r for r in rows if r.get("format") == step.format]
    if not mine:
        return "failed", "its run wrote no row for the candidate", ()
    row = max(mine, key=lambda r: str(r.get("started_at")))
    names = [f"{row['cell_name']} @ {row['cell_key']}"]
    reference = next((r for r in rows if r.get("cell_key") == row.get("reference_cell_key")), None)
    if reference is not None:
        names.append(f"{reference['cell_name']} @ {reference['cell_key']}")
    if row.get("status") != "ok":
        return str(row.get("status")), str(row.get("reason") or "no reason recorded"), tuple(names)
    judged = judge(row, floor)
    return judged.label, judged.detail, tuple(names)


RunStep = Callable[[Step, Path], list[dict[str, Any]]]
PlaceStep = Callable[[Step], Step | None]


def walk(
    steps: list[Step],
    floor: float,
    results: Path,
    run_step: RunStep,
    place: PlaceStep = lambda step: step,
    baseline: str = "bf16",
) -> Validation:
    """Run the steps in order until one passes; `place` puts a step on the memory it needs (None:
    it fits nowhere, not run) and `run_step` runs its config into `results`, returning the rows
    of the cells it ran or resumed."""
    outcomes: list[Outcome] = []
    for planned in steps:
        step = place(planned)
        if step is None:
            outcomes.append(Outcome(planned, "does not fit", "no memory plan of the asked hardware holds it", (), 0.0))
            continue
        started = time.perf_counter()
        rows = run_step(step, results)
        verdict, detail, names = judge_step(step, rows, floor)
        outcomes.append(Outcome(step, verdict, detail, names, time.perf_counter() - started))
        if outcomes[-1].passed:
            return Validation(floor, tuple(outcomes), step.format, results)
    return Validation(floor, tuple(outcomes), baseline, results)


def rows_of(results: Path, keys: list[str]) -> list[dict[str, Any]]:
    """The rows of `results` (a directory) with these cell keys."""
    wanted = set(keys)
    return [r for r in records(load_results(results)) if r.get("cell_key") in wanted]


def placed(step: Step, fits: Callable[[str, int], bool], tries: tuple[int, ...]) -> Step | None:
    """The step on the least tensor parallelism whose memory plan fits (None: none does)."""
    for tp in (1, *tries):
        if fits(step.format, tp):
            return step if tp == 1 else replace(step, tensor_parallel=tp, why=f"{step.why}, more memory")
    return None


def validate(rec: Recommendation, results: Path, console: Console | None = None) -> Validation:
    """Walk the fallback chain of the picker's answer `rec`, each step a `harness run` into
    `results` (its configs are written there too, step-FORMAT.yaml)."""
    from harness import picker, pipeline
    from harness.config import load_config

    results.mkdir(parents=True, exist_ok=True)
    gpu = picker.resolve_hardware(rec.hardware)
    steps = chain(rec.format, gpu, picker.rule_candidates(rec))

    def run_step(step: Step, out: Path) -> list[dict[str, Any]]:
        config_path = out / f"step-{step.format}.yaml"
        config_path.write_text(picker.variant(rec, step.format, step.tensor_parallel).config_yaml(), encoding="utf-8")
        summary = pipeline.run(load_config(config_path, output=out), console)
        return rows_of(out, [r["cell_key"] for r in summary.rows] + summary.skipped)

    tries = picker.TENSOR_PARALLEL_TRIES
    done = walk(
        steps,
        rec.floor_pct,
        results,
        run_step,
        lambda s: placed(s, lambda f, tp: picker.fits_on(rec, f, tp), tries),
        baseline=picker.baseline_format(rec.engine),
    )
    (results / "validation.json").write_text(done.as_json(), encoding="utf-8")
    return done
