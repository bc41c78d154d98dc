"""Capacity at the SLO (issue 12): bracket, then bisect, within a bounded number of probes; the
cost per million output tokens at that rate. The probes here are SYNTHETIC load points (a
function of the rate) that test the search; tests/integration/test_smoke_run.py runs it on vLLM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import matrix
from harness.config import CapacitySpec, load_config
from harness.errors import HarnessError
from harness.stages.serving.capacity import meets, search


def server_with_capacity(limit_rps: float, calls: list[float]) -> Any:
    """A SYNTHETIC server: p99 TTFT 100 ms up to limit_rps, 2 s above it."""

    def probe(rate: float) -> dict[str, Any]:
        calls.append(rate)
        ttft = 100.0 if rate <= limit_rps else 2000.0
        return {
            "request_rate": rate,
            "requests": 16,
            "completed": 16,
            "failed": 0,
            "ttft_p99_ms": ttft,
            "tpot_p99_ms": 20.0,
            "output_tok_s": 40.0 * rate,
        }

    return probe


def test_bracket_then_bisect_to_the_tolerance() -> None:
    calls: list[float] = []
    found = search(server_with_capacity(3.3, calls), CapacitySpec(ttft_ms_p99=500, tolerance=0.1))
    assert calls == [1.0, 2.0, 4.0, 3.0, 3.5, 3.25]  # doubled to a miss, then halved the gap
    assert found.rps == 3.25 and found.output_tok_s == pytest.approx(130.0)
    assert [p["meets_slo"] for p in found.probes] == [True, True, False, True, False, True]
    assert "3.25 req/s met TTFT p99 <= 500 ms; 3.5/s missed it (6 probes)" == found.note


def test_the_probe_budget_bounds_the_search() -> None:
    calls: list[float] = []
    found = search(server_with_capacity(3.3, calls), CapacitySpec(ttft_ms_p99=500, max_probes=4, tolerance=0.01))
    assert len(calls) == 4 and found.rps == 3.0


def test_a_server_that_never_meets_the_slo_has_no_capacity() -> None:
    calls: list[float] = []
    found = search(server_with_capacity(0.001, calls), CapacitySpec(ttft_ms_p99=500, max_probes=5))
    assert calls == [1.0, 0.5, 0.25, 0.125, 0.0625] and found.rps is None
    assert found.columns(2.0)["usd_per_million_output_tokens"] is None
    assert "no probed rate met TTFT p99 <= 500 ms" in found.note


def test_met_everywhere_is_a_lower_bound() -> None:
    found = search(server_with_capacity(1e9, []), CapacitySpec(tpot_ms_p99=50, max_probes=3))
    assert found.rps == 4.0 and "a lower bound" in found.note


def test_a_failed_request_misses_the_slo() -> None:
    point = {"requests": 16, "completed": 15, "failed": 1, "ttft_p99_ms": 1.0, "tpot_p99_ms": 1.0}
    assert not meets(point, CapacitySpec(ttft_ms_p99=500))


def test_cost_per_million_output_tokens_at_capacity() -> None:
    found = search(server_with_capacity(3.3, []), CapacitySpec(ttft_ms_p99=500))
    columns = found.columns(usd_per_hour=2.0)
    # $2/h over 130 output tok/s x 3600 s = 468,000 tokens/h
    assert columns["usd_per_million_output_tokens"] == pytest.approx(2.0 / 468_000 * 1e6)
    assert len(json.loads(columns["capacity_probes"])) == 6


CONFIG = """
name: c
model: {source: builtin:smollm2-135m}
formats: [bf16]
serving: {concurrency: [1], capacity: CAPACITY}
"""


def _key(tmp_path: Path, capacity: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("CAPACITY", capacity) if capacity else CONFIG.replace(", capacity: CAPACITY", ""))
    (cell,) = matrix.expand(load_config(path))
    return cell.key("m", {}, "v")


def test_the_price_is_not_part_of_the_key_the_slo_is(tmp_path: Path) -> None:
    base = _key(tmp_path, "{ttft_ms_p99: 500}")
    assert _key(tmp_path, "{ttft_ms_p99: 500, usd_per_hour: 3.5, price_source: 'quote, 2026-12'}") == base
    assert _key(tmp_path, "{ttft_ms_p99: 400}") != base
    assert _key(tmp_path, "") != base


def test_a_capacity_without_a_threshold_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"serving\.capacity.*set ttft_ms_p99 or tpot_ms_p99"):
        _key(tmp_path, "{start_rate: 2}")


def test_the_price_is_the_configs_else_the_reference_table_with_its_source() -> None:
    from harness.config import CapacitySpec
    from harness.hardware import Hardware
    from harness.plan.prices import CPU_CORE_PRICE, GPU_PRICES, price_for

    h100 = Hardware("cuda", "NVIDIA H100 80GB HBM3", 8, 80 * 2**30, "9.0", "570", ())
    cpu = Hardware("cpu", "AMD EPYC", 2, 24 * 2**30, None, None, ("avx512f",))
    own = CapacitySpec(ttft_ms_p99=500, usd_per_hour=2.2, price_source="our quote, 2026-12")
    assert price_for(own, h100, 2) == (2.2, "config: our quote, 2026-12")
    plain = CapacitySpec(ttft_ms_p99=500)
    usd, source = price_for(plain, h100, 2)  # two GPUs of tensor parallelism: two GPUs' price
    assert usd == 2 * GPU_PRICES["h100-80gb"].usd_per_hour and "May 2026" in source and "https://" in source
    usd, source = price_for(plain, cpu, 1)  # a CPU host: by its cores
    assert usd == 2 * CPU_CORE_PRICE.usd_per_hour and "per core x 2" in source
    l4 = Hardware("cuda", "NVIDIA L4", 1, 24 * 2**30, "8.9", "570", ())
    assert price_for(plain, l4, 1) == (
        None,
        "no reference price for NVIDIA L4: set serving.capacity.usd_per_hour (and price_source)",
    )


def _alone(ttft_p99_ms: float) -> dict[str, Any]:
    """The sweep's concurrency-1 point: 16 requests one at a time in 28 s (0.57 req/s)."""
    return {
        "mode": "concurrency",
        "concurrency": 1,
        "requests": 16,
        "completed": 16,
        "failed": 0,
        "duration_s": 28.0,
        "ttft_p99_ms": ttft_p99_ms,
        "tpot_p99_ms": 20.0,
    }


