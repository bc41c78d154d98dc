"""Planned GPU memory of serving a model: weights + KV cache + activations, and whether it fits.

Every figure is arithmetic on the model's config.json, so it can be checked by hand
(docs/memory.md works the Llama-3.1-70B / H100 case through). The model is a Llama-style dense
decoder (Llama, Qwen2, Mistral, SmolLM): q/k/v/o and gate/up/down projections per block, two
RMSNorms per block, no MoE. What each term counts, and leaves out:

  weights      the decoder blocks' Linear weights in the format's own layout, scales and zero
               points included; embeddings and lm_head in 16 bits (llm-compressor's formats
               leave them unquantized), norms and biases in 16 bits. GGUF is planned as
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

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import engines as engine_registry
from harness import formats as format_registry
from harness.config import FormatParams
from harness.errors import HarnessError
from harness.formats.base import Format
from harness.formats.gguf import Gguf
from harness.gpus import Gpu
from harness.gpus import get as get_gpu
from harness.hardware import Hardware

GIB = 2**30

# ---------------------------------------------------------------------------------------------
# Model shapes


#: config.json fields of the architectures one plans for most, shipped so no download is needed.
#: Values from each model's config.json on the Hugging Face hub.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.1-70B
    "llama-3.1-70b": {
        "model_type": "llama", "num_hidden_layers": 80, "hidden_size": 8192, "intermediate_size": 28672,
        "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
    },
    # meta-llama/Llama-3.1-8B
    "llama-3.1-8b": {
        "model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
        "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False,
    },
    # Qwen/Qwen2.5-7B (Qwen2 has biases on q, k and v)
    "qwen2.5-7b": {
        "model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584, "intermediate_size": 18944,
        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False,
    },
    # HuggingFaceTB/SmolLM2-135M (the harness's builtin model)
    "smollm2-135m": {
        "model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576, "intermediate_size": 1536,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True,
    },
}

KNOWN_SHAPES["qwen2.5-coder-7b"] = KNOWN_SHAPES["qwen2.5-7b"]  # Qwen/Qwen2.5-Coder-7B: the same shape

_REQUIRED = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
#: config keys of architectures this Llama-style count would get wrong
_UNSUPPORTED = {
    "num_local_experts": "a mixture of experts",
    "num_experts": "a mixture of experts",
    "n_routed_experts": "a mixture of experts",
    "kv_lora_rank": "multi-head latent attention (its KV cache is not per-head)",
}


@dataclass(frozen=True)
class Linear:
    """One projection of a decoder block: weight [out_features, in_features]."""

    role: str  # q, k, v, o, gate, up, down
    in_features: int
    out_features: int

    @property
    def params(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a Llama-style decoder, from its config.json."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | Path, name: str | None = None) -> "ModelShape":
        """From a config.json's dict, a config.json path, or a model directory."""
        where: object = "config"
        if not isinstance(config, Mapping):
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            where = path
            try:
                config = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise HarnessError(f"{path}: cannot read a config.json ({exc})") from exc
            name = name or path.parent.name
            if not isinstance(config, Mapping):
                raise HarnessError(f"{path}: not a JSON object")
        if "num_hidden_layers" not in config and isinstance(config.get("text_config"), Mapping):
            config = config["text_config"]  # multimodal wrappers keep the decoder's fields there
        for key, what in _UNSUPPORTED.items():
            if config.get(key):
                raise HarnessError(f"{where}: {key}: the model is {what}; this plan counts dense Llama-style decoders only")
        missing = [key for key in _REQUIRED if not isinstance(config.get(key), int)]
        if missing:
            raise HarnessError(f"{where}: missing or not an integer: {', '.join(missing)}")
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        model_type = config.get("model_type", "")
        return cls(
            name=name or str(config.get("_name_or_path") or model_type or "model"),
            layers=config["num_hidden_layers"],
            hidden=config["hidden_size"],
            intermediate=config["intermediate_size"],
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            vocab=config["vocab_size"],
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bool(config.get("attention_bias", model_type == "qwen2")),
        )

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def block_linears(self) -> tuple[Linear, ...]:
        """The seven projections of one decoder block."""
        h, i = self.hidden, self.intermediate
        return (
            Linear("q", h, self.q_dim),
            Linear("k", h, self.kv_dim),
            Linear("v", h, self.kv_dim),
            Linear("o", self.q_dim, h),
            Linear("gate", h, i),
            Linear("up", h, i),
            Linear("down", i, h),
        )

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder blocks' Linear weights: what quantization formats compress."""
        return self.layers * sum(lin.params for lin in self.block_linears())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        return (2 * self.layers + 1) * self.hidden  # input and post-attention RMSNorm per block, final norm

    @property
    def bias_params(self) -> int:
        return self.layers * (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0

    @property
    def parameter_count(self) -> int:
        return self.linear_params + self.embedding_params + self.lm_head_params + self.norm_params + self.bias_params


def load_shape(spec: str | Path) -> ModelShape:
    """A known architecture's name (`llama-3.1-70b`, `builtin:smollm2-135m`), a config.json, or a
    model directory holding one."""
    text = str(spec)
    known = text.removeprefix("builtin:").lower()
    if known in KNOWN_SHAPES:
        return ModelShape.from_config(KNOWN_SHAPES[known], name=known)
    path = Path(text).expanduser()
    if path.is_dir() or path.is_file():
        return ModelShape.from_config(path)
    raise HarnessError(
        f"unknown model {text!r}: give a config.json, a model directory, or one of {', '.join(KNOWN_SHAPES)}"
    )


# ---------------------------------------------------------------------------------------------
# Weight layouts


@dataclass(frozen=True)
class Encoding:
    """How a compressed-tensors (or unquantized) format stores one Linear weight.

    value_bits per element; one scale (and zero point) per `group` consecutive input values of a
    row, or per row when group is None (per-channel); tensor_bits once per tensor (global scales).
    """

    label: str
    value_bits: int
    group: int | None
    scale_bits: int = 0
    zero_bits: int = 0
    tensor_bits: int = 0

    def bits(self, lin: Linear) -> int:
        groups_per_row = 1 if self.group is None else math.ceil(lin.in_features / self.group)
        per_group = self.scale_bits + self.zero_bits
        return self.value_bits * lin.params + lin.out_features * groups_per_row * per_group + self.tensor_bits

    @property
    def bits_per_weight(self) -> float:
        """value + (scale + zero) / group. A per-channel scale costs scale_bits / in_features
        (0.002 bits at 8192 inputs): counted exactly by bits(), left out of this figure."""
        if self.group is None:
            return float(self.value_bits)
        return self.value_bits + (self.scale_bits + self.zero_bits) / self.group


BF16 = Encoding("bf16", 16, None)


@dataclass(frozen=True)
class GgmlType:
    """A llama.cpp block type: `block` values stored in `block_bytes` (scales included)."""

    name: str
    block: int
    block_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return self.block_bytes * 8 / self.block

    def bytes(self, elements: int) -> int:
        return math.ceil(elements / self.block) * self.block_bytes


#: Block layouts from ggml-common.h (QK_K = 256 values per K-quant super-block).
GGML_TYPES: dict[str, GgmlType] = {
    t.name: t
    for t in (
        GgmlType("F32", 1, 4),
        GgmlType("F16", 1, 2),
        GgmlType("BF16", 1, 2),
        GgmlType("Q4_0", 32, 18),  # fp16 d + 16 bytes of nibbles: 4.5 bpw
        GgmlType("Q4_1", 32, 20),  # + fp16 min: 5.0
        GgmlType("Q5_0", 32, 22),  # + 4 bytes of high bits: 5.5
        GgmlType("Q5_1", 32, 24),  # 6.0
        GgmlType("Q8_0", 32, 34),  # fp16 d + 32 int8: 8.5
        GgmlType("IQ4_NL", 32, 18),  # 4.5 (fallback for Q2_K/Q3_K rows not divisible by 256)
        GgmlType("Q2_K", 256, 84),  # scales[16] + qs[64] + fp16 d, dmin: 2.625
        GgmlType("Q3_K", 256, 110),  # hmask[32] + qs[64] + scales[12] + fp16 d: 3.4375
        GgmlType("Q4_K", 256, 144),  # fp16 d, dmin + scales[12] (6-bit) + qs[128]: 4.5
        GgmlType("Q5_K", 256, 176),  # + qh[32]: 5.5
        GgmlType("Q6_K", 256, 210),  # ql[128] + qh[64] + scales[16] (int8) + fp16 d: 6.5625
    )
}

#: llama.cpp's file type -> the default tensor type (llama_model_quantize_impl)
_GGUF_BASE = {
    "Q2_K": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K", "Q8_0": "Q8_0", "F16": "F16", "BF16": "BF16",
}
#: a K-quant whose row length does not divide by 256 falls back to these (llama_tensor_get_type)
_GGUF_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def _use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of the blocks whose attn_v/ffn_down get more bits in *_M types: the
    first and last eighth, and every third block between (half of them)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def gguf_tensor_type(ftype: str, role: str, shape: ModelShape, block: int = 0, in_features: int | None = None) -> str:
    """The ggml type llama.cpp's quantize tool gives one tensor, as llama_tensor_get_type does for a
    dense Llama-style model without an importance matrix. role: token_embd, output, or a
    projection (q, k, v, o, gate, up, down) of decoder `block`."""
    base = _GGUF_BASE[ftype]
    if base in ("F16", "BF16"):
        return base  # not a quantized type: every tensor stays as converted
    new = base
    n = shape.layers
    if role == "output" or (role == "token_embd" and shape.tied_embeddings):
        row = shape.hidden
        new = "Q8_0" if row % GGML_TYPES[base].block else (base if base == "Q8_0" else "Q6_K")
    elif role == "v":
        if ftype == "Q2_K":
            new = "Q4_K" if shape.heads // shape.kv_heads >= 4 else "Q3_K"
        elif ftype == "Q3_K_M":
            new = "Q5_K" if block < 2 else "Q4_K"
        elif ftype == "Q3_K_L":
            new = "Q5_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(block, n):
            new = "Q6_K"
        elif ftype == "Q4_K_S" and block < 4:
            new = "Q5_K"
        # llama.cpp's LLM_TYPE_70B (an 80-block Llama or Qwen2): its 8x smaller attn_v gets Q5_K
        if n == 80 and new in ("Q3_K", "Q4_K"):
            new = "Q5_K"
    elif role == "down":
        if ftype == "Q2_K":
            new = "Q3_K"
        elif ftype == "Q3_K_M":
            new = "Q5_K" if block < n // 16 else "Q4_K"
        elif ftype == "Q3_K_L":
            new = "Q5_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(block, n):
            new = "Q6_K"
        elif ftype == "Q4_K_S" and block < n // 8:
            new = "Q5_K"
    elif role == "o":
        new = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ftype, new)
    row = shape.hidden if in_features is None else in_features
    if row % GGML_TYPES[new].block:
        new = _GGUF_FALLBACK.get(new, "F16")
        if row % GGML_TYPES[new].block:
            new = "F16"
    return new


