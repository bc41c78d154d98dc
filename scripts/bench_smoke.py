#!/usr/bin/env python3
"""Benchmark: configs/smoke.yaml cold (fresh cache: model conversion, calibration,
quantization, vLLM) and warm (every cell finished: nothing recomputed).

Targets on a 2-core machine: cold under 15 minutes, warm under 30 seconds, and per cell the
harness's own overhead: wall time at most 1.15 x the work it accounts for (quantization, each
engine load, offline generation, the greedy answers the output checks compare with, the server's
start, its warm-up requests and every load point, the evaluation).
Usage: .venv/bin/python scripts/bench_smoke.py [--config configs/smoke.yaml] [--keep DIR]
       .venv/bin/python scripts/bench_smoke.py --results DIR   (the overhead of a finished run)
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TARGETS_S = {"cold": 15 * 60, "warm": 30}
MAX_OVERHEAD = 1.15


def _text(value: object) -> str | None:
    """A text column's value: None where the cell has none (NaN in a merged table, and truthy)."""
    return value if isinstance(value, str) else None


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and value == value else 0.0


def overhead(row: dict) -> dict:
    """A computed cell's wall time against the work its row accounts for."""
    # a cell without a sweep or a search has no value there (NaN, which is truthy, in a merged table)
    probes = json.loads(row["capacity_probes"]) if _text(row.get("capacity_probes")) else []
    points = list(row["serving"]) if isinstance(row.get("serving"), (list, tuple, np.ndarray)) else []
    parts = {
        "quantize": 0.0 if row.get("artifact_reused") is True else _number(row.get("quantize_s")),
        "offline load": _number(row.get("load_s")),
        "generate": _number(row.get("generate_s")) * len(json.loads(_text(row.get("output_tok_s_repeats")) or "[0]")),
        "output-check references": _number(row.get("output_check_reference_s")),
        "server start": _number(row.get("serving_startup_s")),
        "server warm-up": _number(row.get("serving_warmup_s")),
        "load points": sum(_number(p.get("duration_s")) for p in [*points, *probes]),
        "evaluate": _number(row.get("eval_s")),
    }
    work = sum(parts.values())
    wall = _number(row.get("wall_s"))
    return {
        "cell": row["cell_name"],
        "wall_s": round(wall, 1),
        "work_s": round(work, 1),
        "ratio": round(wall / work, 3) if work else None,
        "loads": json.loads(row["engine_loads"]) if _text(row.get("engine_loads")) else {},
        **{k: round(v, 1) for k, v in parts.items()},
    }


def overheads(results: Path) -> list[dict]:
    import pandas as pd

    table = pd.read_parquet(results / "results.parquet")
    ok = table[(table["status"] == "ok") & (table["wall_s"] > 0)]
    return [overhead(row) for row in ok.to_dict("records")]


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
    parser.add_argument("--results", type=Path, default=None, help="only the overhead of this finished run")
    parser.add_argument(
        "--keep", type=Path, default=None, help="run in this new directory and keep it (cache, results)"
    )
    args = parser.parse_args()
    if args.results is not None:
        cells = overheads(args.results)
        print(json.dumps(cells, indent=2))
        return 0 if all(c["ratio"] is not None and c["ratio"] <= MAX_OVERHEAD for c in cells) else 1
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        work = args.keep or Path(tmp)
        if args.keep is not None and args.keep.exists():
            parser.error(f"--keep {args.keep}: exists; give a new directory (the cold run needs an empty cache)")
        cache, output = work / "cache", work / "results"
        figures = {"cold": timed_run(args.config, output, cache)}
        figures["warm"] = timed_run(args.config, output, cache)
        cells = overheads(output)
    report = {
        name: {"seconds": round(s, 1), "target_s": TARGETS_S[name], "met": s < TARGETS_S[name]}
        for name, s in figures.items()
    }
    met = all(r["met"] for r in report.values()) and all(c["ratio"] and c["ratio"] <= MAX_OVERHEAD for c in cells)
    print(json.dumps({"config": args.config, **report, "overhead": cells, "max_overhead": MAX_OVERHEAD}, indent=2))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
