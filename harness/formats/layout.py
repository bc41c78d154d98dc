"""How a format stores a model's weights, byte for byte: the layout each format declares
(Format.layout), from which the memory planner and the roofline count bytes.

Two kinds: an `Encoding` (one rule for every decoder Linear: value bits plus scales and zero
points per group, as compressed-tensors stores them) and a `GgufLayout` (llama.cpp's per-tensor
type choice, as its quantize tool makes it). Embeddings and lm_head stay unquantized in the
compressed-tensors formats (llm-compressor leaves them so): 16-bit, or the engine's compute dtype
(float32 upcasts them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from harness.shapes import Linear, ModelShape

#: bytes per element of the dtypes an engine computes in (model.dtype)
DTYPE_BYTES: dict[str, int] = {"bfloat16": 2, "float16": 2, "float32": 4}


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


class WeightLayout(Protocol):
    """What a format's checkpoint holds, per weight."""

    @property
    def label(self) -> str: ...

    def weights(self, shape: ModelShape, dense_bytes: int = 2) -> Weights:
        """Bytes of every weight of `shape` in this layout; dense_bytes: per element of the
        unquantized tensors an engine holds in its compute dtype (4 in float32)."""
        ...

    @property
    def bits_per_weight(self) -> float:
        """The nominal bits per decoder Linear weight (scales included), without a shape."""
        ...


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

    def weights(self, shape: ModelShape, dense_bytes: int = 2) -> Weights:
        linear_bits = shape.layers * sum(self.bits(lin) for lin in shape.block_linears())
        return Weights(
            linear_bytes=math.ceil(linear_bits / 8),
            embedding_bytes=dense_bytes * shape.embedding_params,
            lm_head_bytes=dense_bytes * shape.lm_head_params,
            other_bytes=dense_bytes * (shape.norm_params + shape.bias_params),
        )

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
    "Q2_K": "Q2_K",
    "Q3_K_S": "Q3_K",
    "Q3_K_M": "Q3_K",
    "Q3_K_L": "Q3_K",
    "Q4_0": "Q4_0",
    "Q4_1": "Q4_1",
    "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K",
    "Q5_0": "Q5_0",
    "Q5_1": "Q5_1",
    "Q5_K_S": "Q5_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "Q8_0": "Q8_0",
    "F16": "F16",
    "BF16": "BF16",
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


@dataclass(frozen=True)
class GgufLayout:
    """A llama.cpp file type (Q4_K_M, Q8_0, ...): each tensor's ggml type as llama_tensor_get_type picks it."""

    ftype: str

    @property
    def label(self) -> str:
        return f"gguf {self.ftype}"

    @property
    def bits_per_weight(self) -> float:
        return GGML_TYPES[_GGUF_BASE[self.ftype]].bits_per_weight

    def weights(self, shape: ModelShape, dense_bytes: int = 2) -> Weights:
        del dense_bytes  # llama.cpp computes from its file's own tensor types, whatever the dtype
        linear = 0
        for block in range(shape.layers):
            for lin in shape.block_linears():
                ggml = GGML_TYPES[gguf_tensor_type(self.ftype, lin.role, shape, block, lin.in_features)]
                linear += lin.out_features * ggml.bytes(lin.in_features)
        embd = GGML_TYPES[gguf_tensor_type(self.ftype, "token_embd", shape)].bytes(shape.hidden) * shape.vocab
        output = 0
        if shape.lm_head_params:
            output = GGML_TYPES[gguf_tensor_type(self.ftype, "output", shape)].bytes(shape.hidden) * shape.vocab
        # convert_hf_to_gguf writes 1-D tensors (norms, biases) in F32 and llama-quantize keeps them
        return Weights(linear, embd, output, 4 * (shape.norm_params + shape.bias_params))
