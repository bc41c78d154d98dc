"""Regressions that mean something (harness.results.trend): a change is flagged only outside the
noise and only against the same host. Rows here are SYNTHETIC: two runs of made-up figures, a
real slowdown beside a noisy cell, and a run on another machine."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from harness.results.trend import regressions, runs

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


def row(run: int, cell: str, repeats: list[float], host: str = "box") -> dict[str, Any]:
    return {
        "run_id": f"run{run}",
        "config_name": "c",
        "cell_name": cell,
        "status": "ok",
        "engine_speed_class": "serving",
        "hostname": host,
        "hw_name": "AMD EPYC",
        "hw_count": 2,
        "output_tok_s": sum(repeats) / len(repeats),
        "output_tok_s_repeats": json.dumps(repeats) if len(repeats) > 1 else None,
        "started_at": T0 + timedelta(hours=run),
    }


def test_a_real_slowdown_is_flagged_and_a_noisy_one_is_not() -> None:
    rows = [
        row(1, "steady", [100.0, 101.0, 99.0]),
        row(2, "steady", [80.0, 81.0, 79.0]),  # -20 %, repeats within ±1: a regression
        row(1, "noisy", [100.0, 130.0, 70.0]),
        row(2, "noisy", [90.0, 60.0, 120.0]),  # -10 %, but the repeats spread ±30: noise
    ]
    found = regressions("s", rows, runs(rows), threshold=5.0)
    assert [r.cell_name for r in found] == ["steady"]
    assert "outside the noise ±" in found[0].line() and "3 and 3 repeats" in found[0].line()


def test_single_measurements_use_the_hosts_history_when_there_is_one() -> None:
    history = [100.0, 70.0, 120.0, 95.0]  # a cell whose figure swings run to run on this host
    rows = [row(i, "swinging", [v]) for i, v in enumerate(history, start=1)]
    rows.append(row(5, "swinging", [85.0]))  # -10.5 % against 95: within its history's spread
    found = regressions("s", rows, runs(rows), threshold=5.0)
    # run 1 → 2 (100 → 70) had no history yet: flagged on the threshold, and says so; the last step is noise
    assert [(r.previous_run, r.current_run) for r in found] == [("run1", "run2")]
    assert "noise not measured" in found[0].line()
    two = [row(1, "new", [100.0]), row(2, "new", [90.0])]  # no history: the threshold alone, and said so
    (flagged,) = regressions("s", two, runs(two), threshold=5.0)
    assert "single measurements: noise not measured" in flagged.line()


def test_another_hosts_run_is_not_a_regression_of_this_one() -> None:
    rows = [
        row(1, "cell", [200.0]),
        row(2, "cell", [67.0], host="busy-box"),  # another machine (the old report flagged 211 → 67)
        row(3, "cell", [198.0]),
    ]
    assert regressions("s", rows, runs(rows), threshold=5.0) == []
