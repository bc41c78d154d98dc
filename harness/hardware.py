"""What this machine is: GPU (from NVML) or CPU, recorded in every row; and its peaks for the
roofline (peak_for: a GPU's datasheet figures from harness.gpus, a CPU's measured once and cached)."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import psutil

from harness.errors import HarnessError
from harness.gpus import GPUS, Gpu, by_product


@dataclass(frozen=True)
class Hardware:
    device: str  # "cuda" or "cpu"
    name: str  # "NVIDIA H100 80GB HBM3" or the CPU model
    count: int  # GPUs, or CPU cores
    memory_bytes: int  # per GPU, or host memory
    compute_capability: str | None
    driver: str | None
    cpu_flags: tuple[str, ...]  # the ones that decide CPU kernels (avx512*, amx)

    def as_row(self) -> dict[str, object]:
        row = asdict(self)
        row["cpu_flags"] = ",".join(self.cpu_flags)
        return {f"hw_{k}": v for k, v in row.items()}


def _cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    name = platform.processor() or platform.machine()
    flags: tuple[str, ...] = ()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    all_flags = line.split(":", 1)[1].split()
                    flags = tuple(sorted(f for f in all_flags if f.startswith(("avx512", "amx", "avx2"))))
                    break
    except OSError:
        pass
    return name, tuple(f for f in flags if not f.startswith(_hidden_cpu_flags()))


def _hidden_cpu_flags() -> tuple[str, ...]:
    """HARNESS_HIDE_CPU_FLAGS (prefixes, comma-separated): flags a simulated smaller CPU lacks
    (scripts/avx2-host sets "avx512,amx"), so its rows, keys and expectations are that CPU's."""
    return tuple(p.strip() for p in os.environ.get("HARNESS_HIDE_CPU_FLAGS", "").split(",") if p.strip())


@lru_cache(maxsize=1)
def detect() -> Hardware:
    if os.environ.get("HARNESS_FORCE_CPU") != "1":
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            if count:
                handle = pynvml.nvmlDeviceGetHandleByIndex(0)
                name = pynvml.nvmlDeviceGetName(handle)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                return Hardware(
                    device="cuda",
                    name=name.decode() if isinstance(name, bytes) else name,
                    count=count,
                    memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    compute_capability=f"{major}.{minor}",
                    driver=str(pynvml.nvmlSystemGetDriverVersion()),
                    cpu_flags=(),
                )
        except Exception:  # noqa: BLE001 - no NVML library or no driver: a CPU machine
            pass
    name, flags = _cpu_model_and_flags()
    return Hardware("cpu", name, psutil.cpu_count(logical=True) or 1, psutil.virtual_memory().total, None, None, flags)


# ---------------------------------------------------------------------------------------------
# Peaks for the roofline: a GPU's datasheet figures, or a CPU's measured ones


#: Bump when the CPU measurement changes: old cache files are then ignored.
CPU_PEAK_VERSION = 2


@dataclass(frozen=True)
class Peak:
    """What one device can do at best: memory bandwidth and dense matmul FLOP/s (BF16, and where
    known the faster low-precision tensor-core peaks: FP8, INT8, FP4)."""

    bandwidth_bytes_s: float
    flops: float  # dense BF16 (a GPU's datasheet), or the CPU's best measured dtype
    source: str  # where the figures come from, written into each row
    low_precision_flops: tuple[tuple[str, float], ...] = ()  # (precision, dense FLOP/s)
    flops_precision: str = "bf16"  # what `flops` is the peak of: fp32 on a CPU without bf16 instructions

    def times(self, n: int) -> "Peak":
        """The aggregate of n such devices (tensor parallelism over n GPUs, communication ignored)."""
        if n == 1:
            return self
        low = tuple((name, flops * n) for name, flops in self.low_precision_flops)
        return Peak(self.bandwidth_bytes_s * n, self.flops * n, f"{n} x {self.source}", low, self.flops_precision)

    def flops_for(self, precision: str) -> tuple[float, str]:
        """The compute peak of matmuls in `precision` (bf16, fp8, int8, fp4), and which peak that is:
        `flops` where the device has no faster one known (a CPU: its best of FP32 and BF16)."""
        known = dict(self.low_precision_flops)
        if precision in known:
            return known[precision], precision
        return self.flops, self.flops_precision


def gpu_spec(hw: Hardware) -> Gpu:
    """The datasheet row of harness.gpus whose product name is this GPU's NVML name."""
    gpu = by_product(hw.name)
    if gpu is not None:
        return gpu
    known = ", ".join(g.product for g in GPUS.values())
    raise HarnessError(
        f"no datasheet figures for GPU {hw.name!r} in harness/gpus.py (known: {known}); add a row to get a roofline"
    )


