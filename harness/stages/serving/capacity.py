"""Capacity at the SLO: the highest Poisson request rate whose p99 latencies meet the SLO, found
as the sweep tools of the field find it (vLLM's sweep, GuideLLM, AIPerf): bracket by doubling or
halving from a start rate, then bisect, within a bounded number of probes. A probe meets the
SLO when every request completed and each p99 set (TTFT, TPOT) is at or under its threshold.
Its cost: the hourly price of the machine over the output tokens per hour it serves there."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.config import CapacitySpec

#: the slowest rate a search halves down to, as a fraction of the start rate
_MIN_RATE_FRACTION = 1 / 64
#: ... and as a fraction of the rate the server completes requests one at a time (the sweep's
#: concurrency-1 point). At that fraction rho a Poisson stream keeps rho requests in flight on
#: average (Little's law) and a request finds another in flight with probability 1 - e^-rho: at
#: 1/2, 6 of a probe's 16 requests; at 1/4, 4. Either way its p99 is that of overlapping requests,
#: so halving further measures the same thing at twice the cost (a probe of n requests lasts
#: n / rate). Measured on a simulated AVX2 host, INT8: TPOT p99 156 ms at rho 0.64, 168 ms at 0.32
#: against 86 ms one at a time; those two probes took 395 s of the cell's 694 s under load.
ALONE_FRACTION = 1 / 2


@dataclass(frozen=True)
class Capacity:
    rps: float | None  # the highest rate that met the SLO (None: none did)
    output_tok_s: float | None  # output tokens/s at that rate
    probes: list[dict[str, Any]]  # every probe's point, in the order run, with "meets_slo"
    note: str

    def columns(self, usd_per_hour: float | None) -> dict[str, Any]:
        cost = None
        if usd_per_hour is not None and self.output_tok_s:
            cost = usd_per_hour / (self.output_tok_s * 3600) * 1e6
        return {
            "capacity_rps": self.rps,
            "capacity_output_tok_s": self.output_tok_s,
            "capacity_probes": json.dumps(self.probes, default=str) if self.probes else None,
            "capacity_note": self.note,
            "usd_per_million_output_tokens": cost,
        }


def meets(point: dict[str, Any], spec: CapacitySpec) -> bool:
    if not point.get("requests") or point.get("failed") or point.get("completed") != point.get("requests"):
        return False
    for metric, limit in (("ttft", spec.ttft_ms_p99), ("tpot", spec.tpot_ms_p99)):
        if limit is None:
            continue
        value = point.get(f"{metric}_p99_ms")
        if value is None or value > limit:
            return False
    return True


def alone_rate(point: dict[str, Any] | None) -> float | None:
    """Requests per second a concurrency-1 load point completed (one request at a time)."""
    if not point or not point.get("completed") or not point.get("duration_s"):
        return None
    return float(point["completed"]) / float(point["duration_s"])


def search(
    probe: Callable[[float], dict[str, Any]], spec: CapacitySpec, alone: dict[str, Any] | None = None
) -> Capacity:
    """probe(rate) runs one load point at that Poisson rate and returns its summary. `alone`:
    the sweep's concurrency-1 point, where there is one. If it missed the SLO no rate can meet it
    (a Poisson stream only adds load to requests served one at a time), so nothing is probed; if
    it met it, halving stops at ALONE_FRACTION of its request rate."""
    thresholds = ", ".join(
        f"{name} p99 <= {limit:g} ms"
        for name, limit in (("TTFT", spec.ttft_ms_p99), ("TPOT", spec.tpot_ms_p99))
        if limit is not None
    )
    if alone is not None and not meets(alone, spec):
        return Capacity(
            None, None, [], f"not searched: one request at a time (concurrency 1) already missed {thresholds}"
        )
    floor = spec.start_rate * _MIN_RATE_FRACTION
    one_at_a_time = alone_rate(alone)
    if one_at_a_time is not None:
        floor = max(floor, one_at_a_time * ALONE_FRACTION)
    probes: list[dict[str, Any]] = []
    good: tuple[float, dict[str, Any]] | None = None
    bad: float | None = None

    def run(rate: float) -> bool:
        # a probe is judged by the capacity's own p99 thresholds: serving.slo's per-request
        # goodput is not kept for it
        point = {k: v for k, v in probe(rate).items() if k not in ("per_request", "goodput_rps", "slo_attained_pct")}
        ok = meets(point, spec)
        point["meets_slo"] = ok
        probes.append(point)
        return ok

    rate = spec.start_rate
    while len(probes) < spec.max_probes and (good is None or bad is None):
        if run(rate):
            good = (rate, probes[-1])
            rate *= 2
        else:
            bad = rate
            if rate / 2 < floor:
                break
            rate /= 2
    while good is not None and bad is not None and len(probes) < spec.max_probes:
        if (bad - good[0]) / bad <= spec.tolerance:
            break
        middle = (good[0] + bad) / 2
        if run(middle):
            good = (middle, probes[-1])
        else:
            bad = middle
    if good is None:
        slowest = min(p["request_rate"] for p in probes)
        note = f"no probed rate met {thresholds} ({len(probes)} probes, down to {slowest:g}/s)"
        if one_at_a_time is not None and slowest / 2 < floor:
            note += (
                f"; concurrency 1 met it at {one_at_a_time:.3g} req/s, and rates under {floor:.3g}/s "
                "would see requests overlap as these did, only more slowly: the SLO holds only one request at a time"
            )
        return Capacity(None, None, probes, note)
    bound = f"{bad:g}/s missed it" if bad is not None else "no probed rate missed it: a lower bound"
    note = f"{good[0]:g} req/s met {thresholds}; {bound} ({len(probes)} probes)"
    return Capacity(good[0], good[1].get("output_tok_s"), probes, note)
