"""One cell through every stage: calibrate → quantize → serve + measure → serve under load →
evaluate → its row. Each stage returns a result that knows its columns, or stops the cell with
a status and a reason (harness.stages.base.StageStop); the row is built here, written by the
driver (harness.pipeline), whichever executor ran the cell.

A cell is a pure function of its key: it measures itself and never reads another cell.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import engines, formats, hardware, provenance
from harness.config import Config
from harness.engines.base import Engine, EngineRequest
from harness.errors import HarnessError
from harness.formats.base import QuantizeRequest
from harness.matrix import Cell
from harness.plan import cell_plan, memory, prices
from harness.shapes import ModelShape
from harness.stages import bench, calibration, quantize
from harness.stages.base import StageResult, StageStop
from harness.stages.calibration import CalibrationSamples
from harness.stages.evaluate import stage as evaluate
from harness.stages.models import ResolvedModel
from harness.stages.serving import stage as serving
from harness.stages.workload import make_prompts

STAGES = ("calibrate", "quantize", "serve + measure", "serve under load", "evaluate", "record")
OnStage = Callable[[str], None]


@dataclass(frozen=True)
class RunContext:
    """What every cell of a run shares; picklable (the Ray executor ships it to its workers)."""

    config: Config
    out_dir: Path
    cache_dir: Path
    model: ResolvedModel
    hw: hardware.Hardware
    run_id: str
    config_hash: str
    quantize_versions: dict[str, str]
    ignore_extra: dict[str, tuple[str, ...]]  # format id → indivisible layers to leave unquantized
    parameters: int
    shape: ModelShape | str  # or why the planner can't read the model
    peak: hardware.Peak | str  # of one device, or why there is none


def now() -> datetime:
    return datetime.now(timezone.utc)


def device_peak(
    hw: hardware.Hardware, cache_dir: Path, say: Callable[[str], None] | None = None
) -> hardware.Peak | str:
    try:
        return hardware.peak_for(hw, cache_dir, say=say)
    except HarnessError as exc:
        return f"no roofline: {exc}"


class _Row:
    """The row being built: identity columns first, each stage's columns as it ends."""

    def __init__(self, ctx: RunContext, cell: Cell, key: str) -> None:
        self.started = now()
        self.columns = identity_columns(ctx, cell, key, self.started)

    def add(self, result: StageResult | dict[str, Any]) -> None:
        self.columns.update(result if isinstance(result, dict) else result.columns())

    def finish(self, status: str, reason: str | None = None, stage: str | None = None) -> dict[str, Any]:
        loads = {
            name: float(self.columns[column])
            for name, column in LOADS.items()
            if isinstance(self.columns.get(column), (int, float))
        }
        self.columns["engine_loads"] = json.dumps(loads) if loads else None
        return finish(self.columns, self.started, status, reason, stage)


#: the engine loads of a cell, by stage, and the column holding each one's seconds
LOADS = {"offline": "load_s", "server": "serving_startup_s", "evaluate": "eval_load_s"}


