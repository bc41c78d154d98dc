"""The harness's offline tok/s against `vllm bench throughput`'s own request loop, the same work
on one engine (issue 16): the ratio's 95 % interval must not lie outside [0.98, 1.02]."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import WorkloadSpec
from harness.engines.base import EngineRequest
from harness.engines.vllm import VllmParams
from harness.hardware import detect
from harness.isolation import run_isolated
from harness.stages import bench_conformance
from harness.stages.workload import make_prompts

pytestmark = pytest.mark.integration


def test_the_offline_figure_is_vllm_bench_throughputs(smollm2_dir: Path, tmp_path: Path) -> None:
    workload = WorkloadSpec(prompts=16, input_len=32, output_len=32)
    request = EngineRequest(smollm2_dir, "bfloat16", VllmParams(max_model_len=64), detect().device, 64)
    prompts = make_prompts(smollm2_dir, workload)
    outcome = run_isolated(
        bench_conformance.measure, (request, prompts, workload.output_len, 16), tmp_path / "conformance.log", 900
    )
    assert outcome.ok, outcome.error
    result: bench_conformance.Conformance = outcome.value
    print(result.line())
    low, high = result.interval
    assert high / low < 1.12, result.line()  # narrow enough that a deviation past the band would show
    assert result.verdict != "deviates", result.line()
