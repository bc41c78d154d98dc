"""What every stage shares: the results it returns know their columns, and a stage that ends its
cell says how (failed or unsupported), why, and what it measured before it stopped."""

from __future__ import annotations

from typing import Any, Protocol


class StageResult(Protocol):
    def columns(self) -> dict[str, Any]:
        """This result's figures as results-table columns."""
        ...


class StageStop(Exception):
    """The cell ends at this stage: `status` failed or unsupported, with its reason and the
    columns measured before it stopped."""

    def __init__(self, status: str, reason: str, stage: str, columns: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.stage = stage
        self.columns = columns or {}
