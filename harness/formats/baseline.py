"""Unquantized baselines: the model served as it is, in bf16 or fp16, or computed in fp32 (a
16-bit checkpoint upcast exactly: the baseline of CPUs without bf16 instructions)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from harness.formats.base import Format, QuantizeRequest
from harness.formats.layout import DTYPE_BYTES, Encoding
from harness.params import FormatParams


class _Baseline(Format[FormatParams]):
    params_model = FormatParams
    is_baseline: ClassVar[bool] = True
    activation_bits = 16
    weight_bits = 16
    hardware = "any GPU; on CPU bf16 is slow without AVX-512 BF16"
    dtype: ClassVar[str]

    def serving_dtype(self, params: FormatParams) -> str | None:
        return self.dtype

    def existing_checkpoint(self, params: FormatParams, model_dir: Path) -> Path | None:
        return model_dir

    def layout(self, params: FormatParams) -> Encoding:
        return Encoding(self.name, 8 * DTYPE_BYTES[self.dtype], None)  # as the engine holds it once loaded

    def quantize(self, request: QuantizeRequest) -> None:
        raise NotImplementedError("a baseline serves the source model directory; it has no quantize step")


class Bf16(_Baseline):
    name = "bf16"
    summary = "BF16 baseline (no quantization)"
    dtype = "bfloat16"


class Fp16(_Baseline):
    name = "fp16"
    summary = "FP16 baseline (no quantization)"
    dtype = "float16"


class Fp32(_Baseline):
    name = "fp32"
    summary = "FP32 compute of the 16-bit checkpoint (upcast exactly; no quantization)"
    dtype = "float32"
    activation_bits = 32
    hardware = "CPUs without bf16 instructions (AVX2, AVX-512 without BF16); twice bf16's memory"


#: model.dtype -> the baseline format that serves the model in it (a config's `baseline` entry)
BASELINE_FOR_DTYPE: dict[str, str] = {f.dtype: f.name for f in (Bf16, Fp16, Fp32)}
