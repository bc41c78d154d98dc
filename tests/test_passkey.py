"""The long-context retrieval task (harness/stages/evaluate/passkey.py): prompts generated offline
in the model's own tokens, scoring, accuracy by length, the config's checks, and the report's
figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import PasskeySpec
from harness.stages.evaluate import passkey
from harness.stages.evaluate.tasks.utils import passkey_process_results


def test_prompts_are_seeded_and_as_long_as_asked(tokenizer) -> None:  # noqa: ANN001 - a fixture
    spec = PasskeySpec(lengths=[256, 1024], items=3, seed=7)
    docs = passkey.documents(tokenizer, spec)
    assert docs == passkey.documents(tokenizer, spec)
    assert [d["length"] for d in docs] == [256] * 3 + [1024] * 3
    for doc in docs:
        assert abs(doc["tokens"] - doc["length"]) <= 0.05 * doc["length"]
        assert doc["text"].count(doc["key"]) == 2 and doc["text"].endswith("The pass key is")
        assert 0.0 <= doc["depth"] <= 1.0
    assert len({d["key"] for d in docs}) == len(docs)


def test_the_first_number_said_is_the_answer() -> None:
    assert passkey_process_results({"key": "86556"}, [" 86556.\n"]) == {"exact_match": 1}
    assert passkey_process_results({"key": "86556"}, [" 8655"]) == {"exact_match": 0}
    assert passkey_process_results({"key": "86556"}, [" I do not know"]) == {"exact_match": 0}


def test_accuracy_by_length_from_per_document_outcomes(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"length": n}) + "\n" for n in (256, 256, 1024, 1024)))
    assert passkey.by_length(path, {"0": 1, "1": 0, "2": 1, "3": 1}) == {"256": 0.5, "1024": 1.0}


@pytest.mark.parametrize("lengths", ["[64, 4096]", "[32]"])
def test_a_length_the_context_cannot_hold_is_a_one_line_error(tmp_path: Path, cli, lengths: str) -> None:  # noqa: ANN001
    config = tmp_path / "c.yaml"
    config.write_text(
        "name: c\nmodel: {source: builtin:smollm2-135m}\nformats: [bf16]\n"
        f"evals: {{tasks: [passkey], max_model_len: 2048, passkey: {{lengths: {lengths}}}}}\n"
    )
    done = cli("validate", str(config))
    assert done.returncode == 2
    assert "evals.passkey.lengths[" in done.stderr and "evals.max_model_len" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_configs_without_the_task_keep_their_cell_keys() -> None:
    from harness.config import EvalSpec, WorkloadSpec
    from harness.engines.vllm import VllmParams
    from harness.matrix import Cell
    from harness.params import FormatParams

    def key(evals: EvalSpec) -> str:
        return Cell(FormatParams(name="bf16"), None, VllmParams(), WorkloadSpec(), evals).key("m", {}, "v")

    plain = key(EvalSpec(tasks=["perplexity"]))
    assert plain == key(EvalSpec(tasks=["perplexity"], passkey=PasskeySpec(lengths=[128])))  # not run: no effect
    assert key(EvalSpec(tasks=["passkey"], passkey=PasskeySpec())) == key(EvalSpec(tasks=["passkey"]))
    assert key(EvalSpec(tasks=["passkey"], passkey=PasskeySpec(lengths=[128]))) != key(EvalSpec(tasks=["passkey"]))
