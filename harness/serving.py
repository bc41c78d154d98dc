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
        with serve(launch, port, log_path, spec.startup_timeout_s) as server:
            columns["serving_startup_s"] = server.startup_s
            target = loadgen.Target(server.base_url, launch.model_name, launch.extra_body, spec.request_timeout_s)
            loadgen.warm_up(target, requests[: spec.warmup_requests])
            for level in spec.concurrency:
                points.append(loadgen.run_point(target, requests, spec.slo, concurrency=level, seed=spec.seed))
            for rate in spec.request_rates:
                points.append(loadgen.run_point(target, requests, spec.slo, rate=rate, seed=spec.seed))
            columns.update(serving_peak_rss_bytes=server.peak_rss_bytes, serving_peak_gpu_bytes=server.peak_gpu_bytes)
    except ServerError as exc:
        columns["serving"] = points or None
        raise ServingFailed(str(exc), columns) from exc
    columns["serving"] = points
    empty = [p for p in points if not p["completed"]]
    if empty:
        point = empty[0]
        where = f"concurrency {point['concurrency']}" if point["mode"] == "concurrency" else f"rate {point['request_rate']}/s"
        raise ServingFailed(f"no request completed at {where}: {point['error']}", columns)
    return columns
