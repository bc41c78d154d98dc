"""Functions the harness's lm-eval task YAMLs name with !function."""

from __future__ import annotations

import json

from lm_eval.tasks.minerva_math import utils as minerva

from harness.stages.evaluate import humaneval, passkey

TIMEOUT_S = 10.0
MEMORY_MB = 1024


def build_predictions(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


def humaneval_target(doc: dict) -> str:
    """What Pass@1 needs of the problem: its prompt (the trusted helpers), tests and entry point."""
    return json.dumps({"prompt": doc["prompt"], "test": doc["test"], "entry_point": doc["entry_point"]})


def pass_at_1(references: list[str], predictions: list[list[str]], **kwargs: object) -> float:
    """Greedy Pass@1: the one completion answers the problem's tests in the sandbox; the verdict
    is the tests' own, replayed outside it (harness.stages.evaluate.humaneval)."""
    problem = json.loads(references[0])
    passed = humaneval.passes(
        problem["prompt"], predictions[0][0], problem["test"], problem["entry_point"], TIMEOUT_S, MEMORY_MB
    )
    return 1.0 if passed else 0.0


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
