"""`executor: ray`: a run's cells fanned out over a Ray cluster, one cell per task.

The driver (`harness run`) expands the matrix, skips finished cells and records every row, as
with the local executor; only `harness.cell.run_cell` runs in the Ray worker, with the same
picklable run context (its stages still in isolated children of that worker). A cell holds
tensor_parallel_size x pipeline_parallel_size GPUs of one node on a GPU cluster, or (CPU)
every CPU of the cluster's smallest node, so CPU cells never share cores; `ray:` in the config
overrides both. A cell whose worker process or node dies is run again elsewhere by Ray
(max_retries, default 1), then recorded as a failed row with Ray's own words.

Scheduling rule the driver keeps: cells that would build the same artifact run one after another,
so it is built once. (No cell waits for another's results: relative figures are the compare
pass's, after the cells.) On a multi-node cluster the cache and
output directories must be one shared filesystem, at the same path on every node (the model,
artifacts, calibration text, logs and baseline logits are read and written there); a node that
does not see them fails its cell saying so.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from datetime import datetime, timezone
from typing import Any, Callable

from harness import cell_lock, engines, formats, hardware
from harness.cell import RunContext, device_peak, failed_row, run_cell
from harness.config import RaySpec
from harness.errors import HarnessError
from harness.executors.base import Record, StillNeeded
from harness.matrix import Cell
from harness.params import EngineParams
from harness.progress import RunProgress
from harness.stages import quantize as artifacts

#: per cell, in its log directory: one line per attempt (time, host, worker pid)
ATTEMPTS_LOG = "executor.log"
#: environment variables the driver hands to the workers (a `ray start` cluster has its own)
_FORWARDED_ENV = ("HARNESS_", "HF_", "VLLM_")
_SAMPLES: dict[str, Any] = {}  # calibration samples, per worker process


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise HarnessError(
            "executor: ray needs the ray package: ./scripts/setup installs it (unless HARNESS_RAY=0), "
            "or `pip install -r requirements/ray.txt`"
        ) from None
    return ray


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- in the Ray worker --------------------------------------------------------------------


def cell_task(ctx: RunContext, cell: Cell, key: str) -> dict[str, Any]:
    """One attempt at a cell in a Ray worker: the row, for the driver to record."""
    started = _now()
    problem = _unshared(ctx)
    if problem is not None:
        return failed_row(ctx, cell, key, started, problem, "executor")
    log = ctx.out_dir / "logs" / key / ATTEMPTS_LOG
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{started.isoformat()} attempt on {platform.node()} pid {os.getpid()}\n")
    except OSError:  # a full or read-only disk is the cell's stages' to report, not this note's
        pass
    hw = hardware.detect()  # this node's, not the driver's: it decides cpu or cuda for every stage
    if hw != ctx.hw:
        ctx = dataclasses.replace(ctx, hw=hw, peak=device_peak(hw, ctx.cache_dir))
    return run_cell(ctx, cell, key, None, _SAMPLES)


def _unshared(ctx: RunContext) -> str | None:
    missing = [str(p) for p in (ctx.model.path, ctx.out_dir) if not p.exists()]
    if not missing:
        return None
    return (
        f"ray: node {platform.node()} does not see {', '.join(missing)}: on a multi-node cluster the cache "
        "and output directories must be on a filesystem shared by every node, at the same path"
    )


# --- in the driver --------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
    cell: Cell
    key: str
    artifact_key: str
    builds: bool  # its artifact is neither cached nor the model itself: it will quantize
    cpus: float
    gpus: float
    submitted: datetime | None = None
    lock: Any = None  # harness.cell_lock.FileLock, held from submission to the recorded row
    told_waiting: bool = False  # another run held the cell's lock when it was first due

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to the cluster at `address`, or start one on this machine for the run when it is
    None (never a cluster found by chance: Ray's own None would join the latest `ray start`
    cluster); True when this run started it. A driver already connected (ray.init) is used as is."""
    if ray.is_initialized():
        return False
    env = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV)}
    kwargs: dict[str, Any] = {"address": address or "local", "log_to_driver": False, "runtime_env": {"env_vars": env}}
    if address is None:  # a cluster for this run only
        kwargs["include_dashboard"] = False
    import logging
    import warnings

    with warnings.catch_warnings():  # a tip about a future default for num_gpus=0 tasks: cells on GPU nodes hold GPUs
        warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", category=FutureWarning)
        ray.init(logging_level=logging.WARNING, **kwargs)
    return True


