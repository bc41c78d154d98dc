"""The results table: one row per cell, in parquet.

On disk, in the output directory:
  rows/<cell_key>.parquet   one file per finished cell, written to a temporary file and
                            renamed: a killed run leaves whole rows or none, and two runs
                            on the same directory never write the same file half-way.
  results.parquet           every row merged with the compare pass's relative figures, rewritten
                            atomically after each cell (under locks/merge.lock: two runs'
                            merges never lose each other's rows).
  locks/<cell_key>.lock     held while a run computes the cell (harness.cell_lock).
  logs/<cell_key>/          each stage's log (engines say there which kernel they chose).
  logprobs/<cell_key>.npz   a cell's top log-probabilities on the held-out windows (its KLD input).

A row file that cannot be read (zero bytes after a crash of the disk, not parquet) is moved to
rows/quarantine/ with a warning and its cell is computed again; it never stops a run. Rows that
exist only in results.parquet (a store restored from a copy of the table) are kept by every merge.

When a row cannot be written (a full disk, a read-only directory), the run stops with one
line (ResultsWriteError, exit status 74): every later row would be lost the same way, and
the rows already written are whole, so the next run resumes after the space is freed.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.atomic import write_atomically
from harness.cell_lock import LOCKS_DIR, held
from harness.errors import HarnessError
from harness.results import compare
from harness.results.schema import COLUMNS, FINAL_STATUSES, SCHEMA, row_table


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    write_atomically(path, lambda handle: pq.write_table(table, handle))


class ResultsWriteError(HarnessError):
    """The results directory cannot be written (full disk, read-only): the run stops."""

    exit_code = 74  # EX_IOERR


def write_row(out_dir: Path, row: dict[str, Any]) -> Path:
    """Write one cell's row atomically, then refresh the merged table. Raises ResultsWriteError
    when either cannot be written; a row file is then whole or absent, never half-written."""
    path = out_dir / "rows" / f"{row['cell_key']}.parquet"
    table = row_table(row)
    cell = row.get("cell_name") or row["cell_key"]
    try:
        _atomic_write_table(table, path)
    except OSError as exc:
        raise ResultsWriteError(
            f"cannot write the row of cell {cell} ({row.get('status')}) to {path.parent}: {_why(exc)}; "
            "the run stops (the rows written before are intact: free the space and run again to resume)"
        ) from exc
    try:
        merge(out_dir)
    except OSError as exc:
        raise ResultsWriteError(
            f"the row of cell {cell} is saved in {path.parent}, but {out_dir / 'results.parquet'} cannot be rewritten: "
            f"{_why(exc)}; the run stops (run again once there is space: the merge is redone)"
        ) from exc
    return path


def merge_if_stale(out_dir: Path) -> None:
    """Redo the merge when a row file is newer than results.parquet (a run stopped between the
    two, e.g. on a full disk). Raises ResultsWriteError when it still cannot be written."""
    rows = list((out_dir / "rows").glob("*.parquet"))
    merged = out_dir / "results.parquet"
    if not rows or (merged.is_file() and merged.stat().st_mtime_ns >= max(r.stat().st_mtime_ns for r in rows)):
        return
    try:
        merge(out_dir)
    except OSError as exc:
        raise ResultsWriteError(f"{merged} cannot be rewritten: {_why(exc)}") from exc


def _why(exc: OSError) -> str:
    """[Errno 28] No space left on device (pyarrow words its strerror its own way)."""
    return f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)


QUARANTINE_DIR = "quarantine"


def _quarantine(path: Path, exc: Exception) -> None:
    """Move an unreadable row file aside (never deleted: it may be evidence) and say so."""
    target = path.parent / QUARANTINE_DIR / f"{path.name}.{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        where = f"moved to {target}"
    except OSError as move_error:
        where = f"could not be moved aside ({_why(move_error)})"
    print(
        f"warning: {path} is not a readable row ({type(exc).__name__}: {str(exc)[:200]}); {where}; its cell is "
        "computed again",
        file=sys.stderr,
    )


def _read_row_file(path: Path) -> pa.Table | None:
    try:
        return pq.read_table(path, schema=SCHEMA)
    except FileNotFoundError:
        return None  # merged and replaced by another run meanwhile
    except (OSError, pa.ArrowException) as exc:
        _quarantine(path, exc)
        return None


def read_rows(out_dir: Path) -> pd.DataFrame:
    files = sorted((out_dir / "rows").glob("*.parquet"))
    tables = [table for f in files if (table := _read_row_file(f)) is not None]
    if not tables:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values("finished_at").drop_duplicates("cell_key", keep="last").reset_index(drop=True)


def _only_in_table(out_dir: Path, keys: set[str]) -> pd.DataFrame | None:
    """Rows of the current results.parquet whose cell has no row file (a restored store)."""
    path = out_dir / "results.parquet"
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path, schema=SCHEMA).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        print(f"warning: {path} is not readable ({type(exc).__name__}); it is rebuilt from rows/", file=sys.stderr)
        return None
    extra = table[~table["cell_key"].isin(keys)]
    return extra if not extra.empty else None


def merge(out_dir: Path) -> Path:
    """Rewrite results.parquet from rows/, with the compare pass's relative figures
    (harness.results.compare). Serialized across runs: the last merge to finish started after
    every row file written before it, so it holds them all."""
    path = out_dir / "results.parquet"
    with held(out_dir / LOCKS_DIR / "merge.lock"):
        rows = read_rows(out_dir)
        kept = _only_in_table(out_dir, set(rows["cell_key"]))
        if kept is not None:
            rows = kept if rows.empty else pd.concat([rows, kept], ignore_index=True)
        frame = compare.apply(rows, out_dir)
        _atomic_write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), path)
    return path


#: the hardware columns that decide whether a format runs at all: an `unsupported` row is final
#: only on a host that agrees on all of them (a format refused on a CPU host is tried on a GPU)
SUPPORT_COLUMNS = ("hw_device", "hw_name", "hw_compute_capability", "hw_cpu_flags")


def _final(row: dict[str, Any], host: dict[str, Any] | None) -> bool:
    if row["status"] == "unsupported" and host is not None:
        return all(_value(row.get(column)) == _value(host.get(column)) for column in SUPPORT_COLUMNS)
    return row["status"] in FINAL_STATUSES


def _value(cell: Any) -> Any:
    return None if cell is None or (isinstance(cell, float) and cell != cell) else cell  # pandas reads null as NaN


def row_status(
    out_dir: Path, key: str, since: datetime | None = None, host: dict[str, Any] | None = None
) -> str | None:
    """The status of a cell's row when it needs no computing now: a final status (`unsupported`
    only when measured on this `host`, Hardware.as_row()), or any status written at or after
    `since` (by a concurrent run: its failure is not retried by this run; the next run retries
    it). None: compute the cell."""
    path = out_dir / "rows" / f"{key}.parquet"
    if not path.is_file():
        return None
    table = _read_row_file(path)
    if table is None:
        return None
    row = table.select(["status", "finished_at", *SUPPORT_COLUMNS]).to_pylist()[0]
    if _final(row, host):
        return str(row["status"])
    if (
        since is not None
        and row["finished_at"] is not None
        and row["finished_at"] >= since.replace(microsecond=since.microsecond // 1000 * 1000)
    ):  # stored in ms
        return str(row["status"])
    return None


def read_row(out_dir: Path, key: str) -> dict[str, Any] | None:
    """A cell's row as written, or None when it has none (or an unreadable one)."""
    table = _read_row_file(out_dir / "rows" / f"{key}.parquet")
    return table.to_pylist()[0] if table is not None else None


def finished(out_dir: Path, host: dict[str, Any] | None = None) -> dict[str, str]:
    """cell_key → status, for rows that need no recomputation (`unsupported` ones only when
    measured on this `host`, Hardware.as_row())."""
    frame = read_rows(out_dir)
    rows = frame[["cell_key", "status", *SUPPORT_COLUMNS]].to_dict("records")
    return {row["cell_key"]: row["status"] for row in rows if _final(row, host)}
