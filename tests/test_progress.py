"""Progress off a terminal (a CI log, nohup): plain stage lines with their elapsed time and a
heartbeat; on a terminal the live bars. Either way the run log gets every line."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

from rich.console import Console

from harness.progress import RunProgress, status


def run_two_stages(console: Console, log: Path, heartbeat_s: float = 0.0, pause: float = 0.0) -> None:
    with RunProgress(console, log, heartbeat_s=heartbeat_s) as progress:
        task = progress.add_stage_task(total=2)
        progress.reset(task, total=2, visible=True)
        progress.update(task, description="  bf16/vllm/kv-auto: quantize", completed=0)
        time.sleep(pause)
        progress.update(task, description="  bf16/vllm/kv-auto: bench", completed=1)
        progress.update(task, visible=False)
        progress.say("[green]ok[/] bf16/vllm/kv-auto")


def test_off_a_terminal_each_stage_is_a_plain_line_with_its_time(tmp_path: Path) -> None:
    out = io.StringIO()
    run_two_stages(Console(file=out, force_terminal=False, width=200), tmp_path / "run.log")
    lines = [re.sub(r"^\d\d:\d\d:\d\dZ ", "", line) for line in out.getvalue().splitlines()]
    assert lines[0] == "bf16/vllm/kv-auto: quantize: started"
    assert re.fullmatch(r"bf16/vllm/kv-auto: quantize: done in \d+\.\d s", lines[1])
    assert lines[2] == "bf16/vllm/kv-auto: bench: started"
    assert re.fullmatch(r"bf16/vllm/kv-auto: bench: done in \d+\.\d s", lines[3])
    assert lines[4] == "ok bf16/vllm/kv-auto"  # no markup codes in a log
    logged = (tmp_path / "run.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in logged] == lines


def test_a_long_stage_has_a_heartbeat(tmp_path: Path) -> None:
    out = io.StringIO()
    run_two_stages(
        Console(file=out, force_terminal=False, width=200), tmp_path / "run.log", heartbeat_s=0.05, pause=0.3
    )
    assert re.search(r"bf16/vllm/kv-auto: quantize: still running, \d+ s so far", out.getvalue())


def test_on_a_terminal_the_bars_show_and_the_log_still_gets_every_line(tmp_path: Path) -> None:
    out = io.StringIO()
    run_two_stages(Console(file=out, force_terminal=True, width=200), tmp_path / "run.log")
    assert "started" not in out.getvalue()  # the live bar shows the stage instead
    logged = (tmp_path / "run.log").read_text()
    assert "bf16/vllm/kv-auto: bench: started" in logged and "ok bf16/vllm/kv-auto" in logged


def test_a_status_off_a_terminal_prints_each_step(tmp_path: Path) -> None:
    out = io.StringIO()
    with status(Console(file=out, force_terminal=False), "model builtin: resolving", tmp_path / "run.log") as say:
        say("CPU peak: memory bandwidth")
    printed = out.getvalue()
    assert "model builtin: resolving" in printed and "CPU peak: memory bandwidth" in printed
    assert "CPU peak: memory bandwidth" in (tmp_path / "run.log").read_text()


def test_a_long_status_off_a_terminal_has_a_heartbeat(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    with status(console, "model builtin: resolving", tmp_path / "run.log", heartbeat_s=0.05) as say:
        time.sleep(0.2)
        say("CPU peak: memory bandwidth")
        time.sleep(0.2)
    printed = out.getvalue()
    assert re.search(r"model builtin: resolving: still running, \d+ s so far", printed)
    assert re.search(r"CPU peak: memory bandwidth: still running, \d+ s so far", printed)
    assert "resolving: still running" in (tmp_path / "run.log").read_text()
    lines = len(printed.splitlines())
    time.sleep(0.2)
    assert len(out.getvalue().splitlines()) == lines  # the heartbeat stops with the status
