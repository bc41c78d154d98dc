"""The conformance verdict (harness.stages.bench_conformance): paired ratios, their interval,
and the two-sided band."""

from __future__ import annotations

import math

import pytest

from harness.stages.bench_conformance import Conformance


def _pairs(ratios: list[float], base: float = 600.0) -> Conformance:
    # each pair on its own machine speed (the drift pairs are there to cancel)
    speeds = [base * (1 + 0.05 * math.sin(i)) for i in range(len(ratios))]
    return Conformance([s * r for s, r in zip(speeds, ratios)], speeds)


def test_the_ratio_is_the_pairs_geometric_mean_whatever_the_drift() -> None:
    result = _pairs([1.01, 0.99] * 10)
    assert result.ratio == pytest.approx(1.0, abs=1e-3)
    assert result.verdict == "conforms"


def test_a_harness_faster_than_vllm_fails_too() -> None:
    """The old check was one-sided: 10 % faster than vLLM's own tool passed."""
    assert _pairs([1.10, 1.11, 1.09, 1.10] * 4).verdict == "deviates"
    assert _pairs([0.90, 0.91, 0.89, 0.90] * 4).verdict == "deviates"


def test_noise_wider_than_the_band_is_inconclusive_not_a_pass() -> None:
    noisy = _pairs([0.92, 1.08, 0.95, 1.06, 0.97, 1.03])
    low, high = noisy.interval
    assert low < 0.98 < 1.02 < high and noisy.verdict == "inconclusive"
    assert "inconclusive" in noisy.line() and "6 pairs" in noisy.line()


def test_the_width_is_the_intervals_high_over_low() -> None:
    noisy = _pairs([0.92, 1.08, 0.95, 1.06, 0.97, 1.03])
    low, high = noisy.interval
    assert noisy.width == pytest.approx(high / low)


def test_pairs_are_added_while_an_interval_is_too_wide_to_decide() -> None:
    """A TTFT median's interval spanned 0.903-1.035 after the fixed 10 pairs in one CI run: too wide
    to show a deviation, so the test failed on noise. The measurement now goes on while any interval
    is wider than PRECISE_WIDTH, up to its limit, and ends on an even count (balanced order)."""
    from harness.stages.bench_conformance import PRECISE_WIDTH, wants_more_pairs

    precise = _pairs([1.01, 0.99] * 5)
    wide = _pairs([0.86, 1.08, 0.84, 1.04, 0.93] * 2)
    assert precise.width < PRECISE_WIDTH <= wide.width
    assert wants_more_pairs([], 3, pairs=10, max_pairs=24)  # the minimum first, whatever the width
    assert not wants_more_pairs([precise, precise], 10, pairs=10, max_pairs=24)
    assert wants_more_pairs([precise, wide], 10, pairs=10, max_pairs=24)
    assert wants_more_pairs([precise], 11, pairs=10, max_pairs=24)  # never stop after an odd count
    assert not wants_more_pairs([wide], 24, pairs=10, max_pairs=24)  # the limit: then the test says "too wide"
    assert not wants_more_pairs([wide], 10, pairs=10, max_pairs=None)  # no limit given: the fixed count