# ---------------------------------------------------------------------------------------------
# Formats -> bytes


@dataclass(frozen=True)
class Weights:
    """Weight bytes of a whole model (one GPU's share is per_gpu(tp))."""

    linear_bytes: int  # decoder blocks' projections, scales included
    embedding_bytes: int
    lm_head_bytes: int  # 0 when tied to the embeddings
    other_bytes: int  # norms and biases

    @property
    def total(self) -> int:
        return self.linear_bytes + self.embedding_bytes + self.lm_head_bytes + self.other_bytes

    def per_gpu(self, tensor_parallel: int) -> int:
        """Projections, embeddings and lm_head split across the ranks; norms are replicated."""
        split = self.linear_bytes + self.embedding_bytes + self.lm_head_bytes
        return math.ceil(split / tensor_parallel) + self.other_bytes


def _resolve(fmt: str | FormatParams) -> tuple[Format, FormatParams]:
    name = fmt if isinstance(fmt, str) else fmt.name
    if name not in format_registry.REGISTRY:
        raise HarnessError(f"unknown format {name!r} (known: {', '.join(format_registry.REGISTRY)})")
    spec = format_registry.REGISTRY[name]
    params = fmt if isinstance(fmt, FormatParams) else spec.params_model.model_construct(name=name)
    return spec, params


