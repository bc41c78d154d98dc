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


def _zipf_pair(positions: int, vocab: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Full log-probabilities of a Zipf-like reference and a noisy cell (a quantized model)."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab + 1, dtype=np.float64)
    logits = np.stack([-1.1 * np.log(rng.permutation(ranks)) for _ in range(positions)])
    noisy = logits + rng.normal(scale=noise, size=logits.shape)

    def log_softmax(x: np.ndarray) -> np.ndarray:
        return (
            x
            - np.log(np.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
            - x.max(axis=1, keepdims=True)
        )

    return log_softmax(logits), log_softmax(noisy)


def test_exact_kld_equals_scipys_full_vocabulary_computation() -> None:
    """llama.cpp's definition, over the whole vocabulary, against scipy.special.rel_entr."""
    from scipy.special import rel_entr

    from harness.results.divergence import exact_kl_divergence

    base, cell = _zipf_pair(150, 4096, 0.5, 3)
    reference = rel_entr(np.exp(base), np.exp(cell)).sum(axis=1)
    result = exact_kl_divergence(base.astype(np.float32), cell.astype(np.float32), chunk=32)
    as_stored = rel_entr(
        np.exp(base.astype(np.float32).astype(np.float64)), np.exp(cell.astype(np.float32).astype(np.float64))
    )
    assert result.method == "exact"
    assert result.kld_mean == pytest.approx(float(as_stored.sum(axis=1).mean()), abs=1e-6)
    assert result.kld_mean == pytest.approx(float(reference.mean()), rel=1e-4)
    assert result.kld_median == pytest.approx(float(np.median(as_stored.sum(axis=1))), abs=1e-6)
    assert result.top1_agreement == pytest.approx(float(np.mean(base.argmax(1) == cell.argmax(1))))


def test_top_k_figures_are_lower_and_say_so() -> None:
    """On a high-entropy distribution the top-32 figures are well below the exact one: the bound
    (the cell's whole distribution known) is a true lower bound, and both are labelled."""
    from harness.results.divergence import exact_kl_divergence

    base, cell = _zipf_pair(100, 4096, 0.5, 4)
    exact = exact_kl_divergence(base, cell)
    bound = kl_divergence(*_top_lp(base, 32), *_top_lp(cell, 32), cell_full=cell)
    estimate = kl_divergence(*_top_lp(base, 32), *_top_lp(cell, 32))
    assert (bound.method, estimate.method) == ("top-32 bound", "top-32 estimate")
    assert np.all(bound.per_position <= exact.per_position + 1e-9)
    assert estimate.kld_mean < 0.9 * exact.kld_mean


def _top_lp(logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.argsort(-logprobs, axis=1)[:, :k]
    return ids, np.take_along_axis(logprobs, ids, axis=1)


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


def test_without_the_sandbox_no_code_task_runs(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    """Fail closed: no bwrap, no HumanEval score (the row's eval_note says why)."""
    from harness.config import EvalSpec
    from harness.stages.evaluate import sandbox
    from harness.stages.evaluate.stage import lm_eval_tasks

    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox._probe.cache_clear()
    try:
        tasks, note = lm_eval_tasks(EvalSpec(tasks=["humaneval", "gsm8k"], allow_code_execution=True))
    finally:
        sandbox._probe.cache_clear()
    assert tasks == ["gsm8k"]
    assert note == "harness_humaneval not run: no sandbox: bwrap (bubblewrap) is not installed; install it " + (
        "(Debian/Ubuntu: apt-get install bubblewrap)"
    )


@pytest.mark.parametrize(
    "gold, said",
    [
        ("90^\\circ", "90"),
        ("\\$18.90", "18.90"),
        ("\\text{(C)}", "(C)"),
        ("1,000", "1000"),
        ("\\frac{1}{2}", "\\frac12"),
    ],
)
def test_math_gold_answers_are_normalised_as_lm_eval_does(gold: str, said: str) -> None:
    """MATH-500's raw gold answers (lm-eval normalises its gold in process_docs): a right answer
    scores 1, whatever LaTeX the gold is written in, and a wrong one 0."""
    from harness.stages.evaluate.tasks.utils import math_process_results

    right = f"Final Answer: The final answer is ${said}$. I hope it is correct."
    wrong = "Final Answer: The final answer is $7$. I hope it is correct."
    assert math_process_results({"answer": gold}, [right]) == {"exact_match": 1}
    assert math_process_results({"answer": gold}, [wrong]) == {"exact_match": 0}
