"""The decode roofline: the most output tokens per second a device could give a cell.

One decode step of B sequences reads every weight once and each sequence's KV cache, and does
the matmuls and attention of B tokens. Whichever of the two takes longer bounds the step:

    tok/s_max = min( B x BW / (W_bytes + B x L x KV_bytes_per_token),      memory bound
                     FLOPs / (2 x N + 4 x layers x d x L) )                compute bound

  B         concurrent sequences (the batch the engine actually runs)
  L         mean context length over the decode: input_len + output_len / 2 (cell_roofline)
  BW, FLOPs the device's peak (harness.hardware.peak_for): GPU datasheet, or measured on a CPU
  W_bytes   weight bytes read per step, in the format's own layout (harness.memory.weights):
            everything but the input embedding table (a lookup of B rows, not a full read); with
            tied embeddings that table is the lm_head matrix, so it is read in full and counted
  KV_bytes  harness.memory.kv_bytes_per_token for the cell's KV-cache dtype (K and V, all layers)
  N         matmul parameters per token: the decoder blocks' Linear weights + the lm_head
            (vocab x hidden, tied or not: the logits are a matmul by it). Not the input
            embeddings (a lookup), norms or biases (element-wise, negligible). 2N: a multiply
            and an add per weight.
  d         the attention width heads x head_dim (the hidden size in Llama-style models):
            QK^T and PV are each 2 x d FLOPs per cached token per layer, hence 4 x layers x d x L.

Everything is per device; for tensor parallelism over T GPUs pass peak.times(T) (communication
ignored, so it stays an upper bound).

FLOPs is the peak of the format's own matmul precision (Format.compute_precision through
Peak.flops_for): FP8 and INT8 tensor cores at their datasheet rate (2x BF16 on Ada and Hopper),
FP4 on Blackwell; weight-only formats and devices without a faster known peak (a CPU, where only
BF16/FP32 is measured) use BF16's. The row names the peak it used.

A measured offline tok/s includes prefill, so it is compared with a ceiling that includes it
(cell_roofline's `tok_s`): the B prompts' prefill, at best max(W_bytes / BW, B x P x (2N + 2 x
layers x d x P) / FLOPs) for P prompt tokens, yields the first output token of each; then
output_len - 1 decode steps at the bound above. Decode alone (`decode_tok_s`) would be out of
reach for a perfect engine whenever prefill is not free: at 1,024 → 128 it scored at most 0.33.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from harness import formats
from harness.errors import HarnessError
from harness.hardware import Peak
from harness.params import FormatParams
from harness.plan import memory
from harness.shapes import ModelShape, load_shape


@dataclass(frozen=True)
class RooflineResult:
    tok_s: float  # the decode limit: min(memory_tok_s, compute_tok_s)
    bound: Literal["memory", "compute"]
    memory_tok_s: float  # B x BW / (W_bytes + B x L x KV_bytes_per_token)
    compute_tok_s: float  # FLOPs / (2N + 4 x layers x d x L)
    batch: int
    context: float  # L
    weight_bytes: int  # W_bytes, per step
    kv_bytes_per_token: int
    flops_per_token: float  # 2N + 4 x layers x d x L
    peak: Peak
    compute_flops: float = 0.0  # the peak the compute bound used (0: peak.flops)
    compute_precision: str = "bf16"  # which peak that is
    end_to_end_tok_s: float | None = None  # with prefill (cell_roofline): what a measured tok/s is compared with

    @property
    def ceiling(self) -> float:
        """The ceiling a measured offline tok/s is compared with: with prefill where known."""
        return self.end_to_end_tok_s if self.end_to_end_tok_s is not None else self.tok_s

    def fraction(self, measured_tok_s: float) -> float:
        """measured / roofline: 1.0 is the device's ceiling."""
        return measured_tok_s / self.ceiling

    def as_row(self) -> dict[str, object]:
        return {
            "roofline_tok_s": self.ceiling,
            "roofline_decode_tok_s": self.tok_s,
            "roofline_compute_precision": self.compute_precision,
            "roofline_bound": self.bound,
            "roofline_memory_tok_s": self.memory_tok_s,
            "roofline_compute_tok_s": self.compute_tok_s,
            "roofline_batch": self.batch,
            "roofline_context": self.context,
            "roofline_source": self.peak.source,
        }


