"""Output checks under load (harness.stages.serving.output_check): a server answer against the
offline engine's greedy answer, in SmolLM2's real tokens; and through the real load client against
a small HTTP server that degenerates (SYNTHETIC: it streams one token repeated, as a broken
quantized model under batching does), which must fail the cell. The healthy side on real engines
is tests/integration/test_smoke_run.py (vLLM) and test_formats.py (llama-server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import SloSpec
from harness.stages.serving import loadgen, output_check
from harness.stages.serving.stage import _checks
from tests.test_loadgen import fake_server


@pytest.fixture(scope="module")
def codec(tokenizer):
    return (
        lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False),
        lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
    )


ANSWER = " The capital of France is Paris. It is known for the Eiffel Tower and its museums."


def test_the_same_answer_is_exact(codec) -> None:
    decode, encode = codec
    ids = encode(ANSWER)
    found = output_check.check(ids, ANSWER, decode)
    assert found.exact and found.first_divergence == len(ids) and not found.degenerate


def test_a_late_flip_is_rounding_an_early_one_is_not(codec) -> None:
    decode, encode = codec
    ids = encode(ANSWER)
    late = decode(ids[:10]) + " London and more."
    found = output_check.check(ids, late, decode)
    assert not found.exact and found.first_divergence == 10 and found.agrees(len(ids))
    early = output_check.check(ids, " Berlin is a city.", decode)
    assert early.first_divergence == 0 and not early.agrees(len(ids))


def test_one_unit_repeated_is_degenerate_unless_the_model_did_it_offline_too(codec) -> None:
    decode, encode = codec
    ids = encode(ANSWER)
    bangs = output_check.check(ids, "!" * 40, decode)
    assert bangs.degenerate and not bangs.reference_degenerate
    looped = encode("\n" * 40)
    same = output_check.check(looped, decode(looped), decode)
    assert same.degenerate and same.reference_degenerate and same.exact
    # a run of one character is a few long tokens to the tokenizer: judged on the text
    assert len(encode("!" * 24)) < 8 and output_check.degenerate("!" * 24)
    assert output_check.degenerate(" the" * 10) and not output_check.degenerate(ANSWER)
    summary = output_check.point_summary([same], [len(looped)])
    assert summary["degenerate"] == 0 and summary["reference_degenerate"] == 1  # the model's own loop


def test_the_verdict_fails_on_degenerate_output_or_a_majority_of_early_divergences() -> None:
    def point(agree: int, checked: int = 4, degenerate: int = 0) -> dict:
        return {
            "output_check": {
                "checked": checked,
                "exact": agree,
                "agree": agree,
                "first_divergence": [16] * agree + [0] * (checked - agree),
                "degenerate": degenerate,
                "reference_degenerate": 0,
            }
        }

    healthy = output_check.verdict([point(4), point(3)])
    assert healthy["output_check_ok"] is True and "7/8" in healthy["output_check_note"]
    assert output_check.verdict([point(4), point(4, degenerate=1)])["output_check_ok"] is False
    assert output_check.verdict([point(1), point(2)])["output_check_ok"] is False
    assert output_check.verdict([{"mode": "concurrency"}]) == {}  # no checks ran: no verdict


def test_a_server_that_degenerates_under_load_fails_the_check(smollm2_dir: Path, codec) -> None:
    decode, encode = codec
    reference = tuple(encode(ANSWER)[:12])
    inspect = _checks((reference,) * 4, 2, smollm2_dir)  # 2 checks per point, 2 points
    with fake_server(tokens_per_chunk=1, empty_final_chunk=False, usage=True) as url:  # streams "ab" per token
        target = loadgen.Target(url, "cell", {}, 30)
        points = [
            loadgen.run_point(target, [loadgen.LoadRequest([1, 2, 3], 12, 3)] * 4, SloSpec(), 2, inspect=inspect(i))
            for i in range(2)
        ]
    assert [p["output_check"]["checked"] for p in points] == [2, 2]  # the first 2 of 4 requests of each point
    assert all(p["output_check"]["degenerate"] == 2 and p["output_check"]["exact"] == 0 for p in points)
    judged = output_check.verdict(points)
    assert judged["output_check_ok"] is False and judged["output_check_note"].startswith("degenerate output")
