"""Locks that let several harness runs share one results directory (and one cache).

A cell is computed under `OUT/locks/<cell_key>.lock` (an exclusive `fcntl.flock`), so two runs
of the same config on the same output directory never compute the same cell twice: the run
that meets a cell another run holds puts it off to the end of its matrix and then waits for
the lock, by which time the other run has written the cell's row and this run skips it (no
cell waits for another's: relative figures are the compare pass's, after the cells). The
kernel drops a flock when its process dies, even by SIGKILL, so a killed run never leaves a
cell locked; the lock files themselves stay (deleting one would race).

flock is per host (NFS gives no guarantee across machines): runs sharing a directory share
a machine; the Ray executor's rows are written by its one driver.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

LOCKS_DIR = "locks"
T = TypeVar("T")


class FileLock:
    """An exclusive flock on `path` (created if absent); the file says who holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, wait: bool = True) -> bool:
        """Take the lock; wait=False: return False at once when another process holds it."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:  # for a person looking at a stuck run: who holds it (a full disk must not stop the lock)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def holder(self) -> str:
        """Who last took the lock (its file's text), for messages."""
        try:
            return self.path.read_text().strip() or "another run"
        except OSError:
            return "another run"

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def cell_lock(out_dir: Path, key: str) -> FileLock:
    return FileLock(out_dir / LOCKS_DIR / f"{key}.lock")


@contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold the exclusive lock of `path` for the block (waiting for it)."""
    with FileLock(path):
        yield


def in_turn(
    out_dir: Path, items: Iterable[tuple[T, str]], on_wait: Callable[[T, str, str], None] | None = None
) -> Iterator[tuple[T, str]]:
    """Yield each (item, cell_key) while holding that cell's lock; the lock is released when the
    next item is asked for (or the loop ends). A cell whose lock another process holds is put
    off to the end and waited for then. on_wait(item, key, holder) is called before each wait.
    The caller must look up the cell's row again under the lock: the other run may have
    finished it meanwhile."""
    deferred: list[tuple[T, str, FileLock]] = []

    def wait_for(item: T, key: str, lock: FileLock) -> None:
        if on_wait is not None:
            on_wait(item, key, lock.holder())
        lock.acquire(wait=True)

    for item, key in items:
        lock = cell_lock(out_dir, key)
        if not lock.acquire(wait=False):
            deferred.append((item, key, lock))
            continue
        try:
            yield item, key
        finally:
            lock.release()
    for item, key, lock in deferred:
        wait_for(item, key, lock)
        try:
            yield item, key
        finally:
            lock.release()
