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


def test_an_unreadable_row_file_is_quarantined_and_its_cell_computed_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zero-byte row file (a crash mid-write on a disk that lost it) once made every later
    run die at start."""
    results.write_row(tmp_path, row("a"))
    (tmp_path / "rows" / "b.parquet").write_bytes(b"")
    assert results.finished(tmp_path) == {"a": "ok"}  # b: computed again
    assert results.row_status(tmp_path, "b") is None
    assert "b.parquet is not a readable row" in capsys.readouterr().err
    assert not (tmp_path / "rows" / "b.parquet").exists()
    assert len(list((tmp_path / "rows" / "quarantine").iterdir())) == 1
    results.write_row(tmp_path, row("b"))
    assert sorted(pd.read_parquet(tmp_path / "results.parquet")["cell_key"]) == ["a", "b"]


def test_rows_only_in_the_merged_table_survive_a_merge(tmp_path: Path) -> None:
    """A store restored from a copy of results.parquet (no rows/ files) keeps its rows."""
    results.write_row(tmp_path, row("a"))
    results.write_row(tmp_path, row("b"))
    (tmp_path / "rows" / "a.parquet").unlink()  # only results.parquet still has a
    results.write_row(tmp_path, row("c"))
    assert sorted(pd.read_parquet(tmp_path / "results.parquet")["cell_key"]) == ["a", "b", "c"]
    results.write_row(tmp_path, row("a", tok_s=99.0, minutes=3))  # a recomputed row replaces the kept one
    merged = pd.read_parquet(tmp_path / "results.parquet").set_index("cell_key")
    assert merged.loc["a", "output_tok_s"] == 99.0 and len(merged) == 3