def test_halving_stops_where_a_probe_would_measure_concurrency_one_again() -> None:
    """Measured on an AVX2 host (scripts/avx2-host): TTFT p99 missed at every rate down to 1/16 of
    the start, 507 s of probes, the last one 258 s. Under half the one-at-a-time rate a probe's p99
    is still that of overlapping requests (INT8 there: TPOT p99 156 ms at 0.64 of that rate, 168 ms
    at 0.32), only slower to measure."""
    calls: list[float] = []
    found = search(server_with_capacity(0.001, calls), CapacitySpec(ttft_ms_p99=500, max_probes=5), _alone(100.0))
    assert calls == [1.0, 0.5] and found.rps is None  # 0.25 < 0.57 / 2
    assert "concurrency 1 met it at 0.571 req/s" in found.note and "only one request at a time" in found.note


def test_no_search_when_one_request_at_a_time_misses_the_slo() -> None:
    calls: list[float] = []
    found = search(server_with_capacity(3.3, calls), CapacitySpec(ttft_ms_p99=500), _alone(900.0))
    assert calls == [] and found.rps is None and found.probes == []
    assert found.note == "not searched: one request at a time (concurrency 1) already missed TTFT p99 <= 500 ms"


def test_the_floor_does_not_cut_a_search_that_finds_its_rate() -> None:
    calls: list[float] = []
    found = search(server_with_capacity(3.3, calls), CapacitySpec(ttft_ms_p99=500, tolerance=0.1), _alone(100.0))
    assert calls == [1.0, 2.0, 4.0, 3.0, 3.5, 3.25] and found.rps == 3.25
