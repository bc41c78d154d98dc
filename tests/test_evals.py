"""The KL divergence estimate and the task selection (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.results.divergence import kl_divergence


def _top(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    logprobs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ids = np.argsort(-logprobs, axis=1)[:, :k]
    return ids, np.take_along_axis(logprobs, ids, axis=1).astype(np.float32)


def test_identical_distributions_have_zero_divergence() -> None:
    logits = np.random.default_rng(0).normal(size=(50, 100))
    ids, lp = _top(logits, 10)
    result = kl_divergence(ids, lp, ids, lp)
    assert result.kld_mean == pytest.approx(0.0, abs=1e-12) and result.top1_agreement == 1.0 and result.positions == 50


def test_top_k_estimate_tracks_the_exact_divergence() -> None:
    rng = np.random.default_rng(1)
    p_logits = rng.normal(scale=3.0, size=(200, 64))
    q_logits = p_logits + rng.normal(scale=0.3, size=p_logits.shape)
    p = np.exp(p_logits - np.log(np.exp(p_logits).sum(axis=1, keepdims=True)))
    q = np.exp(q_logits - np.log(np.exp(q_logits).sum(axis=1, keepdims=True)))
    exact = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))
    estimate = kl_divergence(*_top(p_logits, 64), *_top(q_logits, 64))  # k = vocab: exact
    assert estimate.kld_mean == pytest.approx(exact, rel=1e-4)
    truncated = kl_divergence(*_top(p_logits, 16), *_top(q_logits, 16))
    assert truncated.kld_mean == pytest.approx(exact, rel=0.5)  # most of the mass is in the top 16
    assert 0.5 < truncated.top1_agreement < 1.0


def test_more_noise_means_more_divergence() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(scale=3.0, size=(100, 64))
    small = kl_divergence(*_top(base, 16), *_top(base + rng.normal(scale=0.1, size=base.shape), 16))
    large = kl_divergence(*_top(base, 16), *_top(base + rng.normal(scale=1.0, size=base.shape), 16))
    assert small.kld_mean < large.kld_mean and small.top1_agreement > large.top1_agreement


def test_different_positions_are_refused() -> None:
    ids, lp = _top(np.zeros((3, 8)), 4)
    with pytest.raises(ValueError):
        kl_divergence(ids, lp, ids[:2], lp[:2])


def test_code_tasks_run_only_sandboxed_and_only_when_allowed() -> None:
    from harness.config import EvalSpec
    from harness.stages.evaluate.stage import lm_eval_tasks

    tasks, note = lm_eval_tasks(EvalSpec(tasks=["humaneval", "mbpp", "gsm8k"], allow_code_execution=True))
    assert tasks == ["harness_humaneval", "gsm8k"] and "mbpp refused" in note
    tasks, note = lm_eval_tasks(EvalSpec(tasks=["humaneval", "perplexity"], allow_code_execution=False))
    assert tasks == ["harness_prose_ppl"] and "allow_code_execution" in note