def encoding(fmt: str | FormatParams) -> Encoding:
    """The Linear-weight layout of a compressed-tensors or baseline format (not GGUF).

    Scales are 16-bit (the model dtype) for the integer and FP8 schemes, FP8 (E4M3) for NVFP4,
    E8M0 (8 bits) for MXFP4. AWQ's zero points are 4-bit integers, packed.
    """
    spec, params = _resolve(fmt)
    name = spec.name
    if spec.is_baseline:
        return BF16 if name == "bf16" else Encoding("fp16", 16, None)
    if name in ("fp8-dynamic", "fp8-static"):
        return Encoding("fp8 per-channel", 8, None, scale_bits=16)
    if name == "w8a8-int8":
        return Encoding("int8 per-channel", 8, None, scale_bits=16)
    if name in ("w4a16-gptq", "w4a16-awq"):
        group = spec.group_size(params)  # None: group_size -1, one scale per output channel
        asymmetric = not getattr(params, "symmetric", True)
        label = f"int4 {'g' + str(group) if group else 'per-channel'}{' asym' if asymmetric else ''}"
        return Encoding(label, 4, group, scale_bits=16, zero_bits=4 if asymmetric else 0)
    if name in ("nvfp4", "nvfp4a16"):
        # FP32 global scales per tensor: the weight's, and nvfp4's activation one
        return Encoding("fp4 e2m1 g16 + fp8 scale", 4, 16, scale_bits=8, tensor_bits=64 if name == "nvfp4" else 32)
    if name in ("mxfp4", "mxfp4a16"):
        return Encoding("fp4 e2m1 g32 + e8m0 scale", 4, 32, scale_bits=8)
    if isinstance(spec, Gguf):
        raise HarnessError(f"{name}: GGUF types are planned tensor by tensor (weights()), not by one encoding")
    raise HarnessError(f"{name}: no memory layout is known for this format (a prequantized checkpoint decides its own)")


