"""Is every figure of the load client `vllm bench serve`'s own? Both clients against one live
server, in alternating pairs: the harness's (loadgen.run_point, what every sweep point comes
from) and vLLM's benchmark client itself (vllm.benchmarks.serve.benchmark, what `vllm bench
serve` runs), with the same prompt token ids, output lengths, sampling (greedy, exactly
max_tokens) and in-flight limit. The server's prefix cache is off for the comparison (the
caller starts it so), since every pair sends the same prompts.

Per figure (TTFT, TPOT, ITL and E2E latency: mean, p50, p99; request and output throughput) the
figure is the geometric mean of the pairs' ratios with its 95 % interval against the band
[0.97, 1.03] (harness.stages.bench_conformance.Conformance): conforms, deviates, or inconclusive
where the host's noise is wider than the band."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness.config import SloSpec
from harness.stages.bench_conformance import Conformance, wants_more_pairs
from harness.stages.serving import loadgen

BAND = (0.97, 1.03)
REFERENCE = "vllm bench serve"
#: the harness's point key → vLLM's benchmark result key
FIGURES = {
    **{
        f"{metric}_{ours}_ms": f"{theirs}_{metric}_ms"
        for metric in ("ttft", "tpot", "itl", "e2el")
        for ours, theirs in (("mean", "mean"), ("p50", "median"), ("p99", "p99"))
    },
    "request_throughput": "request_throughput",
    "output_tok_s": "output_throughput",
}
#: the figures precise enough on a small host that a bias past the band must show in them: medians
#: and throughputs (the means and p99s of 32 requests move with single slow requests)
ROBUST = (*(key for key in FIGURES if key.endswith("_p50_ms")), "request_throughput", "output_tok_s")


def vllm_point(
    target: loadgen.Target, requests: list[loadgen.LoadRequest], concurrency: int, tokenizer: Any
) -> dict[str, Any]:
    """One point measured by vLLM's own benchmark client (no ready check, no warm-up: the pair's
    shared warm-up ran before). It reports latencies only with a tokenizer (token counts still
    come from the usage the server streams)."""
    from vllm.benchmarks.datasets import SampleRequest
    from vllm.benchmarks.serve import TaskType, benchmark

    samples = [
        SampleRequest(prompt=r.prompt, prompt_len=r.input_tokens, expected_output_len=r.max_tokens) for r in requests
    ]
    # exactly max_tokens each: ignore_eos below, as the harness's min_tokens = max_tokens
    body = {**target.extra_body, "temperature": 0.0}
    result: dict[str, Any] = asyncio.run(
        benchmark(
            task_type=TaskType.GENERATION,
            endpoint_type="openai",
            api_url=target.base_url + "/v1/completions",
            base_url=target.base_url,
            model_id=target.model,
            model_name=target.model,
            tokenizer=tokenizer,
            input_requests=samples,
            logprobs=None,
            request_rate=float("inf"),
            burstiness=1.0,
            disable_tqdm=True,
            num_warmups=0,
            profile=False,
            selected_percentile_metrics=["ttft", "tpot", "itl", "e2el"],
            selected_percentiles=[50.0, 99.0],
            ignore_eos=True,
            goodput_config_dict={},
            max_concurrency=concurrency,
            lora_modules=None,
            extra_headers=None,
            extra_body=body,
            ready_check_timeout_sec=0,
        )
    )
    return result


def measure(
    target: loadgen.Target,
    requests: list[loadgen.LoadRequest],
    concurrency: int,
    pairs: int,
    tokenizer_dir: Path,
    max_pairs: int | None = None,
) -> dict[str, Conformance]:
    """Each figure's conformance over `pairs` alternating pairs (neither client always first), and
    more up to `max_pairs` while a ROBUST figure's interval is too wide to decide (wants_more_pairs)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    loadgen.warm_up(target, requests[:concurrency])
    ours: dict[str, list[float]] = {k: [] for k in FIGURES}
    theirs: dict[str, list[float]] = {k: [] for k in FIGURES}
    pair = 0
    while wants_more_pairs(
        [Conformance(ours[key], theirs[key], BAND, REFERENCE) for key in ROBUST], pair, pairs, max_pairs
    ):
        for side in ("ours", "theirs") if pair % 2 == 0 else ("theirs", "ours"):
            if side == "ours":
                point = loadgen.run_point(target, requests, SloSpec(), concurrency=concurrency)
                if point["failed"]:
                    raise RuntimeError(f"the harness's client: {point['failed']} requests failed: {point['error']}")
                for key in FIGURES:
                    ours[key].append(float(point[key]))
            else:
                result = vllm_point(target, requests, concurrency, tokenizer)
                if result["failed"]:
                    raise RuntimeError(f"vLLM's client: {result['failed']} requests failed: {result['errors'][:1]}")
                for key, their_key in FIGURES.items():
                    theirs[key].append(float(result[their_key]))
        pair += 1
    return {key: Conformance(ours[key], theirs[key], BAND, REFERENCE) for key in FIGURES}
