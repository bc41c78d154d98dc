"""HumanEval's Pass@1 with a verdict model-written code cannot forge.

Model code decides its own exit status and output, so neither can say "the tests passed": a
completion that printed a pass line and called os._exit(0) once scored 1.0. Instead the tests
are judged twice, and the verdict that counts is reached outside the sandbox:

1. In the sandbox, the program is the problem's prompt + the completion, then the problem's
   tests run against a recorder: each call of the candidate is answered by the completion and
   written down (arguments and answer, as Python literals); the transcript is the program's last
   line of output. The module-level random generator is seeded before the tests (some draw their
   inputs) and restored around each call (so a candidate that draws numbers does not change the
   tests' inputs).
2. Outside, the harness runs the same tests, in a namespace made from the pinned dataset's own
   prompt (its helpers, e.g. `poly` or `encode_cyclic`, are the dataset's, not the completion's
   redefinitions), against a replayer that answers each call from the transcript. An answer that
   is missing, not a literal, or an exception fails the problem.

Printing a transcript therefore helps a completion only by giving the right answers for the
tests' own inputs: solving the problem (or knowing its tests). The trusted side runs only the
dataset's code (verified by SHA-256, harness.stages.evaluate.data) on literals (ast.literal_eval).
"""

from __future__ import annotations

import ast
import json
import random
from typing import Any

from harness.stages.evaluate.sandbox import run_untrusted

MARKER = "__harness_humaneval_transcript__ "
SEED = 20211  # HumanEval's tests that draw inputs draw them from the module-level generator
_TRANSCRIPT_CHARS = 4 * 2**20

_RECORDER = """

def __harness_record(function):
    import random as _random

    calls = []

    def candidate(*args, **kwargs):
        state = _random.getstate()
        key = repr((args, sorted(kwargs.items())))
        try:
            answer = function(*args, **kwargs)
        except BaseException as exc:
            calls.append([key, "raise", type(exc).__name__])
            raise
        finally:
            _random.setstate(state)
        calls.append([key, "ok", repr(answer)])
        return answer

    return candidate, calls


def __harness_main():
    import json as _json
    import random as _random

    candidate, calls = __harness_record({entry_point})
    globals()[{entry_point!r}] = candidate  # some tests also call the function by its name
    _random.seed({seed})
    check(candidate)
    print({marker!r} + _json.dumps(calls))


__harness_main()
"""


def sandboxed_program(program: str, test: str, entry_point: str) -> str:
    """What runs in the sandbox: prompt + completion (`program`), the tests, the recorder."""
    return f"{program}\n\n{test}\n" + _RECORDER.format(entry_point=entry_point, seed=SEED, marker=MARKER)


def transcript(stdout: str) -> dict[str, tuple[str, str]] | None:
    """The calls the program says it answered: repr of (args, kwargs) → (kind, answer repr)."""
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        return None
    try:
        calls = json.loads(lines[-1][len(MARKER) :])
        return {str(key): (str(kind), str(answer)) for key, kind, answer in calls}
    except (ValueError, TypeError):
        return None


def replay(prompt: str, test: str, entry_point: str, calls: dict[str, tuple[str, str]]) -> bool:
    """Run the dataset's tests outside the sandbox against the transcript's answers."""

    def candidate(*args: Any, **kwargs: Any) -> Any:
        kind, answer = calls.get(repr((args, sorted(kwargs.items()))), ("missing", ""))
        if kind != "ok":
            raise AssertionError(f"the candidate's answer is {kind}")
        return ast.literal_eval(answer)

    namespace: dict[str, Any] = {"__name__": "__harness_humaneval__"}
    state = random.getstate()
    try:
        exec(compile(prompt, "<prompt>", "exec"), namespace)  # noqa: S102 - the pinned dataset's own code
        namespace[entry_point] = candidate  # some tests also call the function by its name
        exec(compile(test, "<test>", "exec"), namespace)  # noqa: S102
        random.seed(SEED)
        namespace["check"](candidate)
    except Exception:  # noqa: BLE001 - any failure of the tests, or an answer that is not a literal
        return False
    finally:
        random.setstate(state)
    return True


def passes(prompt: str, program: str, test: str, entry_point: str, timeout_s: float, memory_mb: int) -> bool:
    """Pass@1 of one completion: `program` is the prompt followed by the completion."""
    result = run_untrusted(
        sandboxed_program(program, test, entry_point), timeout_s, memory_mb, stdout_chars=_TRANSCRIPT_CHARS
    )
    calls = transcript(result.stdout) if result.passed else None
    return calls is not None and replay(prompt, test, entry_point, calls)
