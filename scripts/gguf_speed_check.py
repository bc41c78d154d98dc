#!/usr/bin/env python3
"""Is the harness's GGUF tok/s llama.cpp's own? The harness's offline measurement of a GGUF file
(harness.stages.bench.offline_throughput through the llamacpp engine, in its isolated process:
since this change it runs llama.cpp's llama-bench prompt + generation test itself, once per
prompt) against `llama-bench -pg IN,OUT` run directly on the same file, threads, batch size and
flash-attention setting. Same program, same work: what is left to differ is the harness's own
doing (the arguments it passes, the process it runs in, its warm-up), so the ratio should sit at
1 within the host's noise. Runs alternate in pairs; on a small shared host one run moves by 10 %
or more, so the figure is the pairs' geometric-mean ratio of (input + output) tok/s with its 95 %
interval against the band [0.98, 1.02] (harness.stages.bench_conformance): conforms, deviates or
inconclusive. (Before, the harness sampled
each token in llama-cpp-python's Python loop: 0.957 of llama-bench on SmolLM2 Q8_0.)

Usage: .venv/bin/python scripts/gguf_speed_check.py GGUF_FILE [--input-len 64] [--output-len 64]
           [--prompts 4] [--repeats 12] [--threads N] [--json OUT.json]
Exit status 1 when the ratio deviates from the band.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import engines, llamacpp_tools
from harness.config import WorkloadSpec
from harness.engines.base import EngineRequest
from harness.engines.llamacpp import LlamaCppParams
from harness.isolation import run_isolated
from harness.stages import bench, models
from harness.stages.bench_conformance import BAND, Conformance
from harness.stages.workload import make_prompts


def harness_once(gguf: Path, prompts: list[list[int]], output_len: int, threads: int, log: Path) -> float:
    request = EngineRequest(
        gguf.parent, "auto", LlamaCppParams(name="llamacpp", threads=threads), "cpu", len(prompts[0]) + output_len + 8
    )
    outcome = run_isolated(bench.offline_throughput, (engines.get("llamacpp"), request, prompts, output_len), log, 1800)
    if not outcome.ok:
        raise SystemExit(f"harness measurement failed: {outcome.error} (log: {log})")
    measured: bench.OfflineMeasurement = outcome.value
    return measured.total_tok_s


def llama_bench_once(gguf: Path, input_len: int, output_len: int, prompts: int, threads: int) -> float:
    argv = [
        str(llamacpp_tools.program("llama-bench")),
        *("-m", str(gguf), "-t", str(threads), "-b", "512", "-ngl", "0", "-fa", "off"),  # as the harness loads it
        *("-p", "0", "-n", "0", "-pg", f"{input_len},{output_len}", "-r", str(prompts), "-o", "json"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"llama-bench failed: {done.stderr[-2000:]}")
    (test,) = json.loads(done.stdout)
    return float(test["avg_ts"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", type=Path, help="a model.gguf of the harness's artifact cache")
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=12, help="pairs (harness, llama-bench)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    if args.gguf.name != "model.gguf":
        raise SystemExit("the harness's llamacpp engine loads DIR/model.gguf: give such a file")
    tokenizer_dir = models.resolve("builtin:smollm2-135m", None, models.default_cache_dir()).path
    workload = WorkloadSpec(prompts=args.prompts, input_len=args.input_len, output_len=args.output_len)
    prompts = make_prompts(tokenizer_dir, workload)
    ours, reference = [], []
    with tempfile.TemporaryDirectory(prefix="gguf-speed-") as tmp:
        for i in range(args.repeats):
            for side in (
                ("harness", "llama-bench") if i % 2 == 0 else ("llama-bench", "harness")
            ):  # neither always first
                if side == "harness":
                    ours.append(
                        harness_once(args.gguf, prompts, args.output_len, args.threads, Path(tmp) / f"h{i}.log")
                    )
                else:
                    reference.append(
                        llama_bench_once(args.gguf, args.input_len, args.output_len, args.prompts, args.threads)
                    )
            print(f"repeat {i + 1}: harness {ours[-1]:.1f} tok/s, llama-bench pg {reference[-1]:.1f} tok/s", flush=True)
    found = Conformance(ours, reference, BAND, "llama-bench -pg")
    print(found.line())
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "harness_tok_s": ours,
                    "llama_bench_tok_s": reference,
                    "ratio": found.ratio,
                    "interval": found.interval,
                    "verdict": found.verdict,
                }
            )
        )
    return 1 if found.verdict == "deviates" else 0


if __name__ == "__main__":
    sys.exit(main())
