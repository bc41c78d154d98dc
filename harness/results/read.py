"""Reading results tables for the report, the gate and the picker: every row of the given tables
with the schema's columns, the compare pass re-applied, and small helpers on row values."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness import engines as engine_registry
from harness.errors import HarnessError
from harness.results import compare
from harness.results.schema import COLUMNS

Results = Path | str | Sequence[Path | str]


def is_missing(value: Any) -> bool:
    """None, NaN, NaT or pandas NA: a figure the row does not have."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def number(value: Any) -> float | None:
    """The value as a float, or None where the row has no figure."""
    return None if is_missing(value) else float(value)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as dicts, missing values as None."""
    result: list[dict[str, Any]] = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return result


def format_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A results row's format as a config `formats` entry (its recorded parameters, nulls dropped)."""
    try:
        params = json.loads(row.get("format_params") or "{}")
    except json.JSONDecodeError:
        params = {}
    entry = {k: v for k, v in params.items() if v is not None and k != "label"}
    entry["name"] = row["format"]
    return entry


def engine_settings(row: dict[str, Any]) -> dict[str, Any]:
    """The row's recorded engine arguments (engine_settings JSON), {} when it has none."""
    try:
        value = json.loads(row.get("engine_settings") or "{}")
    except (json.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def result_paths(results: Path | str | Sequence[Path | str]) -> list[Path]:
    items = [results] if isinstance(results, (str, Path)) else list(results)
    if not items:
        raise HarnessError("no results given: pass one or more results.parquet files (or their directories)")
    paths = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            path = path / "results.parquet"
        if not path.is_file():
            raise HarnessError(f"{item}: no such results file (give a results.parquet or the directory holding it)")
        paths.append(path)
    return paths


def load_results(results: Path | str | Sequence[Path | str]) -> pd.DataFrame:
    """Every row of the given tables, with the schema's columns (older tables lack some: empty),
    `engine_speed_class` filled from the engine registry where an older table has none."""
    frames = []
    for path in result_paths(results):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise HarnessError(f"{path}: not a readable parquet table ({exc})") from exc
        frame = frame.astype(object).where(frame.notna(), None)
        absent = [column for column in COLUMNS if column not in frame.columns]
        if absent:
            frame = pd.concat([frame, pd.DataFrame(None, index=frame.index, columns=absent, dtype=object)], axis=1)
        frame = compare.apply(frame, path.parent)  # relative figures by today's rule, from this table's own rows
        frame["source_file"] = str(path)
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    if frame.empty:
        raise HarnessError(", ".join(str(p) for p in result_paths(results)) + ": no rows")
    missing = frame["engine_speed_class"].isna()
    frame.loc[missing, "engine_speed_class"] = frame.loc[missing, "engine"].map(
        lambda e: engine_registry.REGISTRY[e].speed_class if e in engine_registry.REGISTRY else None
    )
    frame["started_at"] = pd.to_datetime(frame["started_at"], utc=True)
    return frame
