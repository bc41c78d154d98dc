"""The online benchmark of one cell: its engine's server on 127.0.0.1, a warm-up, then one
load point per configured concurrency and Poisson rate (harness.stages.serving.loadgen).

Every point gets prompts of its own, and the warm-up prompts are never measured ones: servers
cache prefixes (vLLM by default), so a point that replays an earlier point's prompts finds most
of its prefill done and its TTFT looks several times too good. A prompts file with fewer lines
than the sweep needs repeats, and the row says so (`serving_prompts`)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.config import ServingSpec, WorkloadSpec
from harness.engines.base import Engine, EngineRequest
from harness.isolation import memory_limit_bytes
from harness.stages.base import StageStop
from harness.stages.serving import capacity, energy, loadgen, output_check
from harness.stages.serving.capacity import Capacity
from harness.stages.serving.server import ServerError, free_port, serve
from harness.stages.serving.slo import slo_json
from harness.stages.workload import make_prompts, read_prompts_file

STAGE = "serve under load"


@dataclass(frozen=True)
class ServingResult:
    """The sweep of one cell's server: the command, its start-up, one entry per load point."""

    server: str  # the server command line
    slo: str  # JSON {ttft_ms, tpot_ms, e2el_ms}
    prompts: str  # whether every point's prompts were its own
    startup_s: float | None
    points: list[dict[str, Any]]
    peak_rss_bytes: int | None
    peak_gpu_bytes: int | None
    capacity: Capacity | None = None
    usd_per_hour: float | None = None
    price_source: str | None = None  # where usd_per_hour comes from (harness.plan.prices)
    energy_note: str | None = None  # why no point has an energy figure
    warmup_s: float | None = None  # the warm-up requests' wall time

    def columns(self) -> dict[str, Any]:
        probes = self.capacity.probes if self.capacity is not None else []
        return {
            **output_check.verdict([*self.points, *probes]),
            **(self.capacity.columns(self.usd_per_hour) if self.capacity is not None else {}),
            **(
                {"usd_per_hour": self.usd_per_hour, "price_source": self.price_source}
                if self.capacity is not None
                else {}
            ),
            "serving": self.points or None,
            "serving_server": self.server,
            "serving_slo": self.slo,
            "serving_prompts": self.prompts,
            "serving_startup_s": self.startup_s,
            "serving_warmup_s": self.warmup_s,
            "serving_peak_rss_bytes": self.peak_rss_bytes,
            "serving_peak_gpu_bytes": self.peak_gpu_bytes,
            "serving_energy_note": self.energy_note,
        }


def no_server_note(engine: Engine[Any]) -> dict[str, Any]:
    """The columns of a cell whose engine has no server (a reference engine)."""
    return {"serving_note": f"{engine.name} has no server ({engine.speed_class} engine): no online figures"}


