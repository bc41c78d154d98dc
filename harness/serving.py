"""The online benchmark of one cell: its engine's server on 127.0.0.1, a warm-up, then one
load point per configured concurrency and Poisson rate (harness.loadgen)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from harness import bench, loadgen
from harness.config import ServingSpec, WorkloadSpec
from harness.engines.base import Engine, EngineRequest
from harness.errors import HarnessError
from harness.isolation import memory_limit_bytes
from harness.server import ServerError, free_port, serve


class ServingFailed(RuntimeError):
    """The server did not come up, or no request of a point completed."""

    def __init__(self, reason: str, columns: dict[str, Any]) -> None:
        super().__init__(reason)
        self.columns = columns  # what was measured before it failed


def read_prompts_file(path: Path) -> list[str]:
    """A prompt per non-empty line, or JSONL objects with a "prompt" field."""
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                prompts.append(str(json.loads(line)["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise HarnessError(f"{path}:{number}: a JSONL prompt line is an object with a \"prompt\" field") from None
        else:
            prompts.append(line.replace("\\n", "\n"))
    if not prompts:
        raise HarnessError(f"{path}: no prompts in the file")
    return prompts


def build_requests(spec: ServingSpec, workload: WorkloadSpec, tokenizer_dir: Path, text_prompts: bool) -> list[loadgen.LoadRequest]:
    """spec.requests requests: the workload's random-token prompts (decoded to text for a server
    that takes text only) or the prompts file's lines, in turn; output lengths from the workload,
    jittered when the config asks."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if spec.prompts_file is not None:
        texts = read_prompts_file(Path(spec.prompts_file).expanduser())
        prompts: list[list[int] | str] = [texts[i % len(texts)] for i in range(spec.requests)]
        counts = [len(tokenizer(text)["input_ids"]) for text in prompts]
    else:
        ids = bench.make_prompts(tokenizer_dir, workload.model_copy(update={"prompts": spec.requests}))
        prompts = [tokenizer.decode(p) for p in ids] if text_prompts else list(ids)
        counts = [len(p) for p in ids]
    rng = np.random.default_rng(spec.seed)
    jitter = spec.output_len_jitter
    low, high = max(1, round(workload.output_len * (1 - jitter))), max(1, round(workload.output_len * (1 + jitter)))
    lengths = rng.integers(low, high + 1, size=spec.requests) if jitter else [workload.output_len] * spec.requests
    return [loadgen.LoadRequest(p, int(n), c) for p, n, c in zip(prompts, lengths, counts)]


def run(engine: Engine, request: EngineRequest, spec: ServingSpec, workload: WorkloadSpec, tokenizer_dir: Path, log_path: Path) -> dict[str, Any]:
    """Row columns of the online benchmark (serving, serving_*). Raises ServingFailed."""
    port = spec.port or free_port()
    launch = engine.server(request, port)
    if launch is None:
        raise ValueError(f"engine {engine.name} has no server")
    columns: dict[str, Any] = {
        "serving_server": shlex.join(launch.argv),
        "serving_slo": json.dumps(spec.slo.model_dump(), sort_keys=True),
    }
    requests = build_requests(spec, workload, tokenizer_dir, launch.text_prompts)
    points: list[dict[str, Any]] = []
    try:
        with serve(launch, port, log_path, spec.startup_timeout_s, memory_limit_bytes(request.spec.memory_limit_gib)) as server:
            columns["serving_startup_s"] = server.startup_s
            target = loadgen.Target(server.base_url, launch.model_name, launch.extra_body, spec.request_timeout_s)
            if spec.warmup_requests:  # not measured; a server that answers none of them is not swept
                warm = loadgen.run_point(target, requests[: spec.warmup_requests], spec.slo, concurrency=1)
                if not warm["completed"]:
                    raise ServerError(f"warm-up: {_no_answer(warm, spec, server.memory_error)}")
            sweep = [{"concurrency": level} for level in spec.concurrency] + [{"rate": rate} for rate in spec.request_rates]
            for point_args in sweep:
                points.append(loadgen.run_point(target, requests, spec.slo, seed=spec.seed, **point_args))
                if not points[-1]["completed"]:  # a dead or hung server: the next points would only wait longer
                    break
            columns.update(serving_peak_rss_bytes=server.peak_rss_bytes, serving_peak_gpu_bytes=server.peak_gpu_bytes)
            if server.memory_error is not None:  # killed during the sweep: its points are not the server's
                raise ServerError(f"{server.memory_error} (the server was killed under load)")
    except ServerError as exc:
        columns["serving"] = points or None
        raise ServingFailed(str(exc), columns) from exc
    columns["serving"] = points
    empty = [p for p in points if not p["completed"]]
    if empty:
        point = empty[0]
        where = f"concurrency {point['concurrency']}" if point["mode"] == "concurrency" else f"rate {point['request_rate']}/s"
        raise ServingFailed(f"no request completed at {where}: {_no_answer(point, spec, None)}", columns)
    return columns


def _no_answer(point: dict[str, Any], spec: ServingSpec, memory_error: str | None) -> str:
    """Why no request of a point completed, in words."""
    if memory_error is not None:
        return memory_error
    error = point["error"] or "no request completed"
    if error.startswith("TimeoutError"):  # aiohttp's total timeout: the server took the request and never finished it
        return f"no answer within serving.request_timeout_s = {spec.request_timeout_s} s (server hung)"
    return error
