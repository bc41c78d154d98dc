"""Run a config's cells: calibrate → quantize → serve + measure → record, one row per cell.

A cell that fails (crash, timeout, out of memory) or that the engine refuses on this
hardware becomes a row with its status and reason; the matrix goes on. Finished cells
(ok / unsupported) are skipped on a resume; their artifacts are reused from the cache.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from harness import artifacts, bench, calibration, cell_lock, cell_plan, engines, evaluate, formats, hardware, matrix, models, provenance, results, serving
from harness.artifacts import Artifact
from harness.calibration import CalibrationSamples
from harness.config import Config
from harness.engines.base import EngineRequest
from harness.errors import HarnessError
from harness.formats.base import QuantizeRequest
from harness.isolation import memory_limit_bytes, run_isolated
from harness.matrix import Cell

STAGES = ("calibrate", "quantize", "serve + measure", "serve under load", "evaluate", "record")


@dataclass
class RunSummary:
    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # cell keys already finished


@dataclass(frozen=True)
class _Context:
    config: Config
    out_dir: Path
    cache_dir: Path
    model: models.ResolvedModel
    hw: hardware.Hardware
    run_id: str
    config_hash: str
    quantize_versions: dict[str, str]
    ignore_extra: dict[str, tuple[str, ...]]  # format id → indivisible layers to leave unquantized
    parameters: int
    shape: Any  # harness.memory.ModelShape, or why the planner can't read the model (str)
    peak: Any  # harness.hardware.Peak of one device, or why there is none (str)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def preflight(config: Config, layers: list[tuple[str, int]]) -> dict[str, tuple[str, ...]]:
    """Check group sizes against the model's Linear layers before anything is calibrated."""
    extra: dict[str, tuple[str, ...]] = {}
    for index, params in enumerate(config.formats):
        fmt = formats.get(params.name)
        bad = fmt.indivisible_layers(params, layers)
        if not bad:
            continue
        if fmt.ignore_indivisible(params):
            extra[params.id] = tuple(name for name, _ in bad)
            continue
        size = fmt.group_size(params)
        dims = sorted({dim for _, dim in bad})
        working = [g for g in (128, 64, 32, 16) if all(dim % g == 0 for _, dim in layers)]
        hint = f"use group_size {working[0]}" if working else "use a smaller group_size"
        raise HarnessError(
            f"{config.path}: formats[{index}].group_size: {size} does not divide the input size {', '.join(map(str, dims))} "
            f"of {len(bad)} Linear layers (e.g. {bad[0][0]}); {hint}, or set ignore_indivisible: true to leave them unquantized"
        )
    return extra


