"""Planned GPU memory of serving a model: weights + KV cache + activations, and whether it fits.

Every figure is arithmetic on the model's config.json, so it can be checked by hand
(docs/memory.md works the Llama-3.1-70B / H100 case through). The model is a Llama-style dense
decoder (Llama, Qwen2, Mistral, SmolLM): q/k/v/o and gate/up/down projections per block, two
RMSNorms per block, no MoE. What each term counts, and leaves out:

  weights      the decoder blocks' Linear weights in the format's own layout, scales and zero
               points included; embeddings and lm_head in 16 bits (llm-compressor's formats
               leave them unquantized), norms and biases in 16 bits; in 32 where the engine
               computes in float32 (model.dtype), which upcasts them. GGUF is planned as
               llama.cpp's quantize tool writes it: its per-tensor type rules (attn_v/ffn_down
               upgrades, output.weight in Q6_K, token_embd in the base type), norms in F32.
  kv cache     2 (K and V) x layers x KV heads x head_dim x bytes per element, per token, for
               `batch` sequences each holding `context` tokens: the worst case, every sequence
               at full length at once.
  activations  vLLM's profile run: the live tensors of one MLP for max_num_batched_tokens
               tokens, plus fp32 logits for `batch` sequences. An estimate, small next to the
               rest; CUDA graphs and non-torch memory (cuBLAS, NCCL) are not modelled.

capacity is the GPU's memory (nvidia-smi's total) x gpu_memory_utilization, the budget vLLM
fills with weights + activations + KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from harness import engines as engine_registry
from harness import formats as format_registry
from harness.errors import HarnessError
from harness.formats.base import Format
from harness.formats.layout import DTYPE_BYTES, WeightLayout, Weights
from harness.gpus import Gpu
from harness.gpus import get as get_gpu
from harness.hardware import Hardware
from harness.params import FormatParams
from harness.shapes import ModelShape, load_shape

GIB = 2**30

# ---------------------------------------------------------------------------------------------
# Formats -> bytes (each format declares its layout: harness/formats/layout.py)


def _resolve(fmt: str | FormatParams) -> tuple[Format[Any], FormatParams]:
    name = fmt if isinstance(fmt, str) else fmt.name
    if name not in format_registry.REGISTRY:
        raise HarnessError(f"unknown format {name!r} (known: {', '.join(format_registry.REGISTRY)})")
    spec = format_registry.REGISTRY[name]
    params = fmt if isinstance(fmt, FormatParams) else spec.default_params()
    return spec, params


def layout(fmt: str | FormatParams) -> WeightLayout:
    """The format's weight layout; a HarnessError when only its checkpoint knows (prequantized)."""
    spec, params = _resolve(fmt)
    found = spec.layout(params)
    if found is None:
        raise HarnessError(
            f"{spec.name}: no memory layout is known for this format (a prequantized checkpoint decides its own)"
        )
    return found


def engine_dtype(fmt: str | FormatParams, compute_dtype: str = "bfloat16") -> str:
    """What the engine computes `fmt` in: the format's own dtype (a baseline's, FP4's), else compute_dtype."""
    spec, params = _resolve(fmt)
    return spec.serving_dtype(params) or compute_dtype


def weights(shape: ModelShape, fmt: str | FormatParams, compute_dtype: str = "bfloat16") -> Weights:
    """Bytes of every weight of `shape` stored in `fmt`, the unquantized ones held in the dtype
    the engine computes in (engine_dtype)."""
    return layout(fmt).weights(shape, DTYPE_BYTES[engine_dtype(fmt, compute_dtype)])


def bits_per_weight(fmt: str | FormatParams, shape: ModelShape | None = None) -> float:
    """Effective bits per decoder Linear weight, scales and zero points included.

    Without a shape: the format's nominal figure (a GGUF mix: its base type's). With one: exact
    for that model (per-channel scales counted, GGUF's per-tensor upgrades mixed in).
    """
    if shape is not None:
        return weights(shape, fmt).linear_bytes * 8 / shape.linear_params
    return layout(fmt).bits_per_weight


# ---------------------------------------------------------------------------------------------
# KV cache and activations

