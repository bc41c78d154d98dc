"""Unquantized baselines: the model served as it is, in bf16 or fp16."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from harness.config import FormatParams
from harness.formats.base import Format, QuantizeRequest


class _Baseline(Format):
    is_baseline: ClassVar[bool] = True
    engines: ClassVar[tuple[str, ...]] = ("vllm", "transformers")
    activation_bits: ClassVar[int] = 16
    weight_bits: ClassVar[int] = 16
    hardware: ClassVar[str] = "any GPU; on CPU bf16 is slow without AVX-512 BF16"
    dtype: ClassVar[str]

    def serving_dtype(self, params: FormatParams) -> str | None:
        return self.dtype

    def existing_checkpoint(self, params: FormatParams, model_dir: Path) -> Path | None:
        return model_dir

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