def run(config: Config, console: Console | None = None) -> RunSummary:
    console = console or Console(stderr=True)
    hw = hardware.detect()
    cache_dir = config.cache_dir or models.default_cache_dir()
    out_dir = config.output
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(out_dir)
    with console.status(f"model {config.model.source}: resolving (the builtin is converted once, then cached)"):
        model = models.resolve(config.model.source, config.model.revision, cache_dir, dtype=config.model.dtype)
        layers = models.linear_layers(model.path)
    ctx = _Context(
        config=config,
        out_dir=out_dir,
        cache_dir=cache_dir,
        model=model,
        hw=hw,
        run_id=_now().strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6],
        config_hash=hashlib.sha256(config.path.read_bytes()).hexdigest()[:16],
        quantize_versions={k: v for k, v in provenance.versions().items() if k in provenance.QUANTIZE_PACKAGES},
        ignore_extra=preflight(config, layers),
        parameters=models.parameter_count(model.path),
        shape=cell_plan.load_model_shape(model.path),
        peak=device_peak(hw, cache_dir),
    )
    cells = matrix.expand(config)
    since = _now()  # a row another run writes from now on is not recomputed by this one
    done = results.finished(out_dir)
    results.merge_if_stale(out_dir)  # a run stopped between a row and its merge (full disk) left results.parquet behind
    samples_cache: dict[str, CalibrationSamples] = {}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        matrix_task = progress.add_task(f"[bold]{config.name}[/]: cells", total=len(cells))
        stage_task = progress.add_task("", total=len(STAGES), visible=False)

        def record(cell: Cell, row: dict[str, Any]) -> None:
            """The one place rows are written, in this (the driver's) process, whichever executor ran the cell."""
            results.write_row(out_dir, row)
            summary.rows.append(row)
            colour = {"ok": "green", "unsupported": "yellow"}.get(row["status"], "red")
            why = f": {row['reason']}" if row["reason"] else ""
            progress.console.print(f"[{colour}]{row['status']}[/] {cell.name}{why}")
            progress.advance(matrix_task)

        pending: list[tuple[Cell, str]] = []
        keyed = [(cell, cell.key(model.identity, ctx.quantize_versions, engines.get(cell.engine.name).version())) for cell in cells]
        # Each cell under its lock (harness.cell_lock): one another run on out_dir is computing comes last (a baseline:
        # waited for at once), and is skipped once that run has written its row.
        # (executor: ray takes each cell's lock itself, from its submission to its row, and never blocks on one)
        in_turn = cell_lock.in_turn(out_dir, keyed, wait_at_once=lambda cell: formats.get(cell.format.name).is_baseline,
                                    on_wait=lambda cell, key, holder: progress.console.print(f"[dim]wait {cell.name}: being computed by {holder}[/]"))
        for cell, key in (in_turn if config.executor == "local" else iter(keyed)):
            done_as = done.get(key) or results.row_status(out_dir, key, since)
            if done_as:
                summary.skipped.append(key)
                progress.console.print(f"[dim]skip {cell.name}: already {done_as} in {out_dir}[/]")
                progress.advance(matrix_task)
                continue
            if config.executor != "local":
                pending.append((cell, key))
                continue
            progress.reset(stage_task, total=len(STAGES), visible=True)
            row = run_cell(ctx, cell, key, lambda index, cell=cell: _stage(progress, stage_task, cell, index), samples_cache)
            progress.update(stage_task, description=f"  {cell.name}: record", completed=len(STAGES) - 1)
            record(cell, row)
            progress.advance(stage_task)
        if pending:  # executor: ray (harness.executor_ray): the same run_cell in Ray tasks, rows recorded here
            from harness import executor_ray

            def still_needed(cell: Cell, key: str) -> bool:  # asked again under the cell's lock, just before it is submitted
                done_as = results.row_status(out_dir, key, since)
                if done_as:
                    summary.skipped.append(key)
                    progress.console.print(f"[dim]skip {cell.name}: already {done_as} in {out_dir}[/]")
                    progress.advance(matrix_task)
                return not done_as

            executor_ray.run_cells(ctx, pending, record, progress, still_needed)
    return summary


def _stage(progress: Progress, task: Any, cell: Cell, index: int) -> None:
    progress.update(task, description=f"  {cell.name}: {STAGES[index]}", completed=index)


