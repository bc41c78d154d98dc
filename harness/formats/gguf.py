"""GGUF quantization types (K-quants and legacy types) built with llama.cpp's own tools and
served by llama.cpp: the CPU/edge formats."""

from __future__ import annotations

import os
from typing import ClassVar

from pydantic import Field

from harness import llamacpp_tools
from harness.formats.base import Format, QuantizeRequest
from harness.formats.layout import GgufLayout
from harness.params import FormatParams

# The llama.cpp quantization types offered as formats (llama_cpp.LLAMA_FTYPE_MOSTLY_<TYPE>).
GGUF_TYPES: tuple[str, ...] = (
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_0",
    "Q4_1",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_0",
    "Q5_1",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
    "F16",
    "BF16",
)
GGUF_FILE = "model.gguf"


class GgufParams(FormatParams):
    intermediate: str = Field(
        "bf16", pattern="^(f16|bf16|f32)$", description="the converter's output type before quantizing"
    )


class Gguf(Format[GgufParams]):
    """`gguf-<type>` for each llama.cpp type: gguf-q4_k_m, gguf-q5_k_m, gguf-q8_0, ..."""

    params_model = GgufParams
    activation_bits = 16
    hardware = (
        "CPU (AVX2/AVX-512/NEON), Apple Metal, CUDA through llama.cpp; "
        "K-quants need dims divisible by 256 or fall back per tensor"
    )

    def __init__(self, quant_type: str) -> None:
        self.type = quant_type.upper()
        self.name = f"gguf-{quant_type.lower()}"
        self.weight_bits = int("".join(ch for ch in self.type.split("_")[0] if ch.isdigit()))
        self.summary = f"llama.cpp {self.type}: convert_hf_to_gguf.py, then llama_model_quantize"

    artifact_kind = "gguf"

    def quant_type(self, params: FormatParams) -> str:
        return self.type

    def layout(self, params: FormatParams) -> GgufLayout:
        return GgufLayout(self.type)

    def quantize(self, request: QuantizeRequest) -> None:
        llamacpp_tools.require_bindings()
        params = self.own(request.params)
        log = request.out_dir / "convert.log"
        intermediate = request.out_dir / f"model-{params.intermediate}.gguf"
        llamacpp_tools.convert_hf_to_gguf(request.model_dir, intermediate, params.intermediate, log)
        target = self.quant_type(params)
        if target.lower() == params.intermediate:
            os.replace(intermediate, request.out_dir / GGUF_FILE)
            return
        llamacpp_tools.quantize(
            intermediate, request.out_dir / GGUF_FILE, llamacpp_tools.ftype(target), threads=os.cpu_count() or 1
        )
        intermediate.unlink()


class GgufBaseline(Gguf):
    """gguf-bf16 and gguf-f16: the unquantized weights in llama.cpp, the reference its own
    quantized types are compared with (llama.cpp's `--kl-divergence-base` is an F16 model)."""

    is_baseline: ClassVar[bool] = True


#: the GGUF types that are a llama.cpp baseline, not a quantization
GGUF_BASELINE_TYPES = ("BF16", "F16")


def gguf_formats() -> list[Gguf]:
    return [GgufBaseline(t) if t in GGUF_BASELINE_TYPES else Gguf(t) for t in GGUF_TYPES]
