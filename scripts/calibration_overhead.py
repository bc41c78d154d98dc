#!/usr/bin/env python3
"""Benchmark: the harness's quantize stage against a bare llm-compressor `oneshot` doing the same
work: the same model (fp32 on CPU, as the harness loads it there), the same calibration token ids,
the same recipe objects (Format.recipe), the same save. The harness's side is
`harness.stages.quantize.build` (an isolated child with memory sampling, a staging directory,
the artifact's metadata); the bare side is a fresh `python -c` that loads, calls oneshot and saves.
Runs alternate (A B A B ...) so both share the machine's drift; the figure is the ratio of the
medians, harness / bare. Goal: at most 1.05 (issue 16).

Usage: .venv/bin/python scripts/calibration_overhead.py [--formats w4a16-gptq,w4a16-awq]
           [--samples 16] [--seq-len 128] [--repeats 3] [--json OUT.json]
Exit status 1 when a format's ratio is over --max-ratio (default 1.05).
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import formats
from harness.config import CalibrationSpec
from harness.formats.base import QuantizeRequest
from harness.stages import calibration, models, quantize

BARE = """
import pickle, sys, time
import torch
from llmcompressor import oneshot
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, samples_file, out_dir, recipe_file = sys.argv[1:5]
samples = pickle.load(open(samples_file, "rb"))
recipe = pickle.load(open(recipe_file, "rb"))
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, device_map=None)
dataset = Dataset.from_dict({"input_ids": samples, "attention_mask": [[1] * len(s) for s in samples]})
# the one llm-compressor 0.14 bug the harness works around on a machine without an accelerator (AWQ)
from harness.workarounds import no_pinned_memory_without_accelerator
with no_pinned_memory_without_accelerator():
    oneshot(
        model=model, recipe=recipe, dataset=dataset, max_seq_length=len(samples[0]),
        num_calibration_samples=len(samples),
    )
model.to(torch.bfloat16)
model.save_pretrained(out_dir, save_compressed=True)
AutoTokenizer.from_pretrained(model_dir).save_pretrained(out_dir)
"""


def harness_once(name: str, model_dir: Path, samples: list[list[int]], seq_len: int, work: Path) -> float:
    fmt = formats.get(name)
    params = fmt.params_model(name=name, group_size=64)
    request = QuantizeRequest(model_dir, params, samples, seq_len, work, "cpu")
    cache = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    artifact, outcome = quantize.build(cache, f"bench-{name}", request, work / f"{name}.log", 3600)
    wall = time.perf_counter() - start
    if artifact is None:
        raise SystemExit(f"{name}: the harness's quantize failed: {outcome.error}")
    return wall


def bare_once(name: str, model_dir: Path, samples: list[list[int]], work: Path) -> float:
    fmt = formats.get(name)
    params = fmt.params_model(name=name, group_size=64)
    recipe = fmt.recipe(params, list(fmt.ignored_modules(params)))  # type: ignore[attr-defined]
    samples_file, recipe_file = work / "samples.pkl", work / f"{name}-recipe.pkl"
    samples_file.write_bytes(pickle.dumps(samples))
    recipe_file.write_bytes(pickle.dumps(recipe))
    out = Path(tempfile.mkdtemp(dir=work))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BARE, str(model_dir), str(samples_file), str(out), str(recipe_file)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: bare oneshot failed: {done.stderr[-2000:]}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default="w4a16-gptq,w4a16-awq")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-ratio", type=float, default=1.05)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    cache_dir = models.default_cache_dir()
    model = models.resolve("builtin:smollm2-135m", None, cache_dir)
    spec = CalibrationSpec(name="code", source="builtin:code", samples=args.samples, seq_len=args.seq_len)
    samples = calibration.samples_for(spec, model.path, {}).token_ids
    report: dict[str, dict[str, object]] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="calibration-overhead-") as tmp:
        work = Path(tmp)
        for name in args.formats.split(","):
            ours, bare = [], []
            for i in range(args.repeats):
                ours.append(harness_once(name, model.path, samples, args.seq_len, work))
                bare.append(bare_once(name, model.path, samples, work))
                print(f"{name} repeat {i + 1}: harness {ours[-1]:.1f} s, bare oneshot {bare[-1]:.1f} s", flush=True)
            ratio = statistics.median(ours) / statistics.median(bare)
            failed |= ratio > args.max_ratio
            report[name] = {"harness_s": ours, "bare_s": bare, "ratio_of_medians": ratio}
            print(f"{name}: harness / bare = {ratio:.3f} (goal <= {args.max_ratio})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
