"""Stages in child processes: results, errors, crashes and hangs all come back as outcomes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from harness.isolation import run_isolated


def _add(a: int, b: int) -> int:
    print("adding")
    return a + b


def _raise() -> None:
    raise RuntimeError("engine refused")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _hang() -> None:
    time.sleep(600)


def _allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(1.0)
    return len(block)


def test_value_and_log(tmp_path: Path) -> None:
    outcome = run_isolated(_add, (2, 3), tmp_path / "log.txt", timeout_s=60)
    assert outcome.ok and outcome.value == 5
    assert "adding" in (tmp_path / "log.txt").read_text()


def test_exception_becomes_error(tmp_path: Path) -> None:
    outcome = run_isolated(_raise, (), tmp_path / "log.txt", timeout_s=60)
    assert not outcome.ok and outcome.error == "RuntimeError: engine refused"
    assert "Traceback" in (tmp_path / "log.txt").read_text()


def test_killed_child_is_reported(tmp_path: Path) -> None:
    outcome = run_isolated(_die, (), tmp_path / "log.txt", timeout_s=60)
    assert not outcome.ok and "signal 9" in outcome.error


def test_hang_times_out(tmp_path: Path) -> None:
    start = time.monotonic()
    outcome = run_isolated(_hang, (), tmp_path / "log.txt", timeout_s=3)
    assert outcome.timed_out and "timed out" in outcome.error
    assert time.monotonic() - start < 30


def test_peak_memory_is_measured(tmp_path: Path) -> None:
    outcome = run_isolated(_allocate, (300,), tmp_path / "log.txt", timeout_s=60)
    assert outcome.ok
    assert outcome.peak_rss_bytes > 300 * 2**20