def peak_for(
    hw: Hardware, cache_dir: Path | None, remeasure: bool = False, say: Callable[[str], None] | None = None
) -> Peak:
    """Per device: a GPU's datasheet bandwidth and dense BF16 FLOP/s (harness/gpus.py), or this
    CPU's measured figures (measured once, then read from cache_dir/hardware/*.json; cache_dir
    None: measured every time).

    Raises HarnessError for a GPU harness/gpus.py does not know (the message is the row's reason).
    """
    if hw.device == "cuda":
        gpu = gpu_spec(hw)
        low: list[tuple[str, float]] = []
        if gpu.fp8_flops:
            low.append(("fp8", gpu.fp8_flops))
        if "int8" in gpu.native:  # INT8 tensor cores run at the FP8 rate (Ada, Hopper), 2x BF16 before (Ampere)
            low.append(("int8", gpu.fp8_flops or 2 * gpu.bf16_flops))
        if gpu.fp4_flops:
            low.append(("fp4", gpu.fp4_flops))
        return Peak(
            gpu.bandwidth_bytes_s,
            gpu.bf16_flops,
            f"{gpu.name} datasheet: {gpu.bandwidth_bytes_s / 1e12:g} TB/s, {gpu.bf16_flops / 1e12:g} dense BF16 "
            f"TFLOP/s ({gpu.source})",
            tuple(low),
        )
    return cpu_peak(hw, cache_dir, remeasure, say)


def cpu_peak_cache_file(hw: Hardware, cache_dir: Path) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", hw.name.lower()).strip("-") or "cpu"
    return Path(cache_dir) / "hardware" / f"cpu-peak-{slug}-{hw.count}c-v{CPU_PEAK_VERSION}.json"


def cpu_peak(
    hw: Hardware, cache_dir: Path | None, remeasure: bool = False, say: Callable[[str], None] | None = None
) -> Peak:
    """This CPU's peak, measured by measure_cpu_peak() on the first call and cached as JSON keyed
    by CPU model, core count and CPU_PEAK_VERSION (delete the file, or remeasure=True, to redo it)."""
    path = cpu_peak_cache_file(hw, cache_dir) if cache_dir is not None else None
    figures: dict[str, Any] | None = None
    if path is not None and not remeasure and path.is_file():
        try:
            figures = json.loads(path.read_text(encoding="utf-8"))
            float(figures["bandwidth_bytes_s"]), float(figures["flops"])
        except (OSError, ValueError, KeyError, TypeError):
            figures = None  # unreadable: measure again
    if figures is None:
        figures = {
            "cpu": hw.name,
            "cores": hw.count,
            "version": CPU_PEAK_VERSION,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **measure_cpu_peak(say=say, bf16_native=bf16_is_native(hw.cpu_flags)),
        }
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.{os.getpid()}")
            staging.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
            os.replace(staging, path)
    return Peak(
        float(figures["bandwidth_bytes_s"]),
        float(figures["flops"]),
        f"measured on this host ({hw.name}, {hw.count} cores, {figures.get('measured_at', '?')}): "
        f"{float(figures['bandwidth_bytes_s']) / 1e9:.1f} GB/s numpy copy/add, "
        f"{float(figures['flops']) / 1e9:.1f} GFLOP/s torch {figures.get('flops_dtype', '?')} matmul"
        + (f" ({figures['flops_note']})" if figures.get("flops_note") else ""),
        flops_precision=_SHORT_DTYPE.get(str(figures.get("flops_dtype")), "bf16"),
    )


#: torch's dtype names as the roofline's precision column writes them
_SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16"}


def _l3_bytes() -> int:
    """Total L3 over the distinct caches (sysfs); 32 MiB when it cannot be read."""
    seen: dict[str, int] = {}
    for index in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cache/index3"):
        try:
            shared = (index / "shared_cpu_list").read_text().strip()
            size = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        seen[shared] = int(size.rstrip("KMG")) * unit
    return sum(seen.values()) or 32 * 2**20


def _usable_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


#: bf16 instruction sets: without one of them torch emulates bf16 matmuls (about 500x slower here)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_is_native(flags: tuple[str, ...]) -> bool:
    return any(flag in flags for flag in BF16_FLAGS)


def compute_dtype(hw: Hardware) -> str:
    """What `model.dtype: auto` computes in: bfloat16 on GPUs and on CPUs with bf16 instructions,
    float32 on CPUs without them, where torch emulates bf16 (a 576x1536 linear layer at 64 rows:
    6.9 GFLOP/s in bf16, 42.1 in float32 on a 2-core Zen 1)."""
    if hw.device == "cuda" or bf16_is_native(hw.cpu_flags):
        return "bfloat16"
    return "float32"


