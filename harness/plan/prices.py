"""What an hour of the machine costs, for the cost per million output tokens at capacity: the
config's price when it gives one (`serving.capacity.usd_per_hour`, with its `price_source`), else
this table's reference price for the hardware the cell ran on, with its source and date. Cloud
prices move and vary by provider several-fold for the same GPU (published ranges in 2026: H100
from about $2 to $5 per GPU-hour on demand), so a reference price is a starting point for a
comparison between formats on one machine, which it does not change; a team's own quote belongs
in the config."""

from __future__ import annotations

from dataclasses import dataclass

from harness import gpus
from harness.config import CapacitySpec
from harness.hardware import Hardware

_MERCATUS = "https://www.mercatus-ai.com/blog/cloud-gpu-pricing"
_EC2 = "https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/"


@dataclass(frozen=True)
class Price:
    usd_per_hour: float  # per GPU, or per CPU core (vCPU)
    basis: str
    source: str
    dated: str

    def line(self, units: int, unit: str) -> str:
        return (
            f"harness reference price: ${self.usd_per_hour:g}/h per {unit} x {units} ({self.basis}; {self.source}, "
            f"{self.dated}); set serving.capacity.usd_per_hour for your own"
        )


#: on-demand, specialty GPU clouds, the midpoint of the published range (harness.gpus names)
GPU_PRICES: dict[str, Price] = {
    "a100-80gb": Price(1.30, "specialty-cloud on-demand range $1.10-1.50, midpoint", _MERCATUS, "May 2026"),
    "h100-80gb": Price(3.00, "specialty-cloud on-demand range $2.50-3.50 (H100 SXM5), midpoint", _MERCATUS, "May 2026"),
    "h200": Price(4.00, "specialty-cloud on-demand range $3.50-4.50 (H200 SXM5), midpoint", _MERCATUS, "May 2026"),
}
#: a CPU host by the core: AWS m7g.large (2 vCPU) Linux on-demand in us-east-1, $0.0816/h
CPU_CORE_PRICE = Price(0.0408, "AWS m7g.large, 2 vCPU, Linux on-demand us-east-1: $0.0816/h", _EC2, "17 June 2026")


def price_for(spec: CapacitySpec, hw: Hardware, devices: int) -> tuple[float | None, str]:
    """The hourly price of what the cell ran on (`devices` GPUs, or the host's cores), and where
    it comes from."""
    if spec.usd_per_hour is not None:
        return spec.usd_per_hour, f"config: {spec.price_source or 'serving.capacity.usd_per_hour (no source given)'}"
    if hw.device == "cpu":
        return CPU_CORE_PRICE.usd_per_hour * hw.count, CPU_CORE_PRICE.line(hw.count, "core")
    gpu = gpus.by_product(hw.name)
    price = GPU_PRICES.get(gpu.name) if gpu is not None else None
    if price is None:
        return None, f"no reference price for {hw.name}: set serving.capacity.usd_per_hour (and price_source)"
    return price.usd_per_hour * devices, price.line(devices, "GPU")
