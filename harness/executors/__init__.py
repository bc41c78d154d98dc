"""Where a run's cells run: one module per executor and one line in REGISTRY.

Every executor module has a `run_cells` of the same signature (executors/base.py): it runs the
pending cells with harness.cell.run_cell and hands each row to `record`, in the driver's
process, as it ends. Modules are imported when a run uses them (config validates names only).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.executors.base import RunCells

#: executor name → its module
REGISTRY: dict[str, str] = {
    "local": "harness.executors.local",
    "ray": "harness.executors.ray",
}


def get(name: str) -> RunCells:
    run_cells: RunCells = importlib.import_module(REGISTRY[name]).run_cells
    return run_cells