def run_cell(ctx: _Context, cell: Cell, key: str, stage: Callable[[int], None] | None = None,
             samples_cache: dict[str, CalibrationSamples] | None = None) -> dict[str, Any]:
    """One cell through every stage, in this process (its stages in isolated children): the
    row, not yet written. Both executors call it; `stage(i)` is told when STAGES[i] begins."""
    samples_cache = {} if samples_cache is None else samples_cache
    stage = stage or (lambda index: None)
    started = _now()
    fmt = formats.get(cell.format.name)
    logs = ctx.out_dir / "logs" / key
    row = _identity_row(ctx, cell, key, started)
    device = ctx.hw.device if ctx.config.quantize.device == "auto" else ctx.config.quantize.device
    artifact_key = cell.artifact_key(ctx.model.identity, ctx.quantize_versions)
    row["artifact_key"] = artifact_key
    row["parameters"] = ctx.parameters

    artifact: Artifact | None
    existing = fmt.existing_checkpoint(cell.format, ctx.model.path)
    if existing is not None:
        artifact = artifacts.existing(existing, artifact_key)
    else:
        artifact = artifacts.cached(ctx.cache_dir, artifact_key)
        if artifact is None:
            samples = None
            if cell.calibration is not None:
                stage(0)
                try:
                    samples = _samples(ctx, cell, samples_cache)
                except HarnessError as exc:
                    return _finish(row, started, "failed", str(exc), "calibrate")
            stage(1)
            request = QuantizeRequest(
                model_dir=ctx.model.path,
                params=cell.format,
                samples=samples.token_ids if samples else None,
                seq_len=cell.calibration.seq_len if cell.calibration else 0,
                out_dir=ctx.cache_dir,  # replaced by a staging directory
                device=device,
                ignore=ctx.ignore_extra.get(cell.format.id, ()),
            )
            artifact, outcome = artifacts.build(ctx.cache_dir, artifact_key, request, logs / "quantize.log", ctx.config.quantize.timeout_s,
                                                ctx.config.quantize.memory_limit_gib)
            if artifact is None:
                row.update(quantize_peak_rss_bytes=outcome.peak_rss_bytes, quantize_peak_gpu_bytes=outcome.peak_gpu_bytes)
                return _finish(row, started, "failed", f"quantize: {outcome.error}", "quantize")
    row.update(_artifact_columns(artifact, row["parameters"]))

    stage(2)
    engine = engines.get(cell.engine.name)
    request_engine = EngineRequest(
        model_dir=artifact.path,
        dtype=fmt.serving_dtype(cell.format) or ctx.config.model.dtype,
        spec=cell.engine,
        device=ctx.hw.device,
        max_model_len=cell.engine.max_model_len or (cell.workload.input_len + cell.workload.output_len),
    )
    settings = engine.settings(request_engine)
    row["engine_settings"] = json.dumps(settings, sort_keys=True)
    row["engine_env"] = json.dumps(engine.environment(request_engine), sort_keys=True)
    row.update(cell_plan.planned_columns(ctx.shape, cell.format, cell.engine.kv_cache_dtype, _planned_batch(cell),
                                         cell.workload.input_len + cell.workload.output_len, ctx.hw, settings))
    refusal = fmt.unsupported_reason(cell.format, ctx.hw)
    if refusal is not None:
        return _finish(row, started, "unsupported", refusal, "serve")
    log_path = logs / "engine.log"
    prompts = bench.make_prompts(ctx.model.path, cell.workload)
    outcome = run_isolated(bench.offline_throughput, (cell.engine.name, request_engine, prompts, cell.workload.output_len), log_path, cell.engine.timeout_s,
                           memory_limit_bytes(cell.engine.memory_limit_gib))
    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    row["kernels"] = "; ".join(engine.kernels(log_text))
    row.update(engine_peak_rss_bytes=outcome.peak_rss_bytes, engine_peak_gpu_bytes=outcome.peak_gpu_bytes)
    if not outcome.ok:
        # Killed by the harness (timeout, memory limit): not the engine's verdict on the format, whatever its log says.
        reason = None if outcome.timed_out or outcome.out_of_memory else engine.unsupported_reason(outcome.error or "", log_text)
        if reason is not None:
            return _finish(row, started, "unsupported", f"{engine.name} on {ctx.hw.device}: {reason}", "serve")
        return _finish(row, started, "failed", f"serve: {outcome.error}", "serve")
    measured: bench.OfflineMeasurement = outcome.value
    row.update(
        load_s=measured.load_s,
        generate_s=measured.generate_s,
        input_tokens=measured.input_tokens,
        output_tokens=measured.output_tokens,
        output_tok_s=measured.output_tok_s,
        total_tok_s=measured.total_tok_s,
        requests_per_s=measured.requests_per_s,
    )
    split = engine.memory_split(log_text)
    row.update(
        engine_weights_bytes=split.weights_bytes if split.weights_bytes is not None else measured.weights_bytes,
        engine_kv_cache_bytes=split.kv_cache_bytes,
        engine_kv_cache_tokens=split.kv_cache_tokens,
    )
    gpus = int(settings.get("tensor_parallel_size") or 1) * int(settings.get("pipeline_parallel_size") or 1)
    peak = ctx.peak.times(gpus) if not isinstance(ctx.peak, str) else ctx.peak
    row.update(cell_plan.roofline_columns(
        ctx.shape, cell.format, cell.engine.kv_cache_dtype, engine.concurrent_sequences(request_engine, cell.workload.prompts),
        cell.workload.input_len, cell.workload.output_len, peak, measured.output_tok_s,
    ))
    if cell.serving is not None:
        stage(3)
        if engine.server(request_engine, 0) is None:
            row["serving_note"] = f"{engine.name} has no server ({engine.speed_class} engine): no online figures"
        else:
            try:
                row.update(serving.run(engine, request_engine, cell.serving, cell.workload, ctx.model.path, logs / "server.log"))
            except serving.ServingFailed as exc:
                row.update(exc.columns)
                return _finish(row, started, "failed", f"serve under load: {exc}", "serve under load")
    if cell.evals is not None and ctx.model.synthetic:
        row["eval_note"] = "synthetic model (random weights): no quality figures"
    elif cell.evals is not None:
        stage(4)
        row.update(evaluate.run_stage(
            out_dir=ctx.out_dir, cache_dir=ctx.cache_dir, model_dir=ctx.model.path, model_identity=ctx.model.identity,
            spec=cell.evals, engine=cell.engine.name, engine_request=request_engine, is_baseline=fmt.is_baseline,
            log_path=logs / "evaluate.log",
        ))
        row.update(evaluate.recovery(row, ctx.out_dir))
    return _finish(row, started, "ok", None, None)