def _nodes(ray: Any) -> list[dict[str, float]]:
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def resources(spec: RaySpec, engine: EngineParams, nodes: list[dict[str, float]]) -> tuple[float, float]:
    """(CPUs, GPUs) a cell on `engine` holds, given the cluster's live nodes' resources."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) > 0]
    if spec.num_gpus_per_cell is not None:
        gpus = spec.num_gpus_per_cell
    elif gpu_nodes:
        gpus = float(engines.get(engine.name).parallelism(engine).devices)
    else:
        gpus = 0.0
    if spec.num_cpus_per_cell is not None:
        cpus = spec.num_cpus_per_cell
    elif gpus and gpu_nodes:  # the node's CPUs shared out by GPU: quantization and loading use them
        cpus = max(1.0, float(int(min(n.get("CPU", 1) / n["GPU"] for n in gpu_nodes) * gpus)))
    else:  # a CPU cell: a whole node, so no two cells share cores
        cpus = max(1.0, min((n.get("CPU", 1) for n in nodes), default=1.0))
    return cpus, gpus


def fits(cpus: float, gpus: float, nodes: list[dict[str, float]]) -> bool:
    """Whether one node can hold a cell: a cell never spans nodes (vLLM's tensor/pipeline
    parallel workers of a cell run on the node its task runs on)."""
    return any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes)


def _attempts(ctx: RunContext, key: str) -> list[str]:
    log = ctx.out_dir / "logs" / key / ATTEMPTS_LOG
    return log.read_text(encoding="utf-8").splitlines() if log.is_file() else []


def _failure(ray: Any, exc: BaseException, attempts: int, max_retries: int) -> str:
    if isinstance(exc, ray.exceptions.RayTaskError):  # the cell's own code raised: not retried
        cause = getattr(exc, "cause", None) or exc
        return f"ray: the cell raised {type(cause).__name__}: {cause}"
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}" if attempts else "its attempts"
    return f"ray: the cell's worker died ({tries}; max_retries {max_retries}): {type(exc).__name__}: {exc}"


class Order:
    """Which waiting cells may start: of the cells that need the same artifact not yet built,
    one at a time (it is built once); every other cell at once."""

    def __init__(self, jobs: list[_Job], unbuilt: Callable[[str], bool]) -> None:
        self.waiting = jobs  # the caller's list: it removes the jobs it starts
        self.unbuilt = unbuilt  # artifact key -> not in the cache yet
        self.building: set[str] = set()

    def ready(self, job: _Job) -> bool:
        return not (job.builds and job.artifact_key in self.building)

    def started(self, job: _Job) -> None:
        if job.builds:
            self.building.add(job.artifact_key)

    def finished(self, job: _Job) -> None:
        """`job` ended (or was skipped): what waited on it may start."""
        self.building.discard(job.artifact_key)
        for other in self.waiting:  # built now (or failed: the next cell of that artifact tries again)
            if other.artifact_key == job.artifact_key:
                other.builds = self.unbuilt(other.artifact_key)


def run_cells(
    ctx: RunContext, pending: list[tuple[Cell, str]], record: Record, progress: RunProgress, still_needed: StillNeeded
) -> None:
    """Run `pending` (cell, key) pairs as Ray tasks; `record(cell, row)` is called here, in the
    driver, once per cell, as each one ends. Each cell's lock (harness.cell_lock) is held by
    this process from its submission to its row: a cell another run on the same output
    directory holds waits, and is asked about again (`still_needed`: False when that run
    wrote its row meanwhile, which then skips it) once its lock is free."""
    ray = _ray()
    spec = ctx.config.ray
    owned = _connect(ray, spec.address)
    running: dict[Any, _Job] = {}
    try:
        nodes = _nodes(ray)
        # Absolute paths: a worker's working directory is not the driver's
        context_ref = ray.put(
            dataclasses.replace(
                ctx,
                out_dir=ctx.out_dir.absolute(),
                cache_dir=ctx.cache_dir.absolute(),
                model=dataclasses.replace(ctx.model, path=ctx.model.path.absolute()),
            )
        )
        task = ray.remote(cell_task)
        jobs: list[_Job] = []
        for cell, key in pending:
            fmt = formats.get(cell.format.name)
            artifact_key = cell.artifact_key(ctx.model.identity, ctx.quantize_versions)
            builds = (
                fmt.existing_checkpoint(cell.format, ctx.model.path) is None
                and artifacts.cached(ctx.cache_dir, artifact_key, verify=False) is None
            )
            cpus, gpus = resources(spec, cell.engine, nodes)
            job = _Job(cell, key, artifact_key, builds, cpus, gpus)
            if not fits(cpus, gpus, nodes):
                shape = ", ".join(f"{n.get('CPU', 0):g} CPUs {n.get('GPU', 0):g} GPUs" for n in nodes) or "no live node"
                record(
                    cell,
                    failed_row(
                        ctx,
                        cell,
                        key,
                        _now(),
                        (
                            f"ray: no node of the cluster has {cpus:g} CPUs and {gpus:g} GPUs for this cell "
                            "(tensor_parallel_size x pipeline_parallel_size = "
                            f"{engines.get(cell.engine.name).parallelism(cell.engine).devices}; "
                            f"ray.num_gpus_per_cell / num_cpus_per_cell override); nodes: {shape}"
                        ),
                        "executor",
                    ),
                )
                continue
            jobs.append(job)
        order = Order(jobs, lambda artifact_key: artifacts.cached(ctx.cache_dir, artifact_key, verify=False) is None)
        queue = progress.add_task("  ray", total=None)

        def claim(job: _Job) -> bool:
            """Take the cell's lock without waiting; say once that another run holds it."""
            lock = cell_lock.cell_lock(ctx.out_dir, job.key)
            if lock.acquire(wait=False):
                job.lock = lock
                return True
            if not job.told_waiting:
                job.told_waiting = True
                progress.say(f"[dim]wait {job.cell.name}: being computed by {lock.holder()}[/]")
            return False

        while jobs or running:
            for job in [j for j in jobs if order.ready(j)]:
                if not claim(job):
                    continue
                jobs.remove(job)
                if not still_needed(job.cell, job.key):  # another run may have written its row meanwhile
                    job.release()
                    order.finished(job)
                    continue
                order.started(job)
                job.submitted = _now()
                options = {
                    "num_cpus": job.cpus,
                    "num_gpus": job.gpus,
                    "max_retries": spec.max_retries,
                    "retry_exceptions": False,
                    "name": f"harness-cell {job.cell.name}",
                }
                running[task.options(**options).remote(context_ref, job.cell, job.key)] = job
            progress.update(queue, description=f"  ray: {len(running)} cells running, {len(jobs)} waiting")
            if not running:  # every waiting cell is held by another run: look again in a while
                time.sleep(1.0)
                continue
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in done:
                job = running.pop(ref)
                order.finished(job)
                attempts = _attempts(ctx, job.key)
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    row = failed_row(
                        ctx,
                        job.cell,
                        job.key,
                        job.submitted or _now(),
                        _failure(ray, exc, len(attempts), spec.max_retries),
                        "executor",
                    )
                else:
                    if len(attempts) > 1:
                        progress.say(
                            f"[yellow]ray: {job.cell.name} ran {len(attempts)} times (its worker died "
                            f"{len(attempts) - 1}x): {'; '.join(attempts)}[/]"
                        )
                try:
                    record(job.cell, row)
                finally:
                    job.release()
        progress.update(queue, visible=False)
    finally:
        for ref, job in running.items():  # Ctrl-C or a failed write: don't leave cells running on the cluster
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone
                pass
            job.release()
        if owned:
            ray.shutdown()
