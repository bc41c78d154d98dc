"""What a run shows while it works, on a terminal and off one, and what it leaves in OUT/run.log.

On a terminal: rich's live bars (the matrix, the running cell's stage). Off one (a CI log,
nohup, a scheduler), where a live display prints nothing until it ends: one plain line per
stage start and end with its elapsed time, and a heartbeat line every `heartbeat_s` while a
stage runs. Either way every line (stage start/end, a cell's verdict, a skip) is appended,
timestamped, to the run's log file, so a run read afterwards tells the same story.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

HEARTBEAT_S = 60.0
LOG_NAME = "run.log"


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%H:%M:%SZ")


def _plain(markup: str) -> str:
    return Text.from_markup(markup).plain


def _still_running(description: str, since: float) -> str:
    return f"{description}: still running, {time.monotonic() - since:.0f} s so far"


class _Heartbeat:
    """Calls `beat` every `every_s` seconds on a daemon thread between start() and stop(); never
    where every_s is 0."""

    def __init__(self, every_s: float, beat: Callable[[], None], name: str) -> None:
        self.every_s, self._beat, self._name = every_s, beat, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._beat()

    def start(self) -> None:
        if self.every_s > 0 and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class RunProgress(Progress):
    """rich's Progress, plus plain stage lines (off a terminal) and the run log.

    A task's description changing is a stage ending and the next one starting."""

    def __init__(self, console: Console, log_path: Path | None = None, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.lines = not console.is_terminal  # off a terminal the live display is off: plain lines instead
        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        super().__init__(*columns, TimeElapsedColumn(), console=console, transient=False, disable=self.lines)
        self.log_path = log_path
        self._started: dict[TaskID, tuple[str, float]] = {}  # task → (its stage description, when it began)
        self._stage_tasks: set[TaskID] = set()
        self._stage_lock = threading.Lock()
        self._heartbeat = _Heartbeat(heartbeat_s, self._beat, "progress-heartbeat")

    # -- lines --------------------------------------------------------------------------------
    def write_log(self, text: str) -> None:
        """One line to the run log (never to the screen)."""
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as handle:
            handle.write(f"{_stamp()} {_plain(text).strip()}\n")

    def say(self, markup: str) -> None:
        """A line on the screen (rich markup) and in the run log."""
        self.console.print(f"[dim]{_stamp()}[/] {markup}" if self.lines else markup, soft_wrap=self.lines)
        self.write_log(markup)

    def _line(self, text: str) -> None:
        """A stage line: printed off a terminal (where the bars are not drawn), always logged."""
        if self.lines:
            self.console.print(f"{_stamp()} {text}", markup=False, highlight=False, soft_wrap=True)
        self.write_log(text)

    # -- stage tracking over rich's task API ---------------------------------------------------
    def add_stage_task(self, total: int) -> TaskID:
        """A hidden task whose description is the running stage: each change is a stage line."""
        task_id = self.add_task("", total=total, visible=False)
        self._stage_tasks.add(task_id)
        return task_id

    def _stage(self, task_id: TaskID, description: str | None, visible: bool | None) -> None:
        if task_id not in self._stage_tasks:
            return
        with self._stage_lock:
            previous = self._started.get(task_id)
            hidden = visible is False
            if previous is not None and (hidden or (description is not None and description != previous[0])):
                self._line(f"{previous[0].strip()}: done in {time.monotonic() - previous[1]:.1f} s")
                del self._started[task_id]
            if description and not hidden and (previous is None or description != previous[0]):
                task = self._tasks.get(task_id)
                if task is not None and (task.visible or visible):
                    self._started[task_id] = (description, time.monotonic())
                    self._line(f"{_plain(description).strip()}: started")

    def update(self, task_id: TaskID, **fields: Any) -> None:
        super().update(task_id, **fields)
        self._stage(task_id, fields.get("description"), fields.get("visible"))

    def reset(self, task_id: TaskID, **fields: Any) -> None:
        super().reset(task_id, **fields)
        self._stage(task_id, fields.get("description"), fields.get("visible"))

    # -- heartbeat -----------------------------------------------------------------------------
    def _beat(self) -> None:
        with self._stage_lock:
            running = list(self._started.values())
        for description, since in running:
            self._line(_still_running(_plain(description).strip(), since))

    def start(self) -> None:
        super().start()
        self._heartbeat.start()

    def stop(self) -> None:
        self._heartbeat.stop()
        super().stop()


@contextmanager
def status(
    console: Console, text: str, log_path: Path | None = None, heartbeat_s: float = HEARTBEAT_S
) -> Iterator[Callable[[str], None]]:
    """A spinner with `text` on a terminal, a plain line off one; yields `say`, which replaces
    the text (or prints the next line). Off a terminal the latest line is repeated with its
    elapsed time every `heartbeat_s` (a cold model conversion is minutes on a slow host). Every
    text also goes to the run log."""

    def log(line: str) -> None:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(f"{_stamp()} {line}\n")

    log(text)
    if console.is_terminal:
        with console.status(text) as spinner:

            def update(line: str) -> None:
                spinner.update(line)
                log(line)

            yield update
        return
    latest: list[tuple[str, float]] = [(text, time.monotonic())]  # the line the heartbeat repeats
    lock = threading.Lock()

    def print_line(line: str) -> None:
        console.print(f"{_stamp()} {line}", markup=False, highlight=False, soft_wrap=True)
        log(line)

    def say(line: str) -> None:
        with lock:
            latest[0] = (line, time.monotonic())
        print_line(line)

    def beat() -> None:
        with lock:
            line, since = latest[0]
        print_line(_still_running(line, since))

    console.print(f"{_stamp()} {text}", markup=False, highlight=False, soft_wrap=True)
    heartbeat = _Heartbeat(heartbeat_s, beat, "status-heartbeat")
    heartbeat.start()
    try:
        yield say
    finally:
        heartbeat.stop()