def run_cell(
    ctx: RunContext,
    cell: Cell,
    key: str,
    on_stage: OnStage | None = None,
    samples_cache: dict[str, CalibrationSamples] | None = None,
) -> dict[str, Any]:
    """The cell's row, not yet written. Its stages run in isolated children."""
    on_stage = on_stage or (lambda name: None)
    cache = {} if samples_cache is None else samples_cache
    row = _Row(ctx, cell, key)
    fmt = formats.get(cell.format.name)
    engine = engines.get(cell.engine.name)
    logs = ctx.out_dir / "logs" / key
    try:
        refusal = engine.refusal(fmt.expected_kernels(cell.format, engine.name, ctx.hw), ctx.hw.device)
        if refusal is not None:  # known before minutes of calibration that the engine would refuse
            # the plan needs no artifact (its path is no input): what the cell would have taken
            row.add(_planned(ctx, cell, engine, _engine_request(ctx, cell, ctx.model.path)))
            raise StageStop("unsupported", f"{engine.name} on {ctx.hw.device}: {refusal}", "serve")
        artifact = quantize.obtain(
            fmt,
            _quantize_request(ctx, cell),
            cell.artifact_key(ctx.model.identity, ctx.quantize_versions),
            ctx.cache_dir,
            ctx.config.quantize,
            logs / "quantize.log",
            calibrate=lambda: _calibrate(ctx, cell, cache, on_stage),
            on_stage=on_stage,
        )
        row.add(artifact.columns(ctx.parameters))
        on_stage("serve + measure")
        request = _engine_request(ctx, cell, artifact.path)
        settings = engine.settings(request)
        row.add(
            {
                "engine_settings": json.dumps(settings, sort_keys=True),
                "engine_env": json.dumps(engine.environment(request), sort_keys=True),
            }
        )
        parallel = engine.parallelism(cell.engine)
        row.add(_planned(ctx, cell, engine, request))
        refusal = fmt.unsupported_reason(cell.format, ctx.hw)
        if refusal is not None:
            raise StageStop("unsupported", refusal, "serve")
        served = cell.serving is not None and engine.has_server
        checked = (
            serving.output_check_requests(cell.serving, cell.workload, ctx.model.path)
            if served and cell.serving is not None  # (the second test narrows the type)
            else []
        )
        offline = bench.measure(
            engine,
            request,
            make_prompts(ctx.model.path, cell.workload),
            cell.workload.output_len,
            logs / "engine.log",
            ctx.hw.device,
            cell.workload.repeats,
            greedy=checked,
        )
        row.add(offline)
        row.add(bench.kernel_columns(fmt.expected_kernels(cell.format, engine.name, ctx.hw), offline.kernels))
        peak = ctx.peak.times(parallel.devices) if not isinstance(ctx.peak, str) else ctx.peak
        row.add(
            cell_plan.roofline_columns(
                ctx.shape,
                cell.format,
                cell.engine.kv_dtype,
                engine.concurrent_sequences(request, cell.workload.prompts),
                cell.workload.input_len,
                cell.workload.output_len,
                peak,
                offline.measurement.output_tok_s,
                request.dtype,
            )
        )
        if cell.serving is not None:
            on_stage("serve under load")
            row.add(
                serving.measure(
                    engine,
                    request,
                    cell.serving,
                    cell.workload,
                    ctx.model.path,
                    logs / "server.log",
                    references=offline.measurement.greedy,
                    price=prices.price_for(cell.serving.capacity, ctx.hw, parallel.devices)
                    if cell.serving.capacity is not None
                    else (None, "no capacity search"),
                )
                if served
                else serving.no_server_note(engine)
            )
        if cell.evals is not None:
            on_stage("evaluate")
            row.add(
                evaluate.SYNTHETIC
                if ctx.model.synthetic
                else evaluate.measure(
                    out_dir=ctx.out_dir,
                    key=key,
                    cache_dir=ctx.cache_dir,
                    model_dir=ctx.model.path,
                    spec=cell.evals,
                    engine_request=request,
                    log_path=logs / "evaluate.log",
                )
            )
    except StageStop as stop:
        row.add(stop.columns)
        return row.finish(stop.status, stop.reason, stop.stage)
    on_stage("record")
    return row.finish("ok")


def _calibrate(
    ctx: RunContext, cell: Cell, cache: dict[str, CalibrationSamples], on_stage: OnStage
) -> list[list[int]] | None:
    if cell.calibration is None:
        return None
    on_stage("calibrate")
    return calibration.samples_for(cell.calibration, ctx.model.path, cache, ctx.cache_dir).token_ids


def _quantize_request(ctx: RunContext, cell: Cell) -> QuantizeRequest:
    device = ctx.hw.device if ctx.config.quantize.device == "auto" else ctx.config.quantize.device
    return QuantizeRequest(
        model_dir=ctx.model.path,
        params=cell.format,
        samples=None,  # filled by quantize.obtain after calibration, when it builds
        seq_len=cell.calibration.seq_len if cell.calibration else 0,
        out_dir=ctx.cache_dir,  # replaced by a staging directory
        device=device,
        ignore=ctx.ignore_extra.get(cell.format.id, ()),
    )


def compute_dtype(config: Config, cell: Cell) -> str:
    """The dtype the cell's engine computes in: its format's own (a baseline's, FP4's), else model.dtype."""
    return memory.engine_dtype(cell.format, config.model.dtype)


