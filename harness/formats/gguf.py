"""GGUF quantization types (K-quants and legacy types) built with llama.cpp's own tools and
served by llama.cpp: the CPU/edge formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from harness import llamacpp_tools
from harness.errors import HarnessError
from harness.formats.base import Format, QuantizeRequest
from harness.formats.layout import GgufLayout
from harness.hardware import Hardware
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
IMATRIX_FILE = "imatrix.gguf"  # kept beside the model: the evidence of which data it protected


class GgufParams(FormatParams):
    intermediate: str = Field(
        "bf16", pattern="^(f16|bf16|f32)$", description="the converter's output type before quantizing"
    )


class GgufQuantParams(GgufParams):
    imatrix: bool = Field(
        False,
        description="weigh the rounding by llama-imatrix's importance matrix from the cell's calibration set "
        "(the calibration axis then applies, as for GPTQ and AWQ)",
        exclude_if=lambda on: not on,  # off: the keys of the cells before this option, unchanged
    )


class Gguf(Format[GgufParams]):
    """`gguf-<type>` for each llama.cpp type: gguf-q4_k_m, gguf-q5_k_m, gguf-q8_0, ..."""

    params_model: type[GgufParams] = GgufQuantParams
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
    # the HF -> GGUF converter (gguf) and llama.cpp's quantizer (built from llama-cpp-python's sdist)
    artifact_packages = ("gguf", "llama-cpp-python")

    def quant_type(self, params: FormatParams) -> str:
        return self.type

    def layout(self, params: FormatParams) -> GgufLayout:
        return GgufLayout(self.type)

    def expected_kernels(self, params: FormatParams, engine: str, hw: Hardware) -> tuple[str, ...]:
        """llama.cpp: the type's own ggml tensor type (Q4_K_M -> q4_K, Q8_0 -> q8_0) must be the
        most common quantized one it loaded, not a fallback such as q5_0 for rows that are not
        a multiple of 256."""
        return (f"ggml {ggml_type(self.type)}",) if engine == "llamacpp" else ()

    def needs_calibration(self, params: FormatParams) -> bool:
        return uses_imatrix(self.own(params))

    def quantize(self, request: QuantizeRequest) -> None:
        llamacpp_tools.require_bindings()
        params = self.own(request.params)
        log = request.out_dir / "convert.log"
        intermediate = request.out_dir / f"model-{params.intermediate}.gguf"
        llamacpp_tools.convert_hf_to_gguf(request.model_dir, intermediate, params.intermediate, log)
        target = self.quant_type(params)
        threads = os.cpu_count() or 1
        if target.lower() == params.intermediate:
            os.replace(intermediate, request.out_dir / GGUF_FILE)
            return
        if uses_imatrix(params):
            imatrix = request.out_dir / IMATRIX_FILE
            build_importance_matrix(request, intermediate, imatrix, threads, log)
            llamacpp_tools.quantize_with_imatrix(
                intermediate, request.out_dir / GGUF_FILE, target, imatrix, threads, log
            )
        else:
            llamacpp_tools.quantize(intermediate, request.out_dir / GGUF_FILE, llamacpp_tools.ftype(target), threads)
        intermediate.unlink()


def ggml_type(quant_type: str) -> str:
    """The ggml tensor type a llama.cpp file type is mainly made of: Q4_K_M -> q4_K, Q8_0 -> q8_0."""
    parts = quant_type.split("_")
    if len(parts) > 1 and parts[1] == "K":
        return f"{parts[0].lower()}_K"
    return quant_type.lower()


def uses_imatrix(params: GgufParams) -> bool:
    return bool(getattr(params, "imatrix", False))


def build_importance_matrix(request: QuantizeRequest, model: Path, out_file: Path, threads: int, log: Path) -> None:
    """llama-imatrix over the cell's calibration samples: their token ids decoded back to text
    (llama-imatrix tokenizes a text file with the GGUF's own tokenizer, the same vocabulary),
    one chunk of seq_len tokens per sample."""
    if not request.samples or len(request.samples) < 2:
        raise HarnessError(
            "calibration.samples: llama-imatrix needs at least 2 samples (2 chunks of seq_len tokens); raise samples"
        )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
    text = request.out_dir / "imatrix-calibration.txt"
    text.write_text("\n\n".join(tokenizer.decode(ids, skip_special_tokens=True) for ids in request.samples))
    try:
        llamacpp_tools.importance_matrix(model, text, out_file, request.seq_len, len(request.samples), threads, log)
    finally:
        text.unlink(missing_ok=True)


class GgufBaseline(Gguf):
    """gguf-bf16 and gguf-f16: the unquantized weights in llama.cpp, the reference its own
    quantized types are compared with (llama.cpp's `--kl-divergence-base` is an F16 model)."""

    is_baseline: ClassVar[bool] = True
    params_model = GgufParams  # not quantized: no importance matrix


#: the GGUF types that are a llama.cpp baseline, not a quantization
GGUF_BASELINE_TYPES = ("BF16", "F16")


def gguf_formats() -> list[Gguf]:
    return [GgufBaseline(t) if t in GGUF_BASELINE_TYPES else Gguf(t) for t in GGUF_TYPES]
