#!/usr/bin/env python
"""Is the harness's offline tok/s vLLM's own? The harness's measurement and `vllm bench
throughput`'s own request loop on one loaded engine, the same work on both sides (prompt token
ids, sampling, lengths, warm-up), in alternating pairs (harness.stages.bench_conformance). Prints
the ratio harness / vLLM (the geometric mean of the pairs), its 95 % interval and the verdict
against the two-sided band [0.98, 1.02]. Exit 1 when the interval is outside the band
(deviates); 0 when inside (conforms) or across an edge (inconclusive: add pairs).

  .venv/bin/python scripts/honesty_check.py [--model builtin:smollm2-135m] [--dtype auto] [--prompts 32]
      [--input-len 64] [--output-len 64] [--pairs 40] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from harness.config import WorkloadSpec
from harness.engines.base import EngineRequest
from harness.engines.vllm import VllmParams
from harness.hardware import compute_dtype, detect
from harness.isolation import run_isolated
from harness.stages import bench_conformance, models
from harness.stages.workload import make_prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--dtype", default="auto", help="the engine's dtype; auto: the host's, as model.dtype: auto")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--log", type=Path, default=Path("results/honesty/conformance.log"))
    args = parser.parse_args()
    if args.dtype == "auto":  # bf16 is emulated on CPUs without bf16 instructions: 6x slower there
        args.dtype = compute_dtype(detect())

    model = models.resolve(args.model, None, models.default_cache_dir(), dtype=args.dtype)
    max_len = args.input_len + args.output_len
    request = EngineRequest(model.path, args.dtype, VllmParams(max_model_len=max_len), detect().device, max_len)
    prompts = make_prompts(
        model.path, WorkloadSpec(prompts=args.prompts, input_len=args.input_len, output_len=args.output_len)
    )
    args.log.parent.mkdir(parents=True, exist_ok=True)
    outcome = run_isolated(bench_conformance.measure, (request, prompts, args.output_len, args.pairs), args.log, 3600)
    if not outcome.ok:
        print(f"the measurement failed: {outcome.error} (log: {args.log})", file=sys.stderr)
        return 1
    result: bench_conformance.Conformance = outcome.value
    print(result.line())
    if args.json:
        summary = {
            "model": model.identity,
            "device": detect().name,
            "dtype": args.dtype,
            "prompts": args.prompts,
            "input_len": args.input_len,
            "output_len": args.output_len,
            **asdict(result),
            "ratio": result.ratio,
            "interval": result.interval,
            "verdict": result.verdict,
        }
        args.json.write_text(json.dumps(summary, indent=2))
    return 1 if result.verdict == "deviates" else 0


if __name__ == "__main__":
    sys.exit(main())
