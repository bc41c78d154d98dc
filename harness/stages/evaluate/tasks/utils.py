"""Functions the harness's lm-eval task YAMLs name with !function."""

from __future__ import annotations

from lm_eval.tasks.minerva_math import utils as minerva

from harness.stages.evaluate import passkey
from harness.stages.evaluate.sandbox import run_untrusted

# Printed after the tests: a completion that exits early (sys.exit(0)) must not pass.
PASSED = "__harness_humaneval_tests_passed__"
TIMEOUT_S = 10.0
MEMORY_MB = 1024


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def pass_at_1(references: list[str], predictions: list[list[str]], **kwargs: object) -> float:
    """Greedy Pass@1: the one completion runs with the problem's tests in the sandbox."""
    program = f"{predictions[0][0]}\n\n{references[0]}\nprint({PASSED!r})\n"
    result = run_untrusted(program, timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB)
    return 1.0 if result.passed and PASSED in result.stdout else 0.0


def passkey_process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """Exact match of the first number the model said with the hidden key."""
    return {"exact_match": int(passkey.answer(results[0]) == str(doc["key"]))}


def math_doc_to_text(doc: dict) -> str:
    return "Problem:\n" + doc["problem"] + "\n\nSolution:"


def math_fewshot_samples() -> list[dict]:
    return [{"problem": s["problem"], "answer": s["solution"]} for s in minerva.list_fewshot_samples()]


def math_process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """lm-eval's Minerva scoring, both sides normalised: its process_docs normalises the gold
    answer it takes from the solution; MATH-500's `answer` field is raw LaTeX (`90^\\circ`,
    `\\$18.90`, `\\text{(C)}`, `1,000`), so it is normalised here the same way."""
    answer = minerva.normalize_final_answer(minerva.get_unnormalized_answer(results[0]))
    gold = minerva.normalize_final_answer(doc["answer"])
    return {"exact_match": int(minerva.is_equiv(answer, gold))}
