"""A cell's stored next-token log-probabilities on the held-out windows: what it measured about
itself for the compare pass's KL divergence.

Two files per cell under OUT/logprobs/: `<key>.npz` (its top-k token ids and log-probabilities
at every position: every engine writes it) and, where the engine returns full logits, `<key>.full.npy`
(positions × vocabulary, float32: the whole distribution, for the exact KL divergence; read
memory-mapped). Both are written atomically."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.atomic import write_atomically

#: where a cell's log-probabilities go, relative to the output directory
LOGPROBS_DIR = "logprobs"


def top_relative(key: str) -> str:
    return f"{LOGPROBS_DIR}/{key}.npz"


def full_relative(top: str) -> str:
    """The full distribution's file beside a top-k file (its path relative to the output dir)."""
    return top.removesuffix(".npz") + ".full.npy"


def save_top(out_dir: Path, key: str, ids: np.ndarray, logprobs: np.ndarray) -> str:
    """The cell's top log-probabilities; the path relative to `out_dir`."""
    relative = top_relative(key)
    write_atomically(out_dir / relative, lambda handle: np.savez(handle, ids=ids, logprobs=logprobs))
    return relative


def save_full(path: Path, logprobs: np.ndarray) -> None:
    """The whole next-token distribution (positions × vocabulary), as float32."""
    write_atomically(path, lambda handle: np.save(handle, logprobs.astype(np.float32), allow_pickle=False))


@dataclass(frozen=True)
class Stored:
    ids: np.ndarray  # (positions, k) top-k token ids, most likely first
    logprobs: np.ndarray  # (positions, k)
    full: np.ndarray | None  # (positions, vocabulary), memory-mapped; None: the engine kept only top-k


def loader(out_dir: Path | None) -> Callable[[dict[str, Any]], Stored | None]:
    """Reads a row's stored log-probabilities (its kld_logprobs file under `out_dir`), once each."""
    cache: dict[str, Stored | None] = {}

    def load(row: dict[str, Any]) -> Stored | None:
        relative = row.get("kld_logprobs")
        if out_dir is None or not isinstance(relative, str) or not relative:
            return None
        if relative not in cache:
            cache[relative] = _read(out_dir, relative)
        return cache[relative]

    return load


def _read(out_dir: Path, relative: str) -> Stored | None:
    try:
        with np.load(out_dir / relative) as stored:
            ids, logprobs = stored["ids"], stored["logprobs"]
    except (OSError, KeyError, ValueError):
        return None
    full = None
    full_path = out_dir / full_relative(relative)
    if full_path.is_file():
        try:
            full = np.load(full_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            full = None
        if full is not None and full.shape[0] != ids.shape[0]:
            full = None
    return Stored(ids, logprobs, full)
