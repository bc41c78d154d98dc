"""The quality metrics: one entry each, and every module that shows, gates, recovers or reads a
metric from lm-eval takes it from here (as lm-eval's own metric registry records
higher_is_better beside each metric).

A new metric is one entry in METRICS: its results column (and, if `recovered`, its
`<column>_recovery_pct` column) is added to the schema, lm-eval's key is mapped to it, the gate
accepts a floor for it, and the report and CLI show it under `label`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    column: str  # the results column
    label: str  # how tables and plots name it
    higher_is_better: bool
    #: where lm-eval reports it: (task, metric key as in lm-eval's results, "metric,filter")
    sources: tuple[tuple[str, str], ...]
    recovered: bool  # gets a recovery % (of the reference cell's value) and a gate floor
    number_format: str = ".3f"
    description: str = ""

    @property
    def recovery_column(self) -> str:
        return f"{self.column}_recovery_pct"


METRICS: tuple[Metric, ...] = (
    Metric(
        "pass_at_1",
        "Pass@1",
        True,
        (("harness_humaneval", "pass_at_1,create_test"), ("humaneval", "pass@1,create_test")),
        recovered=True,
        description="HumanEval, greedy, n=1, temperature 0 (sandboxed)",
    ),
    Metric(
        "math_exact_match",
        "MATH",
        True,
        (
            ("harness_math500", "exact_match,none"),
            ("minerva_math500", "exact_match,none"),
            ("hendrycks_math500", "exact_match,none"),
        ),
        recovered=True,
        description="MATH-500, Minerva 4-shot, answer equivalence",
    ),
    Metric("gsm8k_strict_match", "GSM8K", True, (("gsm8k", "exact_match,strict-match"),), recovered=True),
    Metric("gsm8k_flexible_match", "GSM8K flex", True, (("gsm8k", "exact_match,flexible-extract"),), recovered=False),
    Metric(
        "passkey_exact_match",
        "pass-key",
        True,
        (("harness_passkey", "exact_match,none"),),
        recovered=True,
        description="long-context retrieval: a pass key hidden in filler at each evals.passkey length, exact match",
    ),
    Metric(
        "perplexity",
        "ppl",
        False,
        (("harness_prose_ppl", "word_perplexity,none"),),
        recovered=True,
        number_format=".2f",
        description="word perplexity on held-out prose",
    ),
    Metric(
        "bits_per_byte",
        "bits/byte",
        False,
        (("harness_prose_ppl", "bits_per_byte,none"),),
        recovered=False,
        number_format=".4f",
    ),
)
BY_COLUMN: dict[str, Metric] = {m.column: m for m in METRICS}
#: the metrics a recovery % (and a gate floor) exists for
RECOVERY_METRICS: tuple[str, ...] = tuple(m.column for m in METRICS if m.recovered)
RECOVERY_COLUMNS: tuple[str, ...] = tuple(m.recovery_column for m in METRICS if m.recovered)
#: (lm-eval task, metric key) -> results column
LM_EVAL_KEYS: dict[tuple[str, str], str] = {source: m.column for m in METRICS for source in m.sources}


def recovery_pct(metric: Metric, value: float, reference: float) -> float | None:
    """`value` in % of `reference` (a lower-is-better metric inverted: reference / value), or
    None where no such % exists (a reference of 0, or a lower-is-better value of 0)."""
    if reference == 0 or (value == 0 and not metric.higher_is_better):
        return None
    return 100.0 * (value / reference if metric.higher_is_better else reference / value)
