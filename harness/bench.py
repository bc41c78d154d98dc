"""Offline throughput: a fixed, seeded prompt set through an engine, end-of-sequence ignored."""

from __future__ import annotations

import time
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import engines
from harness.config import WorkloadSpec
from harness.engines.base import EngineRequest


@dataclass(frozen=True)
class OfflineMeasurement:
    load_s: float
    generate_s: float
    prompts: int
    input_tokens: int
    output_tokens: int
    output_tok_s: float
    total_tok_s: float
    requests_per_s: float
    weights_bytes: int | None  # as the engine loaded them (None: it can't say)


@lru_cache(maxsize=8)  # every cell of a model shares them: tokenizer loaded once per run
def make_prompts(tokenizer_dir: Path, workload: WorkloadSpec) -> list[list[int]]:
    """Random token ids (special tokens excluded), seeded: the same prompts for every cell
    of a model, exactly input_len tokens each, as vLLM's own random benchmark dataset."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    special = set(tokenizer.all_special_ids)
    allowed = np.array([i for i in range(len(tokenizer)) if i not in special])
    rng = np.random.default_rng(workload.seed)
    return [rng.choice(allowed, size=workload.input_len).tolist() for _ in range(workload.prompts)]


def offline_throughput(engine_name: str, request: EngineRequest, prompts: list[list[int]], output_len: int) -> OfflineMeasurement:
    """Runs inside an isolated process (harness.isolation). The prompts come from the source
    model's tokenizer (a GGUF artifact has none of its own), the same for every cell."""
    engine = engines.get(engine_name)
    start = time.perf_counter()
    with engine.start(request) as session:
        load_s = time.perf_counter() - start
        session.generate(prompts[:1], 4)  # warm-up: first-call allocations are not throughput
        result = session.generate(prompts, output_len)
        weights_bytes = session.weights_bytes()
    return OfflineMeasurement(
        load_s=load_s,
        generate_s=result.seconds,
        prompts=result.prompts,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        output_tok_s=result.output_tokens / result.seconds,
        total_tok_s=(result.input_tokens + result.output_tokens) / result.seconds,
        requests_per_s=result.prompts / result.seconds,
        weights_bytes=weights_bytes,
    )
