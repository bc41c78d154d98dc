"""Run one stage of a cell in a child process: its crash, hang or leak stays there.

The parent samples the peak memory of the child and all its descendants (vLLM starts
its own engine-core process), enforces a wall-clock timeout and, when one is set, a memory
limit on the tree's RSS (summed over the tree: RLIMIT_AS would count the virtual memory vLLM
and torch map without touching), and kills the whole tree when either is exceeded.
The child's stdout/stderr go to a log file, which is where engines say which kernel
they chose and why they refused a format.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil


@dataclass(frozen=True)
class StageOutcome:
    value: Any  # what the function returned, None when it failed
    error: str | None  # "ExceptionType: message" or why the process died
    error_trace: str | None
    peak_rss_bytes: int
    peak_gpu_bytes: int | None
    wall_s: float
    timed_out: bool
    out_of_memory: bool = False  # killed by the harness for exceeding its memory limit

    @property
    def ok(self) -> bool:
        return self.error is None


def die_with_parent(parent_pid: int | None = None) -> None:
    """Linux: the kernel kills this process when the harness dies, even by SIGKILL. A parent
    that died before the signal was armed (the child's first instants) is caught by comparing
    the parent pid the caller saw: the orphan exits at once instead of running on."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def dies_with_this_process() -> Callable[[], None]:
    """A Popen preexec_fn: the child dies with the process that starts it."""
    parent = os.getpid()
    return lambda: die_with_parent(parent)


def _child_main(fn: Callable[..., Any], args: tuple[Any, ...], log_path: str, conn: Any, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    try:
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:  # an unwritable results directory must not turn into this stage's failure
        log = os.open(os.devnull, os.O_WRONLY)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    try:
        result = fn(*args)
        conn.send(("ok", result, None))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent as a reason
        trace = traceback.format_exc()
        print(trace, file=sys.stderr, flush=True)
        conn.send(("error", describe_error(exc), trace))
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()


def describe_error(exc: BaseException) -> str:
    """ "Type: message"; a message-less exception (MemoryError, AssertionError) says where it
    was raised instead, or the row would read "MemoryError:" and nothing else."""
    message = str(exc).strip()
    if message:
        return f"{type(exc).__name__}: {message}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    where = last.filename.split("site-packages/")[-1]
    return f"{type(exc).__name__} raised in {last.name} ({where}:{last.lineno})"


GIB = 2**30


def memory_limit_bytes(gib: float | None) -> int | None:
    return None if gib is None else int(gib * GIB)


def out_of_memory_reason(peak_bytes: int, limit_bytes: int) -> str:
    peak = math.ceil(peak_bytes / GIB * 100) / 100  # rounded up: a peak just over 0.50 reads 0.51, never "0.50 > 0.50"
    return f"out of memory: peak {peak:.2f} GiB > limit {limit_bytes / GIB:.2f} GiB"


class PeakSampler(threading.Thread):
    """Samples the RSS (and GPU memory) of a process tree; with limit_bytes, kills the tree the
    first time its RSS exceeds it (`exceeded` then says so)."""

    def __init__(self, pid: int, interval_s: float = 0.2, limit_bytes: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.limit_bytes = limit_bytes
        self.peak_rss = 0
        self.peak_gpu: int | None = None
        self.exceeded = False
        self._stop_event = threading.Event()
        self._nvml = _Nvml.open()

    @property
    def memory_error(self) -> str | None:
        """ "out of memory: peak X GiB > limit Y GiB" once the limit was exceeded, else None."""
        if not self.exceeded or self.limit_bytes is None:
            return None
        return out_of_memory_reason(self.peak_rss, self.limit_bytes)

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = tree_pids(self.pid)
            rss = 0
            for pid in pids:
                try:
                    rss += psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            if self._nvml is not None:
                used = self._nvml.used_by(pids)
                self.peak_gpu = max(self.peak_gpu or 0, used)
            if self.limit_bytes is not None and rss > self.limit_bytes and not self.exceeded:
                self.exceeded = True
                kill_tree(self.pid)
            self._stop_event.wait(self.interval_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class _Nvml:
    """GPU memory used by a set of processes, from NVML (absent on CPU machines)."""

    def __init__(self, pynvml: Any, handles: list[Any]) -> None:
        self.pynvml = pynvml
        self.handles = handles

    @classmethod
    def open(cls) -> "_Nvml | None":
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            return cls(pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]) if count else None
        except Exception:  # noqa: BLE001 - no driver, no GPU: no GPU figure
            return None

    def used_by(self, pids: set[int]) -> int:
        total = 0
        for handle in self.handles:
            try:
                for proc in self.pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid in pids and proc.usedGpuMemory:
                        total += proc.usedGpuMemory
            except Exception:  # noqa: BLE001
                continue
        return total


def tree_pids(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.Error:
        return set()


def kill_tree(pid: int) -> None:
    pids = tree_pids(pid)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def run_isolated(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    log_path: Path,
    timeout_s: float,
    memory_limit_bytes: int | None = None,
) -> StageOutcome:
    """Run fn(*args) in a fresh (spawned) process; fn and its result must be picklable.
    memory_limit_bytes: the most RSS the child's process tree may hold (None: no limit)."""
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe(duplex=False)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # the child logs to /dev/null; the results directory's own write reports the disk
    proc = ctx.Process(target=_child_main, args=(fn, args, str(log_path), child_conn, os.getpid()), daemon=False)
    start = time.monotonic()
    proc.start()
    child_conn.close()
    pid = proc.pid
    assert pid is not None  # a started process has one
    sampler = PeakSampler(pid, limit_bytes=memory_limit_bytes)
    sampler.start()
    message: tuple[str, Any, Any] | None = None
    timed_out = False
    try:
        deadline = start + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if parent_conn.poll(min(remaining, 1.0)):
                try:
                    message = parent_conn.recv()
                except EOFError:
                    message = None
                break
            if not proc.is_alive():
                if parent_conn.poll(0.5):
                    message = parent_conn.recv()
                break
        if not timed_out:
            proc.join(timeout=30)  # let it exit on its own (engine shutdown) before the kill below
    finally:
        kill_tree(pid)  # also reaps engine processes a child left behind, and on Ctrl-C
        proc.join(timeout=10)
        sampler.stop()
    wall = time.monotonic() - start
    if sampler.memory_error is not None:  # even if a result came first: the stage needed more than it may have
        _note(log_path, f"{sampler.memory_error}; the process tree was killed")
        return StageOutcome(
            None, sampler.memory_error, None, sampler.peak_rss, sampler.peak_gpu, wall, False, out_of_memory=True
        )
    if timed_out:
        _note(log_path, f"timed out after {timeout_s:.0f} s; the process tree was killed")
        return StageOutcome(
            None, f"timed out after {timeout_s:.0f} s", None, sampler.peak_rss, sampler.peak_gpu, wall, True
        )
    if message is None:
        code = proc.exitcode
        why = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        if code == -signal.SIGKILL:
            why += " (out of memory?)"
        return StageOutcome(
            None, f"process died without a result: {why}", None, sampler.peak_rss, sampler.peak_gpu, wall, False
        )
    status, value, trace = message
    if status == "ok":
        return StageOutcome(value, None, None, sampler.peak_rss, sampler.peak_gpu, wall, False)
    return StageOutcome(None, value, trace, sampler.peak_rss, sampler.peak_gpu, wall, False)


def _note(log_path: Path, text: str) -> None:
    """One line from the harness itself at the end of a stage's log (quiet when it can't be written)."""
    try:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"harness: {text}\n")
    except OSError:
        pass
