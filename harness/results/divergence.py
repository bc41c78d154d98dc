"""KL divergence of a cell's next-token distribution from its reference cell's, on the same
held-out tokens, and how often their top tokens agree (as llama.cpp's `--kl-divergence` reports
them). Pure numpy: the compare pass (harness.results.compare) calls it on what each cell stored."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Divergence:
    kld_mean: float
    kld_p99: float
    top1_agreement: float
    positions: int


def kl_divergence(base_ids: np.ndarray, base_lp: np.ndarray, ids: np.ndarray, lp: np.ndarray) -> Divergence:
    """KL(P_base || P_cell) per position over the baseline's top-k tokens plus one bucket for
    the rest of the mass. Where a baseline top-k token is missing from the cell's top-k, the
    cell's k-th log-probability stands in (an upper bound on its probability)."""
    if base_ids.shape != ids.shape:
        raise ValueError(f"baseline and cell scored different positions: {base_ids.shape} vs {ids.shape}")
    kls = np.empty(len(base_ids))
    for i in range(len(base_ids)):
        lookup = dict(zip(ids[i].tolist(), lp[i].tolist()))
        floor = float(lp[i].min())
        p = np.exp(base_lp[i].astype(np.float64))
        q = np.exp(np.array([lookup.get(t, floor) for t in base_ids[i].tolist()], dtype=np.float64))
        p_rest = max(1.0 - p.sum(), 1e-12)
        q_rest = max(1.0 - q.sum(), 1e-12)
        kls[i] = float(np.sum(p * (np.log(p) - np.log(q))) + p_rest * (math.log(p_rest) - math.log(q_rest)))
    agree = float(np.mean(base_ids[:, 0] == ids[:, 0]))
    return Divergence(float(np.mean(kls)), float(np.percentile(kls, 99)), agree, len(kls))
