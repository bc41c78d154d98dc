"""What this machine is: GPU (from NVML) or CPU, recorded in every row."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache

import psutil


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
    name, flags = platform.processor() or platform.machine(), ()
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
    return name, flags


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
