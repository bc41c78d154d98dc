"""The parquet table: atomic rows, merge, resume bookkeeping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from harness.results import store as results


def row(key: str, status: str = "ok", minutes: int = 0, tok_s: float = 10.0) -> dict:
    at = datetime(2026, 11, 28, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    return {
        "cell_key": key,
        "cell_name": f"cell-{key}",
        "status": status,
        "output_tok_s": tok_s,
        "started_at": at,
        "finished_at": at,
    }


def test_rows_merge_into_one_table(tmp_path: Path) -> None:
    results.write_row(tmp_path, row("a"))
    results.write_row(tmp_path, row("b", "unsupported"))
    merged = pd.read_parquet(tmp_path / "results.parquet")
    assert sorted(merged["cell_key"]) == ["a", "b"]
    assert list(merged.columns) == list(results.COLUMNS)


def test_rewriting_a_cell_replaces_it(tmp_path: Path) -> None:
    results.write_row(tmp_path, row("a", "failed", minutes=0))
    results.write_row(tmp_path, row("a", "ok", minutes=5, tok_s=42.0))
    frame = results.read_rows(tmp_path)
    assert len(frame) == 1 and frame.loc[0, "status"] == "ok" and frame.loc[0, "output_tok_s"] == 42.0


def test_finished_skips_ok_and_unsupported_but_retries_failed(tmp_path: Path) -> None:
    results.write_row(tmp_path, row("a", "ok"))
    results.write_row(tmp_path, row("b", "unsupported"))
    results.write_row(tmp_path, row("c", "failed"))
    assert results.finished(tmp_path) == {"a": "ok", "b": "unsupported"}


def test_no_temporary_files_left(tmp_path: Path) -> None:
    results.write_row(tmp_path, row("a"))
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_unknown_column_and_bad_status_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        results.write_row(tmp_path, {**row("a"), "made_up": 1})
    with pytest.raises(ValueError):
        results.write_row(tmp_path, row("a", "great"))
    assert not (tmp_path / "rows" / "a.parquet").exists()


def test_empty_directory_reads_as_empty_table(tmp_path: Path) -> None:
    frame = results.read_rows(tmp_path)
    assert frame.empty and "cell_key" in frame.columns
    assert results.finished(tmp_path) == {}
