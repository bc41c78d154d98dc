"""The Format protocol: what a quantization format is, needs, and how it builds its artifact."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.config import FormatParams

if TYPE_CHECKING:
    from harness.hardware import Hardware


@dataclass(frozen=True)
class QuantizeRequest:
    """Everything a format needs to build one artifact."""

    model_dir: Path  # the unquantized HF model directory
    params: FormatParams
    samples: list[list[int]] | None  # calibration token ids, None for data-free formats
    seq_len: int
    out_dir: Path  # an empty temporary directory; renamed into the cache when complete
    device: str  # "cpu" or "cuda"
    ignore: tuple[str, ...] = ()  # extra module names to leave unquantized (indivisible layers)


class Format(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    params_model: ClassVar[type[FormatParams]] = FormatParams
    engines: ClassVar[tuple[str, ...]] = ("vllm",)
    weight_bits: ClassVar[int]
    activation_bits: ClassVar[int]
    hardware: ClassVar[str]  # what the hardware needs to run it fast, in words
    #: the unquantized reference every other cell of a model is compared with
    is_baseline: ClassVar[bool] = False

    def needs_calibration(self, params: FormatParams) -> bool:
        return False

    def existing_checkpoint(self, params: FormatParams, model_dir: Path) -> Path | None:
        """A checkpoint served as it is (baselines, pre-quantized models): nothing is built."""
        return None

    def group_size(self, params: FormatParams) -> int | None:
        """The weight group size, when quantization is group-wise (dims must divide by it)."""
        return None

    def ignored_modules(self, params: FormatParams) -> tuple[str, ...]:
        return ()

    def ignore_indivisible(self, params: FormatParams) -> bool:
        return False

    def unsupported_reason(self, params: FormatParams, hw: "Hardware") -> str | None:
        """Why this format cannot be served on this hardware, decided before the engine starts
        (None: let the engine try, and take its own verdict)."""
        return None

    def serving_dtype(self, params: FormatParams) -> str | None:
        """A dtype the engine must use for this artifact, or None for the config's."""
        return None

    def indivisible_layers(self, params: FormatParams, layers: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Layers (name, input dim) that group-wise quantization cannot split into whole groups."""
        size = self.group_size(params)
        if size is None:
            return []
        ignored = set(self.ignored_modules(params))
        return [(name, dim) for name, dim in layers if name not in ignored and dim % size]

    @abstractmethod
    def quantize(self, request: QuantizeRequest) -> None:
        """Write a checkpoint an engine can load into request.out_dir."""
