"""issue 14: Pass@1 that model-written code cannot forge. The program's exit status and output
are its own; the verdict is the dataset's tests replayed outside the sandbox against the answers
the completion gave (harness/stages/evaluate/humaneval.py)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.stages.evaluate import data, humaneval
from harness.stages.evaluate.sandbox import boundary_problem
from harness.stages.evaluate.tasks import utils
from harness.stages.models import default_cache_dir

pytestmark = pytest.mark.skipif(boundary_problem() is not None, reason=f"no sandbox: {boundary_problem()}")


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    path = data.humaneval_file(default_cache_dir())
    return {p["task_id"]: p for p in map(json.loads, Path(path).read_text().splitlines())}


def _passes(problem: dict, completion: str) -> bool:
    prompt = problem["prompt"]
    return humaneval.passes(prompt, prompt + completion, problem["test"], problem["entry_point"], 10.0, 1024)


def test_every_canonical_solution_passes_and_no_stub_does(problems: dict[str, dict]) -> None:
    """The replay is the tests' own verdict: all 164 reference solutions pass (the tests that draw
    random inputs, call the prompt's helpers or compare floats included); a wrong answer fails."""
    with ThreadPoolExecutor(2) as pool:
        canonical = list(pool.map(lambda p: _passes(p, p["canonical_solution"]), problems.values()))
        wrong = list(pool.map(lambda p: _passes(p, "    return None\n"), list(problems.values())[:40]))
    failed = [task for task, ok in zip(problems, canonical) if not ok]
    assert failed == [] and len(canonical) == 164
    assert not any(wrong)


FORGERIES = {
    # the public sentinel of the old verdict, then an exit before the tests
    "sentinel": "    import os\n    print('__harness_humaneval_tests_passed__', flush=True)\n    os._exit(0)\n",
    "exit-early": "    raise SystemExit(0)\n",
    # a transcript printed before the tests, claiming answers it never computed
    "fake-transcript": (
        "    import os, json\n"
        f"    print({humaneval.MARKER!r} + json.dumps([['(([1.0, 2.0], 0.5), [])', 'ok', 'True']]), flush=True)\n"
        "    os._exit(0)\n"
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_completion_cannot_claim_a_pass(problems: dict[str, dict], forgery: str) -> None:
    problem = problems["HumanEval/0"]
    module_level = "\n" + FORGERIES[forgery].replace("\n    ", "\n").lstrip()  # also at module level, before the tests
    assert not _passes(problem, FORGERIES[forgery])
    assert not _passes(problem, problem["canonical_solution"] + module_level)


def test_redefining_the_prompts_helpers_does_not_help(problems: dict[str, dict]) -> None:
    """HumanEval/32's tests judge the answer with the prompt's `poly`: a completion that redefines
    poly to always be 0 passes its own tests in the sandbox, but not the dataset's."""
    problem = problems["HumanEval/32"]
    cheat = "    return 0.0\n\n\ndef poly(xs, x):\n    return 0.0\n"
    program = problem["prompt"] + cheat
    result = humaneval.run_untrusted(humaneval.sandboxed_program(program, problem["test"], "find_zero"), 10.0, 1024)
    assert result.passed  # the sandboxed run's own assertions were fooled
    assert not _passes(problem, cheat)
    assert _passes(problem, problem["canonical_solution"])


def test_the_lm_eval_metric_goes_through_the_replay(problems: dict[str, dict]) -> None:
    problem = problems["HumanEval/2"]
    reference = utils.humaneval_target(problem)
    good = [[problem["prompt"] + problem["canonical_solution"]]]
    assert utils.pass_at_1([reference], good) == 1.0
    assert utils.pass_at_1([reference], [[problem["prompt"] + FORGERIES["sentinel"]]]) == 0.0


def test_a_transcript_of_the_tests_own_calls_passes_only_with_the_right_answers(problems: dict[str, dict]) -> None:
    """The transcript a correct solution gives, printed by a completion that computes nothing:
    it passes only because its answers are the right ones; one answer changed and it fails."""
    problem = problems["HumanEval/0"]
    program = problem["prompt"] + problem["canonical_solution"]
    ran = humaneval.run_untrusted(
        humaneval.sandboxed_program(program, problem["test"], problem["entry_point"]), 10.0, 1024, stdout_chars=2**20
    )
    calls = humaneval.transcript(ran.stdout)
    assert calls is not None and len(calls) == 7
    listed = [[key, kind, answer] for key, (kind, answer) in calls.items()]

    def replaying(answers: list[list[str]]) -> str:
        line = f"print({humaneval.MARKER!r} + json.dumps({answers!r}), flush=True)"
        return f"    import os, json\n    {line}\n    os._exit(0)\n"

    assert humaneval.replay(problem["prompt"], problem["test"], problem["entry_point"], calls)
    assert _passes(problem, replaying(listed))  # the right answers to the tests' inputs: indistinguishable from solving
    flipped = [
        [key, kind, "False" if answer == "True" else "True"] if i == 0 else [key, kind, answer]
        for i, (key, kind, answer) in enumerate(listed)
    ]
    assert not _passes(problem, replaying(flipped))
