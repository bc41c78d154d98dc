"""Offline throughput: a fixed, seeded prompt set through an engine, end-of-sequence ignored."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.engines.base import Engine, EngineRequest, MemorySplit
from harness.isolation import memory_limit_bytes, run_isolated
from harness.stages.base import StageStop


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
    repeat_tok_s: tuple[float, ...] = ()  # each repeat's output tok/s (workload.repeats > 1)
    # greedy answers to the output checks' prompts (harness.stages.serving.output_check); None: none asked,
    # or the engine can't
    greedy: tuple[tuple[int, ...], ...] | None = None
    greedy_s: float | None = None  # seconds those greedy answers took (work beside the measured generation)

    def columns(self) -> dict[str, Any]:
        return {
            "load_s": self.load_s,
            "generate_s": self.generate_s,
            "output_check_reference_s": self.greedy_s,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "output_tok_s": self.output_tok_s,
            "total_tok_s": self.total_tok_s,
            "requests_per_s": self.requests_per_s,
            "output_tok_s_repeats": json.dumps(list(self.repeat_tok_s)) if len(self.repeat_tok_s) > 1 else None,
        }


@dataclass(frozen=True)
class OfflineResult:
    """The offline stage as the parent saw it: the measurement, and what the engine's log said."""

    measurement: OfflineMeasurement
    kernels: list[str]
    split: MemorySplit
    peak_rss_bytes: int
    peak_gpu_bytes: int | None

    def columns(self) -> dict[str, Any]:
        weights = self.split.weights_bytes if self.split.weights_bytes is not None else self.measurement.weights_bytes
        return {
            **self.measurement.columns(),
            "kernels": "; ".join(self.kernels),
            "engine_peak_rss_bytes": self.peak_rss_bytes,
            "engine_peak_gpu_bytes": self.peak_gpu_bytes,
            "engine_weights_bytes": weights,
            "engine_kv_cache_bytes": self.split.kv_cache_bytes,
            "engine_kv_cache_tokens": self.split.kv_cache_tokens,
        }


#: ggml types that are not a quantization (norms, embeddings kept wide)
_WIDE_GGML = {"f32", "f16", "bf16"}


def kernel_columns(expected: tuple[str, ...], kernels: list[str]) -> dict[str, Any]:
    """Whether the cell ran on the kernels its format is made for (formats/base.py,
    expected_kernels): every linear-kernel class vLLM logged is an expected one; for llama.cpp,
    the most common quantized tensor type is the format's own. None: no expectation."""
    if not expected:
        return {"kernel_expected": None, "kernels_expected": None}
    counts: dict[str, int] = {}
    for line in kernels:
        if line.startswith("ggml "):  # "ggml q4_K x16"
            kind, _, count = line[5:].rpartition(" x")
            if kind not in _WIDE_GGML and count.isdigit():
                counts[f"ggml {kind}"] = int(count)
    if counts:
        ran = [max(counts, key=lambda kind: counts[kind])]
    else:
        ran = [name for name in (line.split(" for ")[0] for line in kernels) if name.endswith("Kernel")]
    ok = bool(ran) and all(name in expected for name in ran)
    return {"kernel_expected": ok, "kernels_expected": "; ".join(expected)}


def measure(
    engine: Engine[Any],
    request: EngineRequest,
    prompts: list[list[int]],
    output_len: int,
    log_path: Path,
    device: str,
    repeats: int = 1,
    greedy: list[tuple[list[int], int]] | None = None,
) -> OfflineResult:
    """Offline throughput of the cell's artifact, in an isolated child. Raises StageStop: the
    engine refused the format on this hardware (unsupported, in its own words) or broke (failed).
    `greedy`: (prompt, tokens) whose greedy answers the output checks under load compare with."""
    outcome = run_isolated(
        offline_throughput,
        (engine, request, prompts, output_len, repeats, greedy or []),
        log_path,
        request.spec.timeout_s,
        memory_limit_bytes(request.spec.memory_limit_gib),
    )
    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    kernels = engine.kernels(log_text)
    if not outcome.ok:
        seen = {
            "kernels": "; ".join(kernels),
            "engine_peak_rss_bytes": outcome.peak_rss_bytes,
            "engine_peak_gpu_bytes": outcome.peak_gpu_bytes,
        }
        # Killed by the harness (timeout, memory limit): not the engine's verdict on the format, whatever its log says.
        reason = (
            None
            if outcome.timed_out or outcome.out_of_memory
            else engine.unsupported_reason(outcome.error or "", log_text)
        )
        if reason is not None:
            raise StageStop("unsupported", f"{engine.name} on {device}: {reason}", "serve", seen)
        raise StageStop("failed", f"serve: {outcome.error}", "serve", seen)
    return OfflineResult(
        outcome.value, kernels, engine.memory_split(log_text), outcome.peak_rss_bytes, outcome.peak_gpu_bytes
    )


def offline_throughput(
    engine: Engine[Any],
    request: EngineRequest,
    prompts: list[list[int]],
    output_len: int,
    repeats: int = 1,
    greedy: list[tuple[list[int], int]] | None = None,
) -> OfflineMeasurement:
    """Runs inside an isolated process (harness.isolation). The prompts come from the source
    model's tokenizer (a GGUF artifact has none of its own), the same for every cell. With
    repeats > 1 the same work runs that many times on the one load; the figures are their mean."""
    start = time.perf_counter()
    with engine.start(request) as session:
        load_s = time.perf_counter() - start
        session.generate(prompts[:1], 4)  # warm-up: first-call allocations are not throughput
        results = [session.generate(prompts, output_len) for _ in range(repeats)]
        greedy_start = time.perf_counter()
        answers = session.greedy([p for p, _ in greedy], [n for _, n in greedy]) if greedy else None
        greedy_s = time.perf_counter() - greedy_start if answers is not None else None
        weights_bytes = session.weights_bytes()
    result = results[0]
    seconds = sum(r.seconds for r in results) / len(results)
    return OfflineMeasurement(
        load_s=load_s,
        generate_s=seconds,
        prompts=result.prompts,
        input_tokens=result.input_tokens,
        output_tokens=result.output_tokens,
        output_tok_s=sum(r.output_tokens / r.seconds for r in results) / len(results),
        total_tok_s=(result.input_tokens + result.output_tokens) / seconds,
        requests_per_s=result.prompts / seconds,
        weights_bytes=weights_bytes,
        repeat_tok_s=tuple(r.output_tokens / r.seconds for r in results),
        greedy=None if answers is None else tuple(tuple(a) for a in answers),
        greedy_s=greedy_s,
    )
