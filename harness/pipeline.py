"""Run a config: plan the run, skip finished cells, hand the rest to an executor, then the
compare pass.

A cell that fails (crash, timeout, out of memory) or that the engine refuses on this
hardware becomes a row with its status and reason; the matrix goes on. Finished cells
(ok / unsupported) are skipped on a resume; their artifacts are reused from the cache. Every
relative figure (KL divergence, recovery, speedup) is derived after the cells from what each
stored about itself (harness.results.compare), so the order cells finish in changes nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from harness import engines, executors, formats, hardware, matrix, provenance
from harness.cell import RunContext, compute_dtype, device_peak, now
from harness.config import Config
from harness.matrix import Cell
from harness.plan import cell_plan
from harness.progress import LOG_NAME, RunProgress, status
from harness.results import store
from harness.stages import hub_data, models
from harness.stages.evaluate import inputs as eval_inputs
from harness.stages.serving.slo import rederive, slo_json


@dataclass
class RunSummary:
    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # cell keys already finished


def preflight(config: Config, layers: list[tuple[str, int]]) -> dict[str, tuple[str, ...]]:
    """Check group sizes against the model's Linear layers before anything is calibrated: format
    id → the layers to leave unquantized (ignore_indivisible), or a HarnessError."""
    extra: dict[str, tuple[str, ...]] = {}
    for index, params in enumerate(config.formats):
        ignored = formats.get(params.name).check_layers(params, layers, f"{config.path}: formats[{index}]")
        if ignored:
            extra[params.id] = ignored
    return extra


def context(config: Config, console: Console) -> RunContext:
    """What every cell of the run shares: the resolved model, this machine, versions."""
    hw = hardware.detect()
    cache_dir = config.cache_dir or models.default_cache_dir()
    with status(
        console,
        f"model {config.model.source}: resolving (the builtin is converted once, then cached)",
        config.output / LOG_NAME,
    ) as say:
        model = models.resolve(config.model.source, config.model.revision, cache_dir, dtype=config.model.dtype)
        layers = models.linear_layers(model.path)
        peak = device_peak(hw, cache_dir, say=say)  # a CPU's is measured once per host (~10 s), then cached
    return RunContext(
        config=config,
        out_dir=config.output,
        cache_dir=cache_dir,
        model=model,
        hw=hw,
        run_id=now().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6],
        config_hash=hashlib.sha256(config.path.read_bytes()).hexdigest()[:16],
        quantize_versions=provenance.versions(),  # each cell's artifact key takes the packages of its format
        ignore_extra=preflight(config, layers),
        parameters=models.parameter_count(model.path),
        shape=cell_plan.load_model_shape(model.path),
        peak=peak,
    )


def run(config: Config, console: Console | None = None) -> RunSummary:
    console = console or Console(stderr=True)
    out_dir = config.output
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(out_dir)
    ctx = context(config, console)
    # hub calibration sets pinned to the commit they are at now: a dataset updated on the hub is new data
    config = config.model_copy(update={"calibration": [hub_data.pin(c, ctx.cache_dir) for c in config.calibration]})
    keyed = [
        (
            cell,
            cell.key(
                ctx.model.identity,
                ctx.quantize_versions,
                engines.get(cell.engine.name).version(),
                eval_inputs.current(),
                compute_dtype(config, cell),
            ),
        )
        for cell in matrix.expand(config)
    ]
    since = now()  # a row another run writes from now on is not recomputed by this one
    host = ctx.hw.as_row()
    done = store.finished(out_dir, host)
    store.merge_if_stale(out_dir)  # a run stopped between a row and its merge (full disk) left results.parquet behind
    with RunProgress(console, out_dir / LOG_NAME) as progress:
        matrix_task = progress.add_task(f"[bold]{config.name}[/]: cells", total=len(keyed))

        def skip(cell: Cell, key: str, status: str) -> None:
            summary.skipped.append(key)
            progress.say(f"[dim]skip {cell.name}: already {status} in {out_dir}[/]")
            progress.advance(matrix_task)

        def record(cell: Cell, row: dict[str, Any]) -> None:
            """The one place rows are written, in this (the driver's) process, whichever executor ran the cell."""
            store.write_row(out_dir, row)
            summary.rows.append(row)
            colour = {"ok": "green", "unsupported": "yellow"}.get(row["status"], "red")
            why = f": {row['reason']}" if row["reason"] else ""
            progress.say(f"[{colour}]{row['status']}[/] {cell.name}{why}")
            progress.advance(matrix_task)

        def still_needed(cell: Cell, key: str) -> bool:  # asked under the cell's lock, just before it starts
            status = store.row_status(out_dir, key, since, host)
            if status:
                skip(cell, key, status)
            return not status

        pending = []
        for cell, key in keyed:
            if key in done and _holds_current_slo(out_dir, cell, key):
                skip(cell, key, done[key])
            else:
                pending.append((cell, key))
        if pending:
            executors.get(config.executor)(ctx, pending, record, progress, still_needed)
    if summary.rows or summary.skipped:
        store.merge(out_dir)  # the compare pass over every row, whoever wrote it and in whatever order
    return summary


def _holds_current_slo(out_dir: Path, cell: Cell, key: str) -> bool:
    """Whether the cell's finished row is under the config's serving SLO, re-deriving its goodput
    from the stored per-request records where the SLO changed (the SLO is not in the key).
    False: the row kept no records to re-derive from, and the cell is measured again."""
    if cell.serving is None:
        return True
    row = store.read_row(out_dir, key)
    if row is None or row.get("serving_slo") in (None, slo_json(cell.serving.slo)):
        return True
    derived = rederive(row, cell.serving.slo)
    if derived is None:
        return False
    store.write_row(out_dir, derived)
    return True
