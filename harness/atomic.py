"""Files written whole or not at all, and renames that survive a crash: the one home of the
harness's atomic writes (rows, the merged table, stored log-probabilities, evaluation data).

A file is written to a temporary name beside its target, flushed and fsynced, renamed over the
target, and then the directory is fsynced: without that last step a power cut after the
rename can leave the directory entry pointing at nothing (ext4, XFS)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename into it) durable; a no-op where it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """write(handle) fills a temporary file beside target, which then replaces target. On any
    error target keeps its old content (or stays absent) and no temporary file is left."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomically(target: Path, text: str) -> None:
    write_atomically(target, lambda handle: handle.write(text.encode("utf-8")))
