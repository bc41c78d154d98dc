"""Datasheet figures of common GPUs, for planning a deployment without the GPU at hand.

`harness.hardware` says what *this* machine is; this table says what a GPU one does not have
would offer, so `harness.memory` can answer "does it fit an H100?" on a laptop.

Units, one per field, never mixed:
  memory_bytes       the vendor's capacity. HBM and GDDR come in binary sizes (an H100's five
                     16 GiB HBM3 stacks), so a datasheet's "80 GB" is 80 GiB: stored as 80 * 2**30.
  visible_bytes      what nvidia-smi reports as memory.total (MiB * 2**20): the capacity less the
                     driver's reservation (and, on GDDR cards with ECC on, the ECC share). vLLM's
                     gpu_memory_utilization is a fraction of CUDA's total, which is this figure or
                     a little less (about 0.4 GiB less on an H100: torch reports 79.1-79.3 GiB).
  bandwidth_bytes_s  decimal, as vendors quote it: 3.35 TB/s = 3.35e12 bytes/s.
  *_flops            dense tensor-core FLOP/s (vendors headline 2:4-sparse figures, twice these),
                     with FP32 accumulation.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import HarnessError

GIB = 2**30
MIB = 2**20
TB = 10**12  # bandwidth and FLOP/s prefixes are decimal
TERA = 10**12


@dataclass(frozen=True)
class Gpu:
    name: str  # the key: "h100-80gb"
    product: str  # the name nvidia-smi prints
    memory_bytes: int  # datasheet capacity, its "GB" read as GiB (see the module docstring)
    visible_bytes: int  # nvidia-smi memory.total
    bandwidth_bytes_s: float
    bf16_flops: float  # dense
    fp8_flops: float | None  # dense; None: no FP8 tensor cores
    fp4_flops: float | None  # dense; None: no FP4 tensor cores
    compute_capability: str
    native: tuple[str, ...]  # tensor-core input types: what runs without dequantizing first
    source: str  # where the figures come from

    @property
    def capability(self) -> float:
        return float(self.compute_capability)


_AMPERE = ("fp16", "bf16", "int8")
_ADA_HOPPER = ("fp16", "bf16", "int8", "fp8")  # FP8 tensor cores from SM 8.9
_BLACKWELL = ("fp16", "bf16", "int8", "fp8", "fp4")  # FP4 (NVFP4, MXFP4) from SM 10.0

GPUS: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in (
        # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column: 80 GB HBM3, 3.35 TB/s,
        # BF16 1,979 / FP8 3,958 TFLOPS with sparsity. nvidia-smi: 81559MiB.
        Gpu(
            "h100-80gb",
            "NVIDIA H100 80GB HBM3",
            80 * GIB,
            81559 * MIB,
            3.35 * TB,
            989.5 * TERA,
            1979 * TERA,
            None,
            "9.0",
            _ADA_HOPPER,
            "NVIDIA H100 datasheet (SXM)",
        ),
        # Same datasheet, H100 PCIe column: 80 GB HBM2e, 2 TB/s, BF16 1,513 / FP8 3,026 TFLOPS
        # with sparsity. nvidia-smi: 81559MiB.
        Gpu(
            "h100-pcie",
            "NVIDIA H100 PCIe",
            80 * GIB,
            81559 * MIB,
            2.0 * TB,
            756.5 * TERA,
            1513 * TERA,
            None,
            "9.0",
            _ADA_HOPPER,
            "NVIDIA H100 datasheet (PCIe)",
        ),
        # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: 141 GB HBM3e, 4.8 TB/s, the H100's
        # tensor cores (BF16 1,979 / FP8 3,958 TFLOPS with sparsity). nvidia-smi: 143771MiB.
        Gpu(
            "h200",
            "NVIDIA H200",
            141 * GIB,
            143771 * MIB,
            4.8 * TB,
            989.5 * TERA,
            1979 * TERA,
            None,
            "9.0",
            _ADA_HOPPER,
            "NVIDIA H200 datasheet (SXM)",
        ),
        # NVIDIA A100 Tensor Core GPU datasheet, A100 80GB SXM: 80 GB HBM2e, 2,039 GB/s,
        # BF16 312 TFLOPS dense (624 sparse); no FP8. nvidia-smi: 81920MiB.
        Gpu(
            "a100-80gb",
            "NVIDIA A100-SXM4-80GB",
            80 * GIB,
            81920 * MIB,
            2.039 * TB,
            312 * TERA,
            None,
            None,
            "8.0",
            _AMPERE,
            "NVIDIA A100 datasheet (80GB SXM)",
        ),
        # Same datasheet, A100 40GB SXM: 40 GB HBM2, 1,555 GB/s, BF16 312 TFLOPS dense.
        # nvidia-smi: 40960MiB.
        Gpu(
            "a100-40gb",
            "NVIDIA A100-SXM4-40GB",
            40 * GIB,
            40960 * MIB,
            1.555 * TB,
            312 * TERA,
            None,
            None,
            "8.0",
            _AMPERE,
            "NVIDIA A100 datasheet (40GB SXM)",
        ),
        # NVIDIA L40S datasheet: 48 GB GDDR6 with ECC, 864 GB/s, BF16 362.05 / FP8 733 TFLOPS
        # dense. nvidia-smi: 46068MiB (ECC on takes 1/16 of GDDR6).
        Gpu(
            "l40s",
            "NVIDIA L40S",
            48 * GIB,
            46068 * MIB,
            0.864 * TB,
            362.05 * TERA,
            733 * TERA,
            None,
            "8.9",
            _ADA_HOPPER,
            "NVIDIA L40S datasheet",
        ),
        # NVIDIA DGX B200 datasheet: 1,440 GB GPU memory and 64 TB/s HBM3e over 8 GPUs (180 GB,
        # 8 TB/s each; 192 GB of HBM3e are fitted, 180 GB offered); HGX B200: FP4 144 / FP8 72 /
        # BF16 36 PFLOPS with sparsity over 8 GPUs = 9 / 4.5 / 2.25 PFLOPS dense each.
        # nvidia-smi: 183359MiB.
        Gpu(
            "b200",
            "NVIDIA B200",
            180 * GIB,
            183359 * MIB,
            8.0 * TB,
            2250 * TERA,
            4500 * TERA,
            9000 * TERA,
            "10.0",
            _BLACKWELL,
            "NVIDIA DGX B200 / HGX B200 datasheets",
        ),
        # NVIDIA Ada Lovelace architecture whitepaper, appendix A (GeForce RTX 4090): 24 GB
        # GDDR6X, 1,008 GB/s; with FP32 accumulate BF16 165.2 / FP8 330.3 TFLOPS dense (GeForce
        # runs FP32 accumulation at half the FP16-accumulate rate, 330.3 / 660.6).
        # nvidia-smi: 24564MiB.
        Gpu(
            "rtx-4090",
            "NVIDIA GeForce RTX 4090",
            24 * GIB,
            24564 * MIB,
            1.008 * TB,
            165.2 * TERA,
            330.3 * TERA,
            None,
            "8.9",
            _ADA_HOPPER,
            "NVIDIA Ada Lovelace architecture whitepaper (RTX 4090)",
        ),
    )
}


def get(name: str) -> Gpu:
    """The GPU called `name` (case-insensitive), or a HarnessError listing the known ones."""
    gpu = GPUS.get(name.strip().lower())
    if gpu is None:
        raise HarnessError(f"unknown GPU {name!r} (known: {', '.join(GPUS)})")
    return gpu


def by_product(product: str | None) -> Gpu | None:
    """The GPU whose NVML product name is `product` (whitespace and case aside), or None."""
    if not product:
        return None
    wanted = " ".join(product.split()).lower()
    return next((gpu for gpu in GPUS.values() if gpu.product.lower() == wanted), None)
