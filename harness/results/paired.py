"""Paired statistics of a cell against its reference, document by document: the language the
gate decides in.

Both cells scored the same documents (the same eval settings: the compare pass's rule), so
each document gives a pair. For a metric scored right/wrong per document (Pass@1, exact match):
the flips (right → wrong, wrong → right) and McNemar's exact p-value over them. For every metric:
a paired bootstrap (documents resampled together) of the score difference and of the recovery %
(the cell's score in % of the reference's; for perplexity, reference ÷ cell), a 95 % interval and
the 90 % one that two one-sided tests at 5 % use. The verdict against a recovery floor:

  equivalent    the 90 % interval's lower end is at or above the floor (TOST at 5 %)
  worse         the 90 % interval's upper end is below the floor
  inconclusive  neither; with about how many documents the interval would be narrow enough

Aggregates are those of lm-eval's metrics: the mean of per-document scores, and for perplexity
exp(-Σ log-likelihood / Σ words) over (log-likelihood, words) pairs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Paired:
    """One metric of one cell against its reference, over the documents both scored."""

    items: int
    score: float
    reference: float
    diff: float  # score - reference
    diff_ci95: tuple[float, float]
    recovery: float | None  # % (None: the reference scored 0)
    recovery_ci95: tuple[float, float] | None
    recovery_ci90: tuple[float, float] | None
    worse_flips: int | None  # right → wrong (None: not a right/wrong metric)
    better_flips: int | None
    mcnemar_p: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Paired:
        def pair(value: Any) -> tuple[float, float] | None:
            return None if value is None else (float(value[0]), float(value[1]))

        return cls(
            **{
                **data,
                "diff_ci95": pair(data["diff_ci95"]),
                "recovery_ci95": pair(data["recovery_ci95"]),
                "recovery_ci90": pair(data["recovery_ci90"]),
            }
        )


@dataclass(frozen=True)
class Verdict:
    label: str  # equivalent, worse, inconclusive
    detail: str  # one line with the interval and, when inconclusive, the documents that would decide it


def mcnemar_exact_p(worse: int, better: int) -> float:
    """Two-sided exact McNemar test: the binomial test of the discordant pairs at p = 1/2."""
    n = worse + better
    if n == 0:
        return 1.0
    k = min(worse, better)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _is_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2


def _aggregate(values: np.ndarray, pairs: bool) -> np.ndarray:
    """Score of each bootstrap row: mean, or exp(-Σll/Σwords) for (ll, words) pairs (axis -2)."""
    if pairs:
        return np.exp(-values[..., 0].sum(axis=-1) / values[..., 1].sum(axis=-1))
    return values.mean(axis=-1)


def _recovery(score: np.ndarray | float, reference: np.ndarray | float, higher_is_better: bool) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (np.divide(score, reference) if higher_is_better else np.divide(reference, score))


def _interval(values: np.ndarray, level: float) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    if finite.size < values.size * 0.9:  # a reference scoring 0 in many resamples: no interval
        return None
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def compare(mine: dict[str, Any], theirs: dict[str, Any], higher_is_better: bool) -> Paired | None:
    """`mine` and `theirs`: doc_id → that document's score (a number, or (log-likelihood, words))."""
    docs = sorted(set(mine) & set(theirs))
    if not docs:
        return None
    pairs = _is_pair(mine[docs[0]])
    cell = np.array([mine[d] for d in docs], dtype=float)
    ref = np.array([theirs[d] for d in docs], dtype=float)
    score, reference = float(_aggregate(cell, pairs)), float(_aggregate(ref, pairs))
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(docs), size=(BOOTSTRAP_RESAMPLES, len(docs)))
    boot_cell, boot_ref = _aggregate(cell[picks], pairs), _aggregate(ref[picks], pairs)
    diff_ci = _interval(boot_cell - boot_ref, 0.95) or (score - reference, score - reference)
    recovery = (
        None
        if reference == 0 or (score == 0 and not higher_is_better)
        else float(_recovery(score, reference, higher_is_better))
    )
    boot_recovery = _recovery(boot_cell, boot_ref, higher_is_better)
    binary = not pairs and set(np.unique(np.concatenate([cell, ref]))) <= {0.0, 1.0}
    worse = better = None
    p = None
    if binary:
        worse, better = int(((ref == 1) & (cell == 0)).sum()), int(((ref == 0) & (cell == 1)).sum())
        p = mcnemar_exact_p(worse, better)
    return Paired(
        items=len(docs),
        score=score,
        reference=reference,
        diff=score - reference,
        diff_ci95=diff_ci,
        recovery=recovery,
        recovery_ci95=_interval(boot_recovery, 0.95) if recovery is not None else None,
        recovery_ci90=_interval(boot_recovery, 0.90) if recovery is not None else None,
        worse_flips=worse,
        better_flips=better,
        mcnemar_p=p,
    )


def verdict(stats: Paired, floor_pct: float) -> Verdict:
    """Equivalent, worse or inconclusive against a recovery floor (two one-sided tests at 5 %)."""
    ci = stats.recovery_ci90
    if stats.recovery is None or ci is None:
        return Verdict(
            "inconclusive",
            f"no recovery interval: the reference scores {stats.reference:.4g} on these {stats.items} items",
        )
    shown = (
        f"recovery {stats.recovery:.1f} % (90 % interval {ci[0]:.1f}–{ci[1]:.1f}) on {stats.items} items, "
        f"floor {floor_pct:g} %"
    )
    if ci[0] >= floor_pct:
        return Verdict("equivalent", shown)
    if ci[1] < floor_pct:
        return Verdict("worse", shown)
    return Verdict("inconclusive", f"{shown}; about {items_to_decide(stats, floor_pct)} items would decide it")


def items_to_decide(stats: Paired, floor_pct: float) -> int:
    """Documents for the 90 % interval to clear the floor, were the point estimate to stay: the
    half-width shrinks as 1/sqrt(n)."""
    assert stats.recovery_ci90 is not None and stats.recovery is not None
    half = (stats.recovery_ci90[1] - stats.recovery_ci90[0]) / 2
    gap = abs(stats.recovery - floor_pct)
    if gap == 0:
        return 100 * stats.items
    return max(stats.items + 1, math.ceil(stats.items * (half / gap) ** 2))
