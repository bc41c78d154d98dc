"""Paired statistics (harness.results.paired) against the references the field trusts: scipy's
exact binomial test for McNemar, and the arithmetic of lm-eval's own aggregates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.results.paired import Paired, compare, mcnemar_exact_p, verdict


@pytest.mark.parametrize(("worse", "better"), [(0, 0), (1, 0), (3, 1), (7, 2), (10, 10), (0, 12), (25, 9)])
def test_mcnemar_exact_is_scipys_two_sided_binomial_test(worse: int, better: int) -> None:
    expected = 1.0 if worse + better == 0 else binomtest(worse, worse + better, 0.5).pvalue
    assert mcnemar_exact_p(worse, better) == pytest.approx(expected, rel=1e-12)


def test_flips_and_scores_of_right_wrong_items() -> None:
    ref = {str(i): 1.0 for i in range(20)}
    mine = {**ref, "0": 0.0, "1": 0.0, "2": 0.0}
    ref["19"] = 0.0
    stats = compare(mine, ref, higher_is_better=True)
    assert stats is not None
    assert (stats.items, stats.worse_flips, stats.better_flips) == (20, 3, 1)
    assert stats.score == pytest.approx(17 / 20) and stats.reference == pytest.approx(19 / 20)
    assert stats.recovery == pytest.approx(100 * 17 / 19)
    assert stats.mcnemar_p == pytest.approx(binomtest(1, 4, 0.5).pvalue)
    low, high = stats.diff_ci95
    assert low <= stats.diff <= high


def test_only_documents_both_scored_are_paired() -> None:
    stats = compare({"a": 1.0, "b": 0.0, "c": 1.0}, {"b": 1.0, "c": 1.0, "d": 0.0}, higher_is_better=True)
    assert stats is not None and stats.items == 2 and stats.worse_flips == 1


def test_perplexity_pairs_aggregate_as_lm_eval_does() -> None:
    """word_perplexity = exp(-Σ log-likelihood / Σ words); recovery = reference ÷ cell."""
    ref = {str(i): (-2.0 * (10 + i), 10 + i) for i in range(30)}
    mine = {str(i): (-2.1 * (10 + i), 10 + i) for i in range(30)}
    stats = compare(mine, ref, higher_is_better=False)
    assert stats is not None and stats.worse_flips is None and stats.mcnemar_p is None
    assert stats.reference == pytest.approx(math.exp(2.0)) and stats.score == pytest.approx(math.exp(2.1))
    assert stats.recovery == pytest.approx(100 * math.exp(2.0) / math.exp(2.1))
    assert stats.recovery_ci95 is not None and stats.recovery_ci95[0] <= stats.recovery <= stats.recovery_ci95[1]


def test_verdicts_against_a_floor() -> None:
    rng = np.random.default_rng(1)
    ref = {str(i): (-2.0 * 50, 50) for i in range(200)}
    close = {k: (v[0] * (1 + rng.normal(0, 0.002)), v[1]) for k, v in ref.items()}
    far = {k: (v[0] * 1.2, v[1]) for k, v in ref.items()}
    assert verdict(compare(close, ref, False), 95.0).label == "equivalent"  # type: ignore[arg-type]
    assert verdict(compare(far, ref, False), 95.0).label == "worse"  # type: ignore[arg-type]
    few = compare({"a": 1.0, "b": 1.0, "c": 0.0, "d": 1.0}, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, True)
    assert few is not None
    decided = verdict(few, 95.0)
    assert decided.label == "inconclusive" and "items would decide it" in decided.detail


def test_a_reference_scoring_zero_has_no_recovery() -> None:
    stats = compare({"a": 0.0, "b": 1.0}, {"a": 0.0, "b": 0.0}, True)
    assert stats is not None and stats.recovery is None and stats.recovery_ci90 is None
    assert verdict(stats, 95.0).label == "inconclusive"


def test_round_trips_through_json() -> None:
    stats = compare({"a": 1.0, "b": 0.0, "c": 1.0}, {"a": 1.0, "b": 1.0, "c": 1.0}, True)
    assert stats is not None and Paired.from_dict(stats.as_dict()) == stats
