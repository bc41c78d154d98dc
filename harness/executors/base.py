"""The executor signature: run (cell, key) pairs, record each row in the driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from harness.cell import RunContext
from harness.matrix import Cell
from harness.progress import RunProgress

Record = Callable[[Cell, dict[str, Any]], None]
StillNeeded = Callable[[Cell, str], bool]


class RunCells(Protocol):
    def __call__(
        self,
        ctx: RunContext,
        pending: list[tuple[Cell, str]],
        record: Record,
        progress: RunProgress,
        still_needed: StillNeeded,
    ) -> None:
        """Run `pending`; call `record(cell, row)` here, in the driver, once per cell as it ends.
        `still_needed(cell, key)` is asked under the cell's lock just before it starts: False
        when another run on the same output directory wrote its row meanwhile (then skip it)."""
        ...