def roofline_tok_s(
    batch: int,
    context: float,
    weight_bytes: float,
    kv_bytes_per_token: float,
    matmul_params: float,
    layers: int,
    attention_width: int,
    peak: Peak,
    compute_precision: str = "bf16",
) -> RooflineResult:
    """The formula above, on plain numbers (cell_roofline fills them from a model and a format)."""
    if batch < 1 or context < 0:
        raise HarnessError(f"roofline: batch must be at least 1 and context at least 0 (got {batch}, {context})")
    if peak.bandwidth_bytes_s <= 0 or peak.flops <= 0:
        raise HarnessError(f"roofline: the peak must be positive ({peak})")
    step_bytes = weight_bytes + batch * context * kv_bytes_per_token
    memory_tok_s = batch * peak.bandwidth_bytes_s / step_bytes
    token_flops = 2 * matmul_params + 4 * layers * attention_width * context
    flops, precision = peak.flops_for(compute_precision)
    compute_tok_s = flops / token_flops
    bound: Literal["memory", "compute"] = "memory" if memory_tok_s <= compute_tok_s else "compute"
    return RooflineResult(
        tok_s=min(memory_tok_s, compute_tok_s),
        bound=bound,
        memory_tok_s=memory_tok_s,
        compute_tok_s=compute_tok_s,
        batch=batch,
        context=context,
        weight_bytes=int(weight_bytes),
        kv_bytes_per_token=int(kv_bytes_per_token),
        flops_per_token=token_flops,
        peak=peak,
        compute_flops=flops,
        compute_precision=precision,
    )


def prefill_seconds(
    batch: int,
    prompt_len: int,
    weight_bytes: float,
    matmul_params: float,
    layers: int,
    attention_width: int,
    flops: float,
    bandwidth: float,
) -> float:
    """The least time B prompts of P tokens take to prefill: their matmuls and causal attention
    at the compute peak, or one read of the weights, whichever is longer."""
    work = batch * prompt_len * (2 * matmul_params + 2 * layers * attention_width * prompt_len)
    return max(weight_bytes / bandwidth, work / flops)


def weight_bytes_per_step(shape: ModelShape, fmt: str | FormatParams, compute_dtype: str = "bfloat16") -> int:
    """Bytes of weights one decode step reads: all of them in the format's layout (GGUF as
    llama.cpp lays it out) except an untied input embedding table. Raises HarnessError for a
    format without a known layout (prequantized)."""
    w = memory.weights(shape, fmt, compute_dtype)
    return w.total - (w.embedding_bytes if not shape.tied_embeddings else 0)


def matmul_params(shape: ModelShape) -> int:
    """N: decoder Linear weights + the lm_head (vocab x hidden, tied or not)."""
    return shape.linear_params + shape.vocab * shape.hidden


def flops_per_token(shape: ModelShape, context: float) -> float:
    """2N + 4 x layers x d x L, d = heads x head_dim."""
    return 2 * matmul_params(shape) + 4 * shape.layers * shape.q_dim * context


def mean_decode_context(input_len: int, output_len: int) -> float:
    """L for a workload of input_len prompt tokens and output_len generated ones.

    Prefill yields the first output token; decode step t (t = 1 .. output_len - 1) then attends
    over input_len + t cached tokens. The mean over those steps is input_len + output_len / 2.
    """
    return input_len + output_len / 2


def cell_roofline(
    shape: ModelShape | str,
    fmt: str | FormatParams,
    kv_dtype: str,
    batch: int,
    input_len: int,
    output_len: int,
    peak: Peak,
    compute_dtype: str = "bfloat16",
) -> RooflineResult:
    """The roofline of one cell: `batch` concurrent sequences of input_len + output_len tokens,
    weights in `fmt` (a name or FormatParams; GGUF included), KV cache in `kv_dtype` ("auto",
    "fp8", ...; "auto" = the compute dtype's, 16 bits unless float32; also llama.cpp's f16
    cache). shape: a ModelShape or anything harness.shapes.load_shape takes. Raises HarnessError
    when a figure cannot be had (prequantized format, unknown KV dtype): its message is the row's
    reason."""
    shape = shape if isinstance(shape, ModelShape) else load_shape(shape)
    if input_len < 0 or output_len < 1:
        raise HarnessError(
            f"roofline: input_len must be at least 0 and output_len at least 1 (got {input_len}, {output_len})"
        )
    name = fmt if isinstance(fmt, str) else fmt.name
    precision = formats.REGISTRY[name].compute_precision if name in formats.REGISTRY else "bf16"
    weight_bytes = weight_bytes_per_step(shape, fmt, compute_dtype)
    decode = roofline_tok_s(
        batch=batch,
        context=mean_decode_context(input_len, output_len),
        weight_bytes=weight_bytes,
        kv_bytes_per_token=memory.kv_bytes_per_token(shape, kv_dtype, compute_dtype=compute_dtype),
        matmul_params=matmul_params(shape),
        layers=shape.layers,
        attention_width=shape.q_dim,
        peak=peak,
        compute_precision=precision,
    )
    prefill = prefill_seconds(
        batch,
        input_len,
        weight_bytes,
        matmul_params(shape),
        shape.layers,
        shape.q_dim,
        decode.compute_flops,
        peak.bandwidth_bytes_s,
    )
    seconds = prefill + (output_len - 1) * batch / decode.tok_s
    return replace(decode, end_to_end_tok_s=batch * output_len / seconds)