def measure_cpu_peak(
    budget_s: float = 8.0,
    array_bytes: int | None = None,
    matmul_n: int = 2048,
    say: Callable[[str], None] | None = None,
    bf16_native: bool | None = None,
) -> dict[str, Any]:
    """Measure this CPU's memory bandwidth and dense FLOP/s, using every usable core, within
    about budget_s seconds on any host.

    Bandwidth, STREAM-style: float64 arrays of `array_bytes` each (default 4 x the L3, at least
    64 MiB, at most 512 MiB and 1/8 of free memory), split into one slice per thread (numpy
    releases the GIL, so the slices run in parallel). copy a = b counts 2 x array_bytes (read +
    write), add a = b + c 3 x (STREAM's convention: the write-allocate read is not counted); the
    best of a few repeats of each, the higher of the two is the figure.
    FLOP/s: torch matmuls in float32 and bfloat16, 2 n^3 FLOPs each, the best repeat; the higher
    dtype is the figure. Each size n (at most matmul_n) is chosen from a tiny timed trial so
    that a few repeats fit the dtype's share of the budget. bfloat16 is skipped where the CPU
    has no bf16 instructions (torch emulates it there, ~0.3 GFLOP/s): the result says so.
    `say` is told what is being measured, as it starts.
    """
    import numpy as np
    import torch

    say = say or (lambda text: None)
    threads = _usable_threads()
    start = time.perf_counter()
    if array_bytes is None:
        array_bytes = min(max(4 * _l3_bytes(), 64 * 2**20), 512 * 2**20, psutil.virtual_memory().available // 8)
    n = max(threads * 1024, array_bytes // 8)
    say(f"CPU peak: memory bandwidth ({n * 8 / 2**20:.0f} MiB arrays, {threads} threads)")
    arrays = [np.zeros(n), np.full(n, 1.0), np.full(n, 2.0)]  # np.full touches every page
    bounds = np.linspace(0, n, threads + 1, dtype=np.int64)
    slices = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def timed(kernel: Callable[[slice], Any], stop_at: float, repeats: int = 5) -> float:
        best = math.inf
        with ThreadPoolExecutor(threads) as pool:
            for i in range(repeats):
                t0 = time.perf_counter()
                list(pool.map(kernel, slices))
                best = min(best, time.perf_counter() - t0)
                if i >= 1 and time.perf_counter() > stop_at:
                    break
        return best

    a, b, c = arrays
    copy_s = timed(lambda s: np.copyto(a[s], b[s]), start + 0.2 * budget_s)
    add_s = timed(lambda s: np.add(b[s], c[s], out=a[s]), start + 0.4 * budget_s)
    arrays.clear()
    copy_bw, add_bw = 2 * n * 8 / copy_s, 3 * n * 8 / add_s

    if bf16_native is None:
        bf16_native = bf16_is_native(_cpu_model_and_flags()[1])
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    flops: dict[str, float] = {}
    sizes: dict[str, int] = {}
    note = None
    try:
        plan = [(torch.float32, start + 0.7 * budget_s)]
        if bf16_native:
            plan.append((torch.bfloat16, start + budget_s))
        else:
            note = "bfloat16 not measured: this CPU has no bf16 instructions (torch emulates them)"
        for dtype, stop_at in plan:
            name = str(dtype).removeprefix("torch.")
            size = _matmul_size(dtype, max_n=matmul_n, seconds=max(0.05, (stop_at - time.perf_counter()) / 4))
            say(f"CPU peak: {name} matmul {size}x{size}")
            x, y = torch.rand(size, size, dtype=dtype), torch.rand(size, size, dtype=dtype)
            out = torch.empty(size, size, dtype=dtype)
            torch.matmul(x, y, out=out)  # warm-up (thread pool, kernel choice)
            best = math.inf
            for i in range(5):
                t0 = time.perf_counter()
                torch.matmul(x, y, out=out)
                best = min(best, time.perf_counter() - t0)
                if i >= 1 and time.perf_counter() > stop_at:
                    break
            flops[name] = 2 * size**3 / best
            sizes[name] = size
    finally:
        torch.set_num_threads(old_threads)
    best_dtype = max(flops, key=flops.__getitem__)
    return {
        "bandwidth_bytes_s": max(copy_bw, add_bw),
        "copy_bytes_s": copy_bw,
        "add_bytes_s": add_bw,
        "flops": flops[best_dtype],
        "flops_dtype": best_dtype,
        "flops_by_dtype": flops,
        "flops_note": note,
        "threads": threads,
        "array_bytes": n * 8,
        "matmul_n": sizes,
        "seconds": round(time.perf_counter() - start, 2),
    }


def _matmul_size(dtype: Any, max_n: int, seconds: float) -> int:
    """The largest n (a power of two, 128..max_n) whose n x n matmul takes at most `seconds`,
    extrapolated from one timed 128 x 128 trial (time grows as n^3)."""
    import torch

    trial = 128
    x = torch.rand(trial, trial, dtype=dtype)
    torch.matmul(x, x)
    t0 = time.perf_counter()
    torch.matmul(x, x)
    per_flop = (time.perf_counter() - t0) / (2 * trial**3)
    size = min(trial, max_n)
    while size * 2 <= max_n and per_flop * 2 * (size * 2) ** 3 <= seconds:
        size *= 2
    return size
