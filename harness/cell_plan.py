"""What a cell should cost by the book, written beside what it measured: the memory plan
(harness.memory) and the roofline (harness.roofline) of its model, format, KV dtype and load."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness import gpus, memory, roofline
from harness.config import FormatParams
from harness.errors import HarnessError
from harness.hardware import Hardware, Peak

# vLLM's offline LLM class batches at most this many tokens per step below 70 GiB of device
# memory (and on CPU); harness.memory.default_batched_tokens gives the GPU figures.
_SMALL_DEVICE_BATCHED_TOKENS = 8192


def gpu_of(hw: Hardware) -> gpus.Gpu | None:
    """The datasheet entry of this machine's GPU, matched by the name NVML reports."""
    if hw.device != "cuda":
        return None
    return next((g for g in gpus.GPUS.values() if g.product == hw.name), None)


def load_model_shape(model_dir: Path) -> memory.ModelShape | str:
    """The model's shape, or why the planner can't read it."""
    try:
        return memory.ModelShape.from_config(model_dir / "config.json")
    except (HarnessError, KeyError, OSError, ValueError) as exc:
        return f"no plan: the planner can't read {model_dir / 'config.json'} ({exc})"


def planned_columns(shape: memory.ModelShape | str, params: FormatParams, kv_dtype: str, batch: int, context: int,
                    hw: Hardware, settings: dict[str, Any]) -> dict[str, Any]:
    """planned_* columns: weights + KV cache for `batch` sequences of `context` tokens +
    activations, and the capacity the engine may fill (GPU memory x utilization, or host memory)."""
    columns: dict[str, Any] = {"planned_batch": batch, "planned_context": context}
    if isinstance(shape, str):
        return {**columns, "planned_note": shape}
    tensor_parallel = int(settings.get("tensor_parallel_size") or 1)
    pipeline_parallel = int(settings.get("pipeline_parallel_size") or 1)  # stages split the layers: weights and KV / stages
    gpu = gpu_of(hw)
    tokens = int(settings.get("max_num_batched_tokens") or (memory.default_batched_tokens(gpu) if gpu else _SMALL_DEVICE_BATCHED_TOKENS))
    try:
        weights = math.ceil(memory.weights(shape, params).per_gpu(tensor_parallel) / pipeline_parallel)
        kv = math.ceil(memory.kv_bytes(shape, kv_dtype, batch, context, tensor_parallel) / pipeline_parallel)
    except HarnessError as exc:
        return {**columns, "planned_note": f"no plan: {exc}"}
    activations = memory.activation_bytes(shape, batch, tokens, tensor_parallel)
    if hw.device == "cuda":
        capacity = int(hw.memory_bytes * float(settings.get("gpu_memory_utilization", 0.9)))
    else:
        capacity = int(hw.memory_bytes)
    columns.update(
        planned_weights_bytes=weights,
        planned_kv_cache_bytes=kv,
        planned_activation_bytes=activations,
        planned_total_bytes=weights + kv + activations,
        planned_capacity_bytes=capacity,
    )
    return columns


def roofline_columns(shape: memory.ModelShape | str, params: FormatParams, kv_dtype: str, batch: int, input_len: int,
                     output_len: int, peak: Peak | str, measured_tok_s: float | None) -> dict[str, Any]:
    """roofline_* columns for an offline throughput figure; `peak` is the device's (a str: why
    there is none). A row without a fraction says why in roofline_note."""
    if isinstance(peak, str):
        return {"roofline_note": peak}
    columns: dict[str, Any] = {"hw_bandwidth_bytes_s": peak.bandwidth_bytes_s, "hw_flops": peak.flops, "hw_peak_source": peak.source}
    if isinstance(shape, str):
        return {**columns, "roofline_note": shape}
    try:
        limit = roofline.cell_roofline(shape, params, kv_dtype, batch, input_len, output_len, peak)
    except HarnessError as exc:
        return {**columns, "roofline_note": f"no roofline: {exc}"}
    columns.update(roofline_tok_s=limit.tok_s, roofline_bound=limit.bound)
    if measured_tok_s is None:
        columns["roofline_note"] = "no throughput was measured"
    else:
        columns["roofline_fraction"] = limit.fraction(measured_tok_s)
    return columns
