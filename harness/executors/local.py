"""`executor: local`: the cells one after another in this process (their stages in isolated
children), each under its lock (harness.cell_lock): a cell another run is computing is put off
to the end, then skipped if that run wrote its row."""

from __future__ import annotations

from harness import cell_lock
from harness.cell import STAGES, RunContext, run_cell
from harness.executors.base import Record, StillNeeded
from harness.matrix import Cell
from harness.progress import RunProgress
from harness.stages.calibration import CalibrationSamples


def run_cells(
    ctx: RunContext, pending: list[tuple[Cell, str]], record: Record, progress: RunProgress, still_needed: StillNeeded
) -> None:
    stage_task = progress.add_stage_task(total=len(STAGES))
    samples: dict[str, CalibrationSamples] = {}  # calibration sets tokenized once per run

    def waiting(cell: Cell, key: str, holder: str) -> None:
        progress.say(f"[dim]wait {cell.name}: being computed by {holder}[/]")

    for cell, key in cell_lock.in_turn(ctx.out_dir, pending, on_wait=waiting):
        if not still_needed(cell, key):
            continue
        progress.reset(stage_task, total=len(STAGES), visible=True)

        def on_stage(name: str, cell: Cell = cell) -> None:
            progress.update(stage_task, description=f"  {cell.name}: {name}", completed=STAGES.index(name))

        row = run_cell(ctx, cell, key, on_stage, samples)
        progress.update(stage_task, visible=False)  # the last stage's end
        record(cell, row)
