"""The harness's offline tok/s against `vllm bench throughput`'s own request loop, the same work
on one engine (issue 16): the ratio's 95 % interval must not lie outside [0.98, 1.02]."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import WorkloadSpec
from harness.engines.base import EngineRequest
from harness.engines.vllm import VllmParams
from harness.hardware import compute_dtype, detect
from harness.isolation import run_isolated
from harness.stages import bench_conformance
from harness.stages.workload import make_prompts

pytestmark = pytest.mark.integration


def test_the_offline_figure_is_vllm_bench_throughputs(smollm2_dir: Path, tmp_path: Path) -> None:
    workload = WorkloadSpec(prompts=16, input_len=32, output_len=32)
    # the host's compute dtype, as `model.dtype: auto` picks it: the comparison is of two request loops
    # on one engine, whatever its dtype; where bf16 is emulated (a 2-core Zen 1) a run took 30 s in
    # bf16 and 7.5 s in float32, and the bf16 test ran out of its 900 s there (measured)
    hw = detect()
    request = EngineRequest(smollm2_dir, compute_dtype(hw), VllmParams(max_model_len=64), hw.device, 64)
    prompts = make_prompts(smollm2_dir, workload)
    outcome = run_isolated(
        bench_conformance.measure, (request, prompts, workload.output_len, 16, 32), tmp_path / "conformance.log", 900
    )
    assert outcome.ok, outcome.error
    result: bench_conformance.Conformance = outcome.value
    print(result.line())
    assert result.width < bench_conformance.PRECISE_WIDTH, result.line()  # a deviation past the band would show
    assert result.verdict != "deviates", result.line()


# 397 s on the simulated AVX2 host, about 3x that on a real one (an estimate, not run there): the
# nightly CPU tier (docs/production.md); the offline check stays in every CI run
@pytest.mark.nightly
def test_every_load_figure_is_vllm_bench_serves(smollm2_dir: Path, tmp_path: Path) -> None:
    """The load client against `vllm bench serve`'s own client (vllm.benchmarks.serve.benchmark) on
    one live vLLM server, the same 32 prompts of 32 tokens at 4 in flight, in alternating pairs: TTFT,
    TPOT, ITL and E2E latency (mean, p50, p99), request and output throughput. None may deviate from
    the band [0.97, 1.03]. Output lengths are 32 x [0.6, 1.4]: with one length for all, requests
    finish in lockstep or staggered by chance, and a run's ITL p99 was ~32 or 50-77 ms by which (measured),
    a noise no count of pairs averages out."""
    from dataclasses import replace

    from harness.config import ServingSpec
    from harness.engines.vllm import VllmEngine
    from harness.stages.serving import client_conformance, loadgen
    from harness.stages.serving.server import free_port, serve
    from harness.stages.serving.stage import build_requests

    workload = WorkloadSpec(prompts=16, input_len=32, output_len=32)
    request = EngineRequest(smollm2_dir, "bfloat16", VllmParams(max_model_len=80), detect().device, 80)
    port = free_port()
    launch = VllmEngine().server(request, port, slots=4)
    launch = replace(launch, argv=[*launch.argv, "--no-enable-prefix-caching"])  # every pair sends the same prompts
    requests, _ = build_requests(ServingSpec(output_len_jitter=0.4), workload, smollm2_dir, False, 32)
    with serve(launch, port, tmp_path / "server.log", 900) as server:
        target = loadgen.Target(server.base_url, launch.model_name, launch.extra_body, 300)
        figures = client_conformance.measure(
            target, requests, concurrency=4, pairs=10, tokenizer_dir=smollm2_dir, max_pairs=24
        )
    lines = [f"{key}: {c.line()}" for key, c in figures.items()]
    print("\n".join(lines))
    assert not [line for line in lines if line.endswith("deviates")], "\n".join(lines)
    # the robust figures (medians, throughputs) precise enough that a bias past the band would show (the
    # measurement adds pairs until they are); the means and p99s of 32 requests move with single slow
    # requests on 2 cores (a TTFT mean's interval spanned 0.94-1.16 in one CI run): for them only a
    # deviation fails
    for key in client_conformance.ROBUST:
        assert figures[key].width < bench_conformance.PRECISE_WIDTH, f"{key}: {figures[key].line()}"
