#!/usr/bin/env python
"""Is the harness's offline tok/s vLLM's own? Runs the harness's measurement
(harness.stages.bench.offline_throughput, in its isolated process) and `vllm bench throughput` on the
same model, prompt count and lengths, in the same run, alternating A/B to share the machine's
drift, and prints both and their ratio. Exit 1 when harness / vLLM falls under --min-ratio.

Both: random-token prompts of exactly --input-len tokens (each its own generator), exactly
--output-len generated tokens (end-of-sequence ignored), one warm-up request, the engine
settings and environment the harness uses for the cell (enforce-eager, in-process engine core
on CPU...). vLLM samples at temperature 1.0 in its benchmark, the harness greedily.

  .venv/bin/python scripts/honesty_check.py [--model builtin:smollm2-135m] [--prompts 64]
      [--input-len 128] [--output-len 128] [--repeats 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import engines
from harness.config import WorkloadSpec
from harness.engines.base import EngineRequest
from harness.engines.vllm import VllmParams
from harness.hardware import detect
from harness.isolation import run_isolated
from harness.stages import bench, models
from harness.stages.workload import make_prompts


def harness_run(request: EngineRequest, prompts: list[list[int]], output_len: int, log: Path) -> dict[str, float]:
    outcome = run_isolated(bench.offline_throughput, (engines.get("vllm"), request, prompts, output_len), log, 1800)
    if not outcome.ok:
        raise SystemExit(f"harness measurement failed: {outcome.error} (log: {log})")
    m: bench.OfflineMeasurement = outcome.value
    return {
        "total_tok_s": m.total_tok_s,
        "output_tok_s": m.output_tok_s,
        "requests_per_s": m.requests_per_s,
        "seconds": m.generate_s,
    }


def vllm_run(request: EngineRequest, args: argparse.Namespace, log: Path) -> dict[str, float]:
    engine = engines.get("vllm")
    argv = [
        "bench",
        "throughput",
        "--dataset-name",
        "random",
        "--random-range-ratio",
        "0",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--num-prompts",
        str(args.prompts),
        "--num-warmups",
        "1",
        *engine.cli_args(request),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "vllm.json"
        argv += ["--output-json", str(out)]
        code = "import sys; from harness.workarounds import run_vllm_cli; run_vllm_cli(sys.argv[1:])"
        with open(log, "ab") as handle:
            done = subprocess.run(
                [sys.executable, "-c", code, *argv],
                env={**os.environ, **engine.environment(request)},
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=1800,
            )
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"vllm bench throughput failed (exit {done.returncode}; log: {log})")
        result = json.loads(out.read_text())
    seconds = float(result["elapsed_time"])
    output_tokens = args.prompts * args.output_len
    return {
        "total_tok_s": float(result["tokens_per_second"]),
        "output_tok_s": output_tokens / seconds,
        "requests_per_s": float(result["requests_per_second"]),
        "seconds": seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="builtin:smollm2-135m")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-ratio", type=float, default=0.98)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--log-dir", type=Path, default=Path("results/honesty"))
    args = parser.parse_args()

    model = models.resolve(args.model, None, models.default_cache_dir(), dtype=args.dtype)
    max_len = args.input_len + args.output_len + 16  # vllm bench asks for room beyond prompt + output
    request = EngineRequest(model.path, args.dtype, VllmParams(max_model_len=max_len), detect().device, max_len)
    prompts = make_prompts(
        model.path, WorkloadSpec(prompts=args.prompts, input_len=args.input_len, output_len=args.output_len)
    )
    args.log_dir.mkdir(parents=True, exist_ok=True)

    runs: dict[str, list[dict[str, float]]] = {"harness": [], "vllm": []}
    for i in range(args.repeats):
        runs["harness"].append(harness_run(request, prompts, args.output_len, args.log_dir / "harness.log"))
        runs["vllm"].append(vllm_run(request, args, args.log_dir / "vllm-bench.log"))
        print(
            f"repeat {i + 1}: harness {runs['harness'][-1]['total_tok_s']:.1f} total tok/s, "
            f"vllm bench {runs['vllm'][-1]['total_tok_s']:.1f}",
            flush=True,
        )

    summary: dict[str, object] = {
        "model": model.identity,
        "device": detect().name,
        "prompts": args.prompts,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "runs": runs,
    }
    for metric in ("total_tok_s", "output_tok_s"):
        ours = statistics.median(r[metric] for r in runs["harness"])
        theirs = statistics.median(r[metric] for r in runs["vllm"])
        summary[f"harness_{metric}"], summary[f"vllm_{metric}"], summary[f"ratio_{metric}"] = (
            ours,
            theirs,
            ours / theirs,
        )
        print(
            f"{metric}: harness {ours:.1f}, vllm bench throughput {theirs:.1f}, ratio {ours / theirs:.3f} (medians of "
            f"{args.repeats})"
        )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    ratio = float(summary["ratio_total_tok_s"])  # type: ignore[arg-type]
    if ratio < args.min_ratio:
        print(f"FAIL: the harness measures {ratio:.3f} of vLLM's own figure (< {args.min_ratio})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
