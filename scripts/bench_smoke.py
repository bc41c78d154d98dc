#!/usr/bin/env python3
"""Benchmark: configs/smoke.yaml cold (fresh cache: model conversion, calibration,
quantization, vLLM) and warm (every cell finished: nothing recomputed).

Targets on a 2-core machine: cold under 15 minutes, warm under 30 seconds.
Usage: .venv/bin/python scripts/bench_smoke.py [--config configs/smoke.yaml]
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS_S = {"cold": 15 * 60, "warm": 30}


def timed_run(config: str, output: Path, cache: Path) -> float:
    env = {**os.environ, "HARNESS_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "harness", "run", config, "--output", str(output)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/smoke.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        cache, output = Path(tmp) / "cache", Path(tmp) / "results"
        figures = {"cold": timed_run(args.config, output, cache), "warm": timed_run(args.config, output, cache)}
    report = {
        name: {"seconds": round(s, 1), "target_s": TARGETS_S[name], "met": s < TARGETS_S[name]}
        for name, s in figures.items()
    }
    print(json.dumps({"config": args.config, **report}, indent=2))
    return 0 if all(r["met"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
