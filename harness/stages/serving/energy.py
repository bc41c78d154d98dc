"""Energy per load point on a GPU: NVML's cumulative energy counter (millijoules since the driver
loaded, per board; Volta and later) read before and after the point, summed over the visible GPUs.
It is the boards' energy, idle draw included, as a datacenter meter would bill it; on a CPU host
there is no such counter and nothing is measured (the row says so)."""

from __future__ import annotations

from typing import Any

NONE_MEASURED = "no GPU energy counter on this host: no energy figure"


class EnergyMeter:
    def __init__(self, pynvml: Any, handles: list[Any]) -> None:
        self.pynvml = pynvml
        self.handles = handles

    @classmethod
    def open(cls) -> EnergyMeter | None:
        """A meter over every visible GPU, or None (no NVML, no GPU, or a GPU without the counter)."""
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            meter = cls(pynvml, handles)
            return meter if handles and meter.joules() is not None else None
        except Exception:  # noqa: BLE001 - no driver, no GPU: no energy figure
            return None

    def joules(self) -> float | None:
        try:
            return sum(int(self.pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self.handles) / 1000.0
        except Exception:  # noqa: BLE001 - the counter is not supported on this board
            return None


def point_columns(before: float | None, after: float | None, output_tokens: int) -> dict[str, float | None]:
    """A load point's energy and joules per output token (None where not measured)."""
    if before is None or after is None:
        return {"energy_j": None, "j_per_output_token": None}
    used = after - before
    return {"energy_j": used, "j_per_output_token": used / output_tokens if output_tokens else None}
