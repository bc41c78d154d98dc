"""The fallback chain of `harness pick --validate` (harness.plan.fallback): which formats it tries
in which order, where it places a step that does not fit one device, and where it stops. The
end-to-end walk on SmolLM2 is tests/integration/test_pick_validate.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.gpus import GPUS
from harness.picker import fits_on, pick, rule_candidates, variant
from harness.plan.fallback import Step, chain, placed, walk


def _formats(steps: list[Step]) -> list[str]:
    return [s.format for s in steps]


def test_on_a_cpu_the_chain_adds_bits_then_8_bit() -> None:
    assert _formats(chain("gguf-q4_k_m", None, [])) == ["gguf-q4_k_m", "gguf-q5_k_m", "gguf-q8_0"]
    assert [s.why for s in chain("gguf-q4_k_m", None, [])] == ["the picker's answer", "the next candidate", "8-bit"]
    assert _formats(chain("gguf-q5_k_m", None, [])) == ["gguf-q5_k_m", "gguf-q8_0"]


def test_on_a_gpu_the_chain_is_the_rule_then_its_8_bit() -> None:
    assert _formats(chain("w4a16-awq", GPUS["h100-80gb"], ["w4a16-awq", "w4a16-gptq"])) == [
        "w4a16-awq",
        "w4a16-gptq",
        "fp8-dynamic",
    ]
    # an A100 has no FP8 tensor cores: INT8 W8A8 is its 8-bit
    assert _formats(chain("w4a16-awq", GPUS["a100-80gb"], ["w4a16-awq", "w4a16-gptq"]))[-1] == "w8a8-int8"
    # measured rows that moved the answer to 8-bit (or to the rule's second): never back to fewer bits
    assert _formats(chain("fp8-dynamic", GPUS["h100-80gb"], ["w4a16-awq", "w4a16-gptq"])) == ["fp8-dynamic"]
    assert _formats(chain("w4a16-gptq", GPUS["h100-80gb"], ["w4a16-awq", "w4a16-gptq"])) == [
        "w4a16-gptq",
        "fp8-dynamic",
    ]


def test_a_step_that_does_not_fit_one_gpu_goes_to_the_least_tensor_parallelism_that_holds_it() -> None:
    rec = pick("h100-80gb", "llama-3.1-70b", "chat", "strict", concurrency=128, context=2048)
    assert not fits_on(rec, "fp8-dynamic", 1)  # 70B in FP8 with 128 x 2k of KV: not one H100
    step = placed(Step("fp8-dynamic", "8-bit"), lambda fmt, tp: fits_on(rec, fmt, tp), (2, 4, 8))
    assert step is not None and step.tensor_parallel == 2 and step.why == "8-bit, more memory"
    config = variant(rec, "fp8-dynamic", 2).config_yaml()
    assert "tensor_parallel_size: 2" in config
    assert placed(Step("bf16", "x"), lambda fmt, tp: False, (2, 4, 8)) is None


def test_rule_candidates_follow_the_picker() -> None:
    rec = pick("h100-80gb", "qwen2.5-7b", "chat", "balanced", concurrency=8, context=2048)
    assert rule_candidates(rec) == ["w4a16-awq", "w4a16-gptq"]
    assert rule_candidates(pick("cpu", "smollm2-135m", "chat", "balanced")) == ["gguf-q4_k_m"]


def _row(fmt: str, key: str, recovery: float | None, status: str = "ok", reason: str | None = None) -> dict[str, Any]:
    return {
        "format": fmt,
        "cell_name": f"{fmt}/llamacpp/kv-auto",
        "cell_key": key,
        "status": status,
        "reason": reason,
        "started_at": "2026-12-04T00:00:00",
        "reference_cell_key": "base",
        "perplexity_recovery_pct": recovery,
    }


BASE = {**_row("bf16", "base", None), "cell_name": "bf16/transformers/kv-auto"}


def test_the_walk_stops_at_the_first_step_that_passes_and_names_its_rows(tmp_path: Path) -> None:
    recovery = {"gguf-q4_k_m": 93.0, "gguf-q5_k_m": 99.6, "gguf-q8_0": 99.9}
    ran: list[str] = []

    def run_step(step: Step, out: Path) -> list[dict[str, Any]]:
        ran.append(step.format)
        return [BASE, _row(step.format, f"k-{step.format}", recovery[step.format])]

    steps = chain("gguf-q4_k_m", None, [])
    done = walk(steps, 99.0, tmp_path, run_step)
    assert ran == ["gguf-q4_k_m", "gguf-q5_k_m"]  # 8-bit never ran: Q5_K_M passed
    assert done.answer == "gguf-q5_k_m"
    assert [o.verdict for o in done.outcomes] == ["worse", "equivalent"]
    assert done.outcomes[1].rows == ("gguf-q5_k_m/llamacpp/kv-auto @ k-gguf-q5_k_m", "bf16/transformers/kv-auto @ base")
    assert "answer: ship gguf-q5_k_m (step 2: the next candidate)" in done.lines()[-1]


def test_no_step_passes_the_answer_is_the_baseline_and_failed_cells_say_why(tmp_path: Path) -> None:
    def run_step(step: Step, out: Path) -> list[dict[str, Any]]:
        if step.format == "gguf-q5_k_m":
            return [BASE, _row(step.format, "k5", None, "failed", "quantize: llama-quantize exited 1")]
        return [BASE, _row(step.format, f"k-{step.format}", 90.0)]

    done = walk(chain("gguf-q4_k_m", None, []), 99.0, tmp_path, run_step)
    assert done.answer == "bf16"
    assert [o.verdict for o in done.outcomes] == ["worse", "failed", "worse"]
    assert done.outcomes[1].detail == "quantize: llama-quantize exited 1"
    assert "no quantized format passes the 99 % floor: ship bf16" in done.lines()[-1]


def test_a_step_that_fits_nowhere_is_recorded_in_its_place_and_not_run(tmp_path: Path) -> None:
    ran: list[str] = []

    def run_step(step: Step, out: Path) -> list[dict[str, Any]]:
        ran.append(step.format)
        return [BASE, _row(step.format, "k", 99.9)]

    steps = [Step("a", "the picker's answer"), Step("b", "8-bit")]
    done = walk(steps, 97.0, tmp_path, run_step, place=lambda s: None if s.format == "a" else s)
    assert ran == ["b"] and [o.verdict for o in done.outcomes] == ["does not fit", "equivalent"]
