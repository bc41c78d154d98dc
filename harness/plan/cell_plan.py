"""What a cell should cost by the book, written beside what it measured: the memory plan
(harness.memory) and the roofline (harness.roofline) of its model, format, KV dtype and load."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import formats, gpus
from harness.engines.base import Parallelism
from harness.errors import HarnessError
from harness.hardware import Hardware, Peak
from harness.params import FormatParams
from harness.plan import memory, roofline
from harness.results.read import engine_settings, format_entry, is_missing, number
from harness.shapes import ModelShape


def gpu_of(hw: Hardware) -> gpus.Gpu | None:
    """The datasheet entry of this machine's GPU, matched by the name NVML reports."""
    return gpus.by_product(hw.name) if hw.device == "cuda" else None


def gpu_of_row(row: dict[str, Any]) -> gpus.Gpu | None:
    """The datasheet entry of the GPU a results row was measured on."""
    return gpus.by_product(row.get("hw_name")) if row.get("hw_device") == "cuda" else None


def load_model_shape(model_dir: Path) -> ModelShape | str:
    """The model's shape, or why the planner can't read it."""
    try:
        return ModelShape.from_config(model_dir / "config.json")
    except (HarnessError, KeyError, OSError, ValueError) as exc:
        return f"no plan: the planner can't read {model_dir / 'config.json'} ({exc})"


def planned_columns(
    shape: ModelShape | str,
    params: FormatParams,
    kv_dtype: str,
    batch: int,
    context: int,
    hw: Hardware,
    parallel: Parallelism,
    settings: dict[str, Any],
    compute_dtype: str = "bfloat16",
) -> dict[str, Any]:
    """planned_* columns: weights + KV cache for `batch` sequences of `context` tokens +
    activations, and the capacity the engine may fill (GPU memory x utilization, or host memory);
    unquantized tensors, an "auto" KV cache and activations in the engine's compute dtype."""
    columns: dict[str, Any] = {"planned_batch": batch, "planned_context": context}
    if isinstance(shape, str):
        return {**columns, "planned_note": shape}
    tensor_parallel = parallel.tensor
    pipeline_parallel = parallel.pipeline  # stages split the layers: weights and KV / stages
    tokens = int(settings.get("max_num_batched_tokens") or memory.default_batched_tokens(gpu_of(hw)))
    try:
        weights = math.ceil(memory.weights(shape, params, compute_dtype).per_gpu(tensor_parallel) / pipeline_parallel)
        kv = math.ceil(
            memory.kv_bytes(shape, kv_dtype, batch, context, tensor_parallel, compute_dtype) / pipeline_parallel
        )
    except HarnessError as exc:
        return {**columns, "planned_note": f"no plan: {exc}"}
    activations = memory.activation_bytes(shape, batch, tokens, tensor_parallel, compute_dtype)
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


def roofline_columns(
    shape: ModelShape | str,
    params: FormatParams,
    kv_dtype: str,
    batch: int,
    input_len: int,
    output_len: int,
    peak: Peak | str,
    measured_tok_s: float | None,
    compute_dtype: str = "bfloat16",
) -> dict[str, Any]:
    """roofline_* columns for an offline throughput figure; `peak` is the device's (a str: why
    there is none). A row without a fraction says why in roofline_note."""
    if isinstance(peak, str):
        return {"roofline_note": peak}
    columns: dict[str, Any] = {
        "hw_bandwidth_bytes_s": peak.bandwidth_bytes_s,
        "hw_flops": peak.flops,
        "hw_peak_source": peak.source,
    }
    if isinstance(shape, str):
        return {**columns, "roofline_note": shape}
    try:
        limit = roofline.cell_roofline(shape, params, kv_dtype, batch, input_len, output_len, peak, compute_dtype)
    except HarnessError as exc:
        return {**columns, "roofline_note": f"no roofline: {exc}"}
    columns.update(
        roofline_tok_s=limit.ceiling,
        roofline_decode_tok_s=limit.tok_s,
        roofline_compute_precision=limit.compute_precision,
        roofline_bound=limit.bound,
    )
    if measured_tok_s is None:
        columns["roofline_note"] = "no throughput was measured"
    else:
        columns["roofline_fraction"] = limit.fraction(measured_tok_s)
    return columns


# ---------------------------------------------------------------------------------------------
# A results row's plan (the report's memory figure): the row's own, or one made for an older row


@dataclass(frozen=True)
class RowPlan:
    weights: int
    kv: int
    activations: int
    capacity: int | None  # None off a known GPU (and in older rows)
    stated_total: int | None = None  # the row's planned_total_bytes, where it has one
    from_row: bool = False  # True: the row's own planned_* columns (the run's plan); False: computed here

    @property
    def total(self) -> int:
        return self.stated_total if self.stated_total is not None else self.weights + self.kv + self.activations


def row_plan(row: dict[str, Any], shape: ModelShape | None) -> RowPlan | None:
    """The row's own plan (planned_* columns, written by the run) where it has one; otherwise
    harness.memory's plan for the row's workload: batch = prompts, context = input + output."""
    stated = {
        part: number(row.get(f"planned_{part}_bytes"))
        for part in ("weights", "kv_cache", "activation", "total", "capacity")
    }
    if stated["weights"] is not None or stated["total"] is not None:
        return RowPlan(
            int(stated["weights"] or 0),
            int(stated["kv_cache"] or 0),
            int(stated["activation"] or 0),
            None if stated["capacity"] is None else int(stated["capacity"]),
            None if stated["total"] is None else int(stated["total"]),
            from_row=True,
        )
    return _computed_plan(row, shape)


def _computed_plan(row: dict[str, Any], shape: ModelShape | None) -> RowPlan | None:
    if shape is None or row.get("format") not in formats.REGISTRY or is_missing(row.get("workload_prompts")):
        return None
    batch = int(row["workload_prompts"])
    context = int(row["workload_input_len"]) + int(row["workload_output_len"])
    settings = engine_settings(row)
    gpu = gpu_of_row(row)
    tokens = settings.get("max_num_batched_tokens") or memory.default_batched_tokens(gpu)
    kv = str(row.get("kv_cache_dtype") or "auto")
    dtype = str(row.get("compute_dtype") or "bfloat16")  # older rows: every engine computed in bf16
    try:
        params = formats.params_from_entry(format_entry(row))
        if gpu is not None:
            p = memory.plan(
                shape,
                params,
                kv,
                batch,
                context,
                gpu,
                utilization=float(settings.get("gpu_memory_utilization", 0.9)),
                tensor_parallel=int(settings.get("tensor_parallel_size", 1)),
                max_num_batched_tokens=int(tokens),
            )
            return RowPlan(p.weights_bytes, p.kv_bytes, p.activation_bytes, p.capacity_bytes)
        return RowPlan(
            memory.weights(shape, params, dtype).total,
            memory.kv_bytes(shape, kv, batch, context, compute_dtype=dtype),
            memory.activation_bytes(shape, batch, int(tokens), compute_dtype=dtype),
            None,
        )
    except (HarnessError, KeyError, ValueError, TypeError):
        return None
