"""serving.slo is judged after the fact: it is not part of a cell's key (a new threshold must not
cost a re-measurement, hours on a 70B), so a finished row whose SLO differs from the config's has
its goodput and SLO attainment re-derived from the per-request records each point keeps."""

from __future__ import annotations

import json
from typing import Any

from harness.config import SloSpec
from harness.stages.serving import loadgen


def slo_json(slo: SloSpec) -> str:
    """The row's `serving_slo` for this SLO."""
    return json.dumps(slo.model_dump(), sort_keys=True)


def rederive(row: dict[str, Any], slo: SloSpec) -> dict[str, Any] | None:
    """The row with every sweep point's goodput and SLO attainment under `slo`, or None when a
    point kept no per-request records (a row from before they were kept: measure again)."""
    points = row.get("serving") or []
    if any(point.get("per_request") is None and point.get("requests") for point in points):
        return None
    derived = [
        {**point, **loadgen.slo_columns(point.get("per_request") or [], point["duration_s"] or 0.0, slo)}
        for point in points
    ]
    return {**row, "serving": derived, "serving_slo": slo_json(slo)}