def _engine_request(ctx: RunContext, cell: Cell, artifact_path: Path) -> EngineRequest:
    return EngineRequest(
        model_dir=artifact_path,
        dtype=compute_dtype(ctx.config, cell),
        spec=cell.engine,
        device=ctx.hw.device,
        max_model_len=cell.engine.max_model_len or (cell.workload.input_len + cell.workload.output_len),
    )


def _planned(ctx: RunContext, cell: Cell, engine: Engine[Any], request: EngineRequest) -> dict[str, Any]:
    """The memory the cell's engine is planned to take (harness.plan.memory)."""
    return cell_plan.planned_columns(
        ctx.shape,
        cell.format,
        cell.engine.kv_dtype,
        _planned_batch(cell),
        cell.workload.input_len + cell.workload.output_len,
        ctx.hw,
        engine.parallelism(cell.engine),
        engine.settings(request),
        request.dtype,
    )


def _planned_batch(cell: Cell) -> int:
    """The most sequences the cell's engine holds at once: the offline batch, the highest
    concurrency, or (Poisson arrivals, unbounded) every request of a point."""
    batch = cell.workload.prompts
    if cell.serving is not None:
        batch = max(batch, *cell.serving.concurrency, cell.serving.requests if cell.serving.request_rates else 0)
    return batch


def failed_row(
    ctx: RunContext, cell: Cell, key: str, started: datetime, reason: str, stage: str | None
) -> dict[str, Any]:
    """The row of a cell that returned none (its process, worker or node died): who it was and why."""
    return finish(identity_columns(ctx, cell, key, started), started, "failed", reason, stage)


def identity_columns(ctx: RunContext, cell: Cell, key: str, started: datetime) -> dict[str, Any]:
    fmt = formats.get(cell.format.name)
    engine = engines.get(cell.engine.name)
    calib = cell.calibration
    ignored = list(fmt.ignored_modules(cell.format)) + list(ctx.ignore_extra.get(cell.format.id, ()))
    row: dict[str, Any] = {
        "run_id": ctx.run_id,
        "config_name": ctx.config.name,
        "config_path": str(ctx.config.path),
        "config_hash": ctx.config_hash,
        "cell_key": key,
        "cell_name": cell.name,
        "model_source": ctx.model.source,
        "model_identity": ctx.model.identity,
        "model_note": ctx.model.note or None,
        "model_synthetic": ctx.model.synthetic,
        "format": cell.format.name,
        "format_id": cell.format.id,
        "format_params": json.dumps(cell.format.model_dump(), sort_keys=True),
        "weight_bits": fmt.weight_bits,
        "activation_bits": fmt.activation_bits,
        "group_size": fmt.group_size(cell.format),
        "ignored_modules": json.dumps(ignored),
        "calibration_name": calib.name if calib else None,
        "calibration_domain": calib.resolved_domain if calib else None,
        "calibration_source": calib.source if calib else None,
        "calibration_samples": calib.samples if calib else None,
        "calibration_seq_len": calib.seq_len if calib else None,
        "calibration_seed": calib.seed if calib else None,
        "kv_cache_dtype": cell.engine.kv_dtype,
        "compute_dtype": compute_dtype(ctx.config, cell),
        "engine": cell.engine.name,
        "engine_version": engine.version(),
        "engine_speed_class": engine.speed_class,
        "workload_prompts": cell.workload.prompts,
        "workload_input_len": cell.workload.input_len,
        "workload_output_len": cell.workload.output_len,
        "workload_seed": cell.workload.seed,
        "parameters": ctx.parameters,
        "artifact_key": cell.artifact_key(ctx.model.identity, ctx.quantize_versions),
        "harness_git_sha": provenance.git_sha(),
        "packages": json.dumps(provenance.versions(), sort_keys=True),
        "started_at": started,
    }
    row.update(ctx.hw.as_row())
    row.update(provenance.host())
    return row


def finish(
    row: dict[str, Any], started: datetime, status: str, reason: str | None, stage: str | None
) -> dict[str, Any]:
    finished = now()
    if reason is not None:
        reason = " ".join(reason.split())[:2000]  # one line, whatever the engine printed
    row.update(
        status=status,
        reason=reason,
        failed_stage=stage,
        finished_at=finished,
        wall_s=(finished - started).total_seconds(),
    )
    return row