def build_requests(
    spec: ServingSpec, workload: WorkloadSpec, tokenizer_dir: Path, text_prompts: bool, count: int
) -> tuple[list[loadgen.LoadRequest], int]:
    """`count` requests: the workload's random-token prompts (decoded to text for a server that
    takes text only) or the prompts file's lines, in turn; output lengths from the workload,
    jittered when the config asks. Also how many distinct prompts there are."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if spec.prompts_file is not None:
        texts = read_prompts_file(Path(spec.prompts_file).expanduser())
        prompts: list[list[int] | str] = [texts[i % len(texts)] for i in range(count)]
        counts = [len(tokenizer(text)["input_ids"]) for text in prompts]
        distinct = min(len(set(texts)), count)
    else:
        ids = make_prompts(tokenizer_dir, workload.model_copy(update={"prompts": count}))
        prompts = [tokenizer.decode(p) for p in ids] if text_prompts else list(ids)
        counts = [len(p) for p in ids]
        distinct = len({tuple(p) for p in ids})
    rng = np.random.default_rng(spec.seed)
    jitter = spec.output_len_jitter
    low, high = max(1, round(workload.output_len * (1 - jitter))), max(1, round(workload.output_len * (1 + jitter)))
    lengths = rng.integers(low, high + 1, size=count) if jitter else [workload.output_len] * count
    return [loadgen.LoadRequest(p, int(n), c) for p, n, c in zip(prompts, lengths, counts)], distinct


@dataclass(frozen=True)
class SweepPrompts:
    warmup: list[loadgen.LoadRequest]
    points: list[list[loadgen.LoadRequest]]  # one list per sweep point, in sweep order
    note: str  # for the row: whether every point's prompts were its own


def sweep_prompts(
    spec: ServingSpec, workload: WorkloadSpec, tokenizer_dir: Path, text_prompts: bool, points: int
) -> SweepPrompts:
    """Warm-up prompts first, then spec.requests prompts per point, none sent twice where the
    source has enough (random-token prompts always do)."""
    total = spec.warmup_requests + points * spec.requests
    requests, distinct = build_requests(spec, workload, tokenizer_dir, text_prompts, total)
    warmup = requests[: spec.warmup_requests]
    per_point = [
        requests[spec.warmup_requests + i * spec.requests : spec.warmup_requests + (i + 1) * spec.requests]
        for i in range(points)
    ]
    if distinct >= total:
        note = f"fresh prompts: {total} distinct ({spec.warmup_requests} warm-up, {spec.requests} per point)"
    else:
        note = (
            f"prompts repeat: {distinct} distinct prompts for {total} requests ({spec.warmup_requests} warm-up, "
            f"{spec.requests} per point); a prefix-caching server finds repeated prefills cached"
        )
    return SweepPrompts(warmup, per_point, note)


def _sweep(spec: ServingSpec) -> list[dict[str, Any]]:
    return [{"concurrency": level} for level in spec.concurrency] + [{"rate": rate} for rate in spec.request_rates]


def all_prompts(spec: ServingSpec, workload: WorkloadSpec, tokenizer_dir: Path, text_prompts: bool) -> SweepPrompts:
    """The warm-up's and every point's prompts: the sweep's, then each capacity probe's."""
    probes = spec.capacity.max_probes if spec.capacity is not None else 0
    return sweep_prompts(spec, workload, tokenizer_dir, text_prompts, len(_sweep(spec)) + probes)


def output_check_requests(
    spec: ServingSpec, workload: WorkloadSpec, tokenizer_dir: Path
) -> list[tuple[list[int], int]]:
    """(prompt, tokens) of every request an output check will compare, in point order: the
    first `output_checks` of each point. None where the prompts are text (a prompts file): the
    server tokenizes those itself, so the offline engine would not answer the same ids."""
    if not spec.output_checks or spec.prompts_file is not None:
        return []
    prompts = all_prompts(spec, workload, tokenizer_dir, text_prompts=False)
    return [
        (list(r.prompt), r.max_tokens)
        for point in prompts.points
        for r in point[: spec.output_checks]
        if not isinstance(r.prompt, str)
    ]


Inspect = Callable[[list[loadgen.RequestResult]], dict[str, Any]]


def _checks(
    references: tuple[tuple[int, ...], ...] | None, per_point: int, tokenizer_dir: Path
) -> Callable[[int], Inspect | None]:
    """For load point `index` (sweep points, then capacity probes): what compares its first
    requests with their offline greedy answers (None: no output checks)."""
    if not references or not per_point:
        return lambda index: None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def decode(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(ids), skip_special_tokens=False))

    def for_point(index: int) -> Inspect:
        mine = references[index * per_point : (index + 1) * per_point]

        def inspect(results: list[loadgen.RequestResult]) -> dict[str, Any]:
            done = [(r, ref) for r, ref in zip(results, mine) if r.ok]  # a failed request is the point's error
            checks = [output_check.check(ref, r.text, decode) for r, ref in done]
            return {"output_check": output_check.point_summary(checks, [len(ref) for _, ref in done])}

        return inspect

    return for_point


def measure(
    engine: Engine[Any],
    request: EngineRequest,
    spec: ServingSpec,
    workload: WorkloadSpec,
    tokenizer_dir: Path,
    log_path: Path,
    references: tuple[tuple[int, ...], ...] | None = None,
    price: tuple[float | None, str] = (None, "no price"),
) -> ServingResult:
    """The online benchmark of the cell's artifact. Raises StageStop (failed) with what was
    measured before the server broke or a point got no answer. `references`: the offline
    engine's greedy answers to output_check_requests (None: no output checks); `price`: the
    machine's $/hour and its source (harness.plan.prices), for the cost at capacity."""
    port = spec.port or free_port()
    launch = engine.server(request, port, slots=max(spec.concurrency, default=1))
    sweep = _sweep(spec)
    prompts = all_prompts(spec, workload, tokenizer_dir, launch.text_prompts)
    result = ServingResult(shlex.join(launch.argv), slo_json(spec.slo), prompts.note, None, [], None, None)
    points: list[dict[str, Any]] = []
    try:
        with serve(
            launch, port, log_path, spec.startup_timeout_s, memory_limit_bytes(request.spec.memory_limit_gib)
        ) as server:
            result = replace(result, startup_s=server.startup_s)
            target = loadgen.Target(server.base_url, launch.model_name, launch.extra_body, spec.request_timeout_s)
            if prompts.warmup:  # not measured; a server that answers none of them is not swept
                warm_start = time.perf_counter()
                warm = loadgen.run_point(target, prompts.warmup, spec.slo, concurrency=1)
                result = replace(result, warmup_s=time.perf_counter() - warm_start)
                if not warm["completed"]:
                    raise ServerError(f"warm-up: {_no_answer(warm, spec, server.memory_error)}")
            checks = _checks(references, min(spec.output_checks, spec.requests), tokenizer_dir)
            meter = energy.EnergyMeter.open()
            if meter is None:
                result = replace(result, energy_note=energy.NONE_MEASURED)

            def metered(index: int, requests: list[loadgen.LoadRequest], **point_args: Any) -> dict[str, Any]:
                before = meter.joules() if meter else None
                point = loadgen.run_point(
                    target, requests, spec.slo, seed=spec.seed, inspect=checks(index), **point_args
                )
                after = meter.joules() if meter else None
                return {**point, **energy.point_columns(before, after, point["output_tokens"])}

            for index, (point_args, requests) in enumerate(zip(sweep, prompts.points)):
                points.append(metered(index, requests, **point_args))
                if not points[-1]["completed"]:  # a dead or hung server: the next points would only wait longer
                    break
            if spec.capacity is not None and all(p["completed"] for p in points):
                unused = iter(enumerate(prompts.points[len(sweep) :], start=len(sweep)))  # each probe its own prompts

                def probe(rate: float) -> dict[str, Any]:
                    index, requests = next(unused)
                    return metered(index, requests, rate=rate)

                alone = next((p for p in points if p["mode"] == "concurrency" and p["concurrency"] == 1), None)
                found = capacity.search(probe, spec.capacity, alone)
                result = replace(result, capacity=found, usd_per_hour=price[0], price_source=price[1])
            result = replace(result, peak_rss_bytes=server.peak_rss_bytes, peak_gpu_bytes=server.peak_gpu_bytes)
            if server.memory_error is not None:  # killed during the sweep: its points are not the server's
                raise ServerError(f"{server.memory_error} (the server was killed under load)")
    except ServerError as exc:
        raise StageStop("failed", f"serve under load: {exc}", STAGE, replace(result, points=points).columns()) from exc
    result = replace(result, points=points)
    empty = [p for p in points if not p["completed"]]
    if empty:
        point = empty[0]
        where = (
            f"concurrency {point['concurrency']}"
            if point["mode"] == "concurrency"
            else f"rate {point['request_rate']}/s"
        )
        raise StageStop(
            "failed",
            f"serve under load: no request completed at {where}: {_no_answer(point, spec, None)}",
            STAGE,
            result.columns(),
        )
    return result


def _no_answer(point: dict[str, Any], spec: ServingSpec, memory_error: str | None) -> str:
    """Why no request of a point completed, in words."""
    if memory_error is not None:
        return memory_error
    error = point["error"] or "no request completed"
    if error.startswith("TimeoutError"):  # aiohttp's total timeout: the server took the request and never finished it
        return f"no answer within serving.request_timeout_s = {spec.request_timeout_s} s (server hung)"
    return error