#: bytes per KV-cache element; "auto" is the compute dtype's (DTYPE_BYTES), 16-bit unless float32
KV_BYTES: dict[str, int] = {"auto": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def _kv_heads_per_gpu(shape: ModelShape, tensor_parallel: int) -> int:
    # vLLM splits KV heads across ranks; with more ranks than KV heads each rank holds a replica of one
    return max(1, shape.kv_heads // tensor_parallel)


def kv_bytes_per_token(
    shape: ModelShape, kv_dtype: str = "auto", tensor_parallel: int = 1, compute_dtype: str = "bfloat16"
) -> int:
    """2 (K and V) x layers x KV heads x head_dim x bytes per element (per GPU under tensor parallel)."""
    if kv_dtype not in KV_BYTES:
        raise HarnessError(f"unknown KV-cache dtype {kv_dtype!r} (known: {', '.join(KV_BYTES)})")
    element = DTYPE_BYTES[compute_dtype] if kv_dtype == "auto" else KV_BYTES[kv_dtype]
    return 2 * shape.layers * _kv_heads_per_gpu(shape, tensor_parallel) * shape.head_dim * element


def kv_bytes(
    shape: ModelShape,
    kv_dtype: str,
    batch: int,
    context: int,
    tensor_parallel: int = 1,
    compute_dtype: str = "bfloat16",
) -> int:
    """KV cache of `batch` sequences each holding `context` tokens."""
    return batch * context * kv_bytes_per_token(shape, kv_dtype, tensor_parallel, compute_dtype)


def default_batched_tokens(gpu: Gpu | None) -> int:
    """vLLM's default max_num_batched_tokens for its offline LLM class (the harness's engine):
    16384 on GPUs with 70 GiB or more that are not A100s, 8192 otherwise, CPUs included (vllm
    0.32, EngineArgs.get_batch_defaults)."""
    if gpu is None:
        return 8192
    return 16384 if gpu.visible_bytes >= 70 * GIB and "a100" not in gpu.name else 8192


def activation_bytes(
    shape: ModelShape,
    batch: int,
    max_num_batched_tokens: int,
    tensor_parallel: int = 1,
    compute_dtype: str = "bfloat16",
) -> int:
    """vLLM's profile-run peak, estimated: at the MLP of a block, for every batched token, 4 hidden-
    size tensors (residual, normed input, attention and MLP outputs) and 3 intermediate-size ones
    (gate_up's two halves, the activation's output; split across ranks) in the compute dtype; then
    fp32 logits for `batch` sequences (gathered whole on a rank)."""
    per_token = 4 * shape.hidden + 3 * math.ceil(shape.intermediate / tensor_parallel)
    return max_num_batched_tokens * per_token * DTYPE_BYTES[compute_dtype] + batch * shape.vocab * 4


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class MemoryPlan:
    """One (model, format, KV dtype, workload, GPU) cell; every byte figure is per GPU."""

    model: str
    format: str
    kv_dtype: str
    gpu: str
    batch: int
    context: int
    tensor_parallel: int
    utilization: float
    max_num_batched_tokens: int
    bits_per_weight: float  # effective, over the decoder Linear weights
    weights_bytes: int
    kv_bytes: int
    activation_bytes: int
    capacity_bytes: int  # visible memory x utilization
    kv_bytes_per_sequence: int
    note: str | None = None  # why the format cannot run as planned on this GPU (its own verdict)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.activation_bytes

    @property
    def headroom_bytes(self) -> int:
        """capacity - total: negative when it does not fit."""
        return self.capacity_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    @property
    def max_batch(self) -> int:
        """Sequences of `context` tokens whose KV cache fits beside the weights and activations."""
        free = self.capacity_bytes - self.weights_bytes - self.activation_bytes
        return max(0, free // self.kv_bytes_per_sequence)

    def as_row(self) -> dict[str, object]:
        """The figures a table shows, in GiB."""
        return {
            "model": self.model,
            "format": self.format,
            "kv_dtype": self.kv_dtype,
            "bits_per_weight": round(self.bits_per_weight, 3),
            "weights_gib": self.weights_bytes / GIB,
            "kv_gib": self.kv_bytes / GIB,
            "activations_gib": self.activation_bytes / GIB,
            "total_gib": self.total_bytes / GIB,
            "capacity_gib": self.capacity_bytes / GIB,
            "headroom_gib": self.headroom_bytes / GIB,
            "fits": self.fits,
            "max_batch": self.max_batch,
            "note": self.note or "",
        }


def _hardware(gpu: Gpu, tensor_parallel: int) -> Hardware:
    return Hardware("cuda", gpu.product, tensor_parallel, gpu.visible_bytes, gpu.compute_capability, None, ())


def _kv_dtypes_of(spec: Format[Any]) -> set[str]:
    return {
        kv
        for engine in spec.serving_engines()
        if engine in engine_registry.REGISTRY
        for kv in engine_registry.REGISTRY[engine].kv_cache_dtypes
    }


def plan(
    shape: ModelShape | str,
    fmt: str | FormatParams,
    kv_dtype: str,
    batch: int,
    context: int,
    gpu: Gpu | str,
    utilization: float = 0.9,
    tensor_parallel: int = 1,
    max_num_batched_tokens: int | None = None,
) -> MemoryPlan:
    """The memory of serving `batch` sequences of `context` tokens of `shape` in `fmt` on `gpu`.

    shape: a ModelShape or anything load_shape takes; fmt: a format name or its parameters (to
    plan a non-default group size); gpu: a Gpu or its name in harness.gpus.
    max_num_batched_tokens: None for vLLM's default on that GPU.
    """
    shape = shape if isinstance(shape, ModelShape) else load_shape(shape)
    gpu = gpu if isinstance(gpu, Gpu) else get_gpu(gpu)
    spec, params = _resolve(fmt)
    if batch < 1 or context < 1:
        raise HarnessError(f"batch and context must be at least 1 (got {batch}, {context})")
    if not 0.0 < utilization <= 1.0:
        raise HarnessError(f"utilization must be in (0, 1] (got {utilization})")
    if (
        tensor_parallel < 1
        or shape.heads % tensor_parallel
        or (shape.kv_heads % tensor_parallel and tensor_parallel % shape.kv_heads)
    ):
        raise HarnessError(
            f"tensor_parallel {tensor_parallel} must divide the {shape.heads} attention heads, and divide "
            f"or be a multiple of the {shape.kv_heads} KV heads"
        )
    if kv_dtype not in KV_BYTES:
        raise HarnessError(f"unknown KV-cache dtype {kv_dtype!r} (known: {', '.join(KV_BYTES)})")
    allowed = _kv_dtypes_of(spec)
    if kv_dtype not in allowed:
        raise HarnessError(
            f"{spec.name} is served by {', '.join(spec.serving_engines())}, whose KV-cache dtypes are "
            f"{', '.join(sorted(allowed))} (got {kv_dtype!r})"
        )
    tokens = max_num_batched_tokens if max_num_batched_tokens is not None else default_batched_tokens(gpu)
    dtype = engine_dtype(params)
    return MemoryPlan(
        model=shape.name,
        format=params.id,
        kv_dtype=kv_dtype,
        gpu=gpu.name,
        batch=batch,
        context=context,
        tensor_parallel=tensor_parallel,
        utilization=utilization,
        max_num_batched_tokens=tokens,
        bits_per_weight=bits_per_weight(params, shape),
        weights_bytes=weights(shape, params).per_gpu(tensor_parallel),
        kv_bytes=kv_bytes(shape, kv_dtype, batch, context, tensor_parallel, dtype),
        activation_bytes=activation_bytes(shape, batch, tokens, tensor_parallel, dtype),
        capacity_bytes=int(gpu.visible_bytes * utilization),
        kv_bytes_per_sequence=context * kv_bytes_per_token(shape, kv_dtype, tensor_parallel, dtype),
        note=spec.unsupported_reason(params, _hardware(gpu, tensor_parallel)),
    )


#: the formats a plan table shows by default: the baseline, the 8-bit, the 4-bit and GGUF families
DEFAULT_FORMATS: tuple[str, ...] = (
    "bf16",
    "fp8-dynamic",
    "w8a8-int8",
    "gguf-q8_0",
    "gguf-q5_k_m",
    "w4a16-gptq",
    "w4a16-awq",
    "nvfp4",
    "nvfp4a16",
    "mxfp4a16",
    "gguf-q4_k_m",
)


def plan_all(
    shape: ModelShape | str,
    batch: int,
    context: int,
    gpu: Gpu | str,
    kv_dtypes: Iterable[str] = ("auto", "fp8"),
    formats: Iterable[str | FormatParams] = DEFAULT_FORMATS,
    utilization: float = 0.9,
    tensor_parallel: int = 1,
    max_num_batched_tokens: int | None = None,
) -> list[MemoryPlan]:
    """A plan per format x KV dtype, in that order; pairs no engine of the format serves (GGUF
    with an FP8 KV cache: llama.cpp has none) are left out."""
    shape = shape if isinstance(shape, ModelShape) else load_shape(shape)
    gpu = gpu if isinstance(gpu, Gpu) else get_gpu(gpu)
    kv_dtypes = tuple(kv_dtypes)
    rows = []
    for fmt in formats:
        spec, _ = _resolve(fmt)
        for kv in kv_dtypes:
            if kv in KV_BYTES and kv not in _kv_dtypes_of(spec):
                continue
            rows.append(plan(shape, fmt, kv, batch, context, gpu, utilization, tensor_parallel, max_num_batched_tokens))
    return rows