def weights(shape: ModelShape, fmt: str | FormatParams) -> Weights:
    """Bytes of every weight of `shape` stored in `fmt`."""
    spec, params = _resolve(fmt)
    if isinstance(spec, Gguf):
        return _gguf_weights(shape, spec.quant_type(params))
    enc = encoding(fmt)
    linear_bits = shape.layers * sum(enc.bits(lin) for lin in shape.block_linears())
    return Weights(
        linear_bytes=math.ceil(linear_bits / 8),
        embedding_bytes=2 * shape.embedding_params,
        lm_head_bytes=2 * shape.lm_head_params,
        other_bytes=2 * (shape.norm_params + shape.bias_params),
    )


def _gguf_weights(shape: ModelShape, ftype: str) -> Weights:
    linear = 0
    for block in range(shape.layers):
        for lin in shape.block_linears():
            ggml = GGML_TYPES[gguf_tensor_type(ftype, lin.role, shape, block, lin.in_features)]
            linear += lin.out_features * ggml.bytes(lin.in_features)
    embd = GGML_TYPES[gguf_tensor_type(ftype, "token_embd", shape)].bytes(shape.hidden) * shape.vocab
    output = GGML_TYPES[gguf_tensor_type(ftype, "output", shape)].bytes(shape.hidden) * shape.vocab if shape.lm_head_params else 0
    # convert_hf_to_gguf writes 1-D tensors (norms, biases) in F32 and llama-quantize keeps them
    return Weights(linear, embd, output, 4 * (shape.norm_params + shape.bias_params))


def bits_per_weight(fmt: str | FormatParams, shape: ModelShape | None = None) -> float:
    """Effective bits per decoder Linear weight, scales and zero points included.

    Without a shape: the format's nominal figure (a GGUF mix: its base type's). With one: exact
    for that model (per-channel scales counted, GGUF's per-tensor upgrades mixed in).
    """
    spec, params = _resolve(fmt)
    if shape is not None:
        return weights(shape, fmt).linear_bytes * 8 / shape.linear_params
    if isinstance(spec, Gguf):
        return GGML_TYPES[_GGUF_BASE[spec.quant_type(params)]].bits_per_weight
    return encoding(fmt).bits_per_weight