def failed_row(ctx: _Context, cell: Cell, key: str, started: datetime, reason: str, stage: str | None) -> dict[str, Any]:
    """The row of a cell that returned none (its process, worker or node died): who it was and why."""
    row = _identity_row(ctx, cell, key, started)
    row.update(artifact_key=cell.artifact_key(ctx.model.identity, ctx.quantize_versions), parameters=ctx.parameters)
    return _finish(row, started, "failed", reason, stage)


def device_peak(hw: hardware.Hardware, cache_dir: Path) -> Any:
    try:
        return hardware.peak_for(hw, cache_dir)
    except HarnessError as exc:
        return f"no roofline: {exc}"


def _planned_batch(cell: Cell) -> int:
    """The most sequences the cell's engine holds at once: the offline batch, the highest
    concurrency, or (Poisson arrivals, unbounded) every request of a point."""
    batch = cell.workload.prompts
    if cell.serving is not None:
        batch = max(batch, *cell.serving.concurrency, cell.serving.requests if cell.serving.request_rates else 0)
    return batch


def _samples(ctx: _Context, cell: Cell, cache: dict[str, CalibrationSamples]) -> CalibrationSamples:
    assert cell.calibration is not None
    if cell.calibration.name not in cache:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(ctx.model.path)
        cache[cell.calibration.name] = calibration.build_samples(cell.calibration, tokenizer)
    return cache[cell.calibration.name]


def _artifact_columns(artifact: Artifact, parameters: int) -> dict[str, Any]:
    return {
        "artifact_path": str(artifact.path),
        "artifact_bytes": artifact.bytes,
        "bits_per_weight": 8 * artifact.bytes / parameters if parameters else None,
        "artifact_reused": artifact.reused,
        "scheme": artifacts.describe_scheme(artifact.path),
        "quantize_s": artifact.quantize_s,
        "quantize_peak_rss_bytes": artifact.peak_rss_bytes,
        "quantize_peak_gpu_bytes": artifact.peak_gpu_bytes,
    }


def _identity_row(ctx: _Context, cell: Cell, key: str, started: datetime) -> dict[str, Any]:
    fmt = formats.get(cell.format.name)
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
        "kv_cache_dtype": cell.engine.kv_cache_dtype,
        "engine": cell.engine.name,
        "engine_version": engines.get(cell.engine.name).version(),
        "engine_speed_class": engines.get(cell.engine.name).speed_class,
        "workload_prompts": cell.workload.prompts,
        "workload_input_len": cell.workload.input_len,
        "workload_output_len": cell.workload.output_len,
        "workload_seed": cell.workload.seed,
        "harness_git_sha": provenance.git_sha(),
        "packages": json.dumps(provenance.versions(), sort_keys=True),
        "started_at": started,
    }
    row.update(ctx.hw.as_row())
    row.update(provenance.host())
    return row


def _finish(row: dict[str, Any], started: datetime, status: str, reason: str | None, stage: str | None) -> dict[str, Any]:
    finished = _now()
    if reason is not None:
        reason = " ".join(reason.split())[:2000]  # one line, whatever the engine printed
    row.update(status=status, reason=reason, failed_stage=stage, finished_at=finished, wall_s=(finished - started).total_seconds())
    return row