# ---------------------------------------------------------------------------------------------
# KV cache and activations

#: bytes per KV-cache element; "auto" is the serving dtype, 16-bit (bf16/fp16) in this harness
KV_BYTES: dict[str, int] = {"auto": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def _kv_heads_per_gpu(shape: ModelShape, tensor_parallel: int) -> int:
    # vLLM splits KV heads across ranks; with more ranks than KV heads each rank holds a replica of one
    return max(1, shape.kv_heads // tensor_parallel)


def kv_bytes_per_token(shape: ModelShape, kv_dtype: str = "auto", tensor_parallel: int = 1) -> int:
    """2 (K and V) x layers x KV heads x head_dim x bytes per element (per GPU under tensor parallel)."""
    if kv_dtype not in KV_BYTES:
        raise HarnessError(f"unknown KV-cache dtype {kv_dtype!r} (known: {', '.join(KV_BYTES)})")
    return 2 * shape.layers * _kv_heads_per_gpu(shape, tensor_parallel) * shape.head_dim * KV_BYTES[kv_dtype]


def kv_bytes(shape: ModelShape, kv_dtype: str, batch: int, context: int, tensor_parallel: int = 1) -> int:
    """KV cache of `batch` sequences each holding `context` tokens."""
    return batch * context * kv_bytes_per_token(shape, kv_dtype, tensor_parallel)


def default_batched_tokens(gpu: Gpu) -> int:
    """vLLM's default max_num_batched_tokens for its offline LLM class (the harness's engine):
    16384 on GPUs with 70 GiB or more that are not A100s, 8192 otherwise (vllm 0.32,
    EngineArgs.get_batch_defaults)."""
    return 16384 if gpu.visible_bytes >= 70 * GIB and "a100" not in gpu.name else 8192


def activation_bytes(shape: ModelShape, batch: int, max_num_batched_tokens: int, tensor_parallel: int = 1) -> int:
    """vLLM's profile-run peak, estimated: at the MLP of a block, for every batched token, 4 hidden-
    size tensors (residual, normed input, attention and MLP outputs) and 3 intermediate-size ones
    (gate_up's two halves, the activation's output; split across ranks) in 16 bits; then fp32
    logits for `batch` sequences (gathered whole on a rank)."""
    per_token = 4 * shape.hidden + 3 * math.ceil(shape.intermediate / tensor_parallel)
    return max_num_batched_tokens * per_token * 2 + batch * shape.vocab * 4


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


def _kv_dtypes_of(spec: Format) -> set[str]:
    return {kv for engine in spec.engines if engine in engine_registry.REGISTRY for kv in engine_registry.REGISTRY[engine].kv_cache_dtypes}


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
    if tensor_parallel < 1 or shape.heads % tensor_parallel or (
        shape.kv_heads % tensor_parallel and tensor_parallel % shape.kv_heads
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
            f"{spec.name} is served by {', '.join(spec.engines)}, whose KV-cache dtypes are {', '.join(sorted(allowed))} (got {kv_dtype!r})"
        )
    tokens = max_num_batched_tokens if max_num_batched_tokens is not None else default_batched_tokens(gpu)
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
        kv_bytes=kv_bytes(shape, kv_dtype, batch, context, tensor_parallel),
        activation_bytes=activation_bytes(shape, batch, tokens, tensor_parallel),
        capacity_bytes=int(gpu.visible_bytes * utilization),
        kv_bytes_per_sequence=context * kv_bytes_per_token(shape, kv_dtype, tensor_parallel),
        note=spec.unsupported_reason(params, _hardware(gpu, tensor_parallel)),
    )


#: the formats a plan table shows by default: the baseline, the 8-bit, the 4-bit and GGUF families
DEFAULT_FORMATS: tuple[str, ...] = (
    "bf16", "fp8-dynamic", "w8a8-int8", "gguf-q8_0", "gguf-q5_k_m",
    "w4a16-gptq", "w4a16-awq", "nvfp4", "nvfp4a16", "mxfp4a16", "gguf-q4_k_m",
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
