"""The format picker: the seed's cases pinned (rules + the memory planner), the generated config
loads, and measured rows (tests/data/report/quality.parquet, a real run of this harness on
SmolLM2) override the rules where they disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import matrix
from harness.config import load_config
from harness.errors import HarnessError
from harness.picker import FLOORS, pick

QUALITY = Path(__file__).parent / "data" / "report" / "quality.parquet"


def _cells(rec, tmp_path: Path) -> list[str]:
    """The generated config is one harness.config.load_config accepts; its cells."""
    path = tmp_path / "picked.yaml"
    path.write_text(rec.config_yaml(), encoding="utf-8")
    return [cell.name for cell in matrix.expand(load_config(path))]


def test_70b_on_one_h100_at_128x2048_nothing_fits_and_it_says_so(tmp_path: Path) -> None:
    rec = pick("h100-80gb", "llama-3.1-70b", "chat", "balanced", concurrency=128, context=2048)
    # the best on one H100: 4-bit AWQ with an FP8 KV cache, 80.72 GiB against 71.68 (docs/memory.md)
    assert (rec.format, rec.engine, rec.kv_cache_dtype) == ("w4a16-awq", "vllm", "fp8")
    assert rec.fits is False and rec.max_batch == 99
    text = "\n".join(rec.reasons)
    assert "nothing fits one h100-80gb at 128 x 2048" in text
    assert "80.72 GiB against 71.68 GiB" in text and "at most 99 concurrent" in text
    assert "option: tensor_parallel 2 (2 x h100-80gb)" in text and "option: one h200" in text
    assert "veto w4a16-awq" in text and "veto w4a16-gptq" in text  # both KV dtypes tried before the veto
    assert _cells(rec, tmp_path) == ["bf16/vllm/kv-fp8", "w4a16-awq/chat/vllm/kv-fp8"]
    assert "The bf16 baseline does not fit one h100-80gb" in rec.config_yaml()


def test_70b_strict_on_one_h100_stays_8_bit_and_names_the_gpus_it_needs() -> None:
    rec = pick("h100-80gb", "70b", "reasoning", "strict")
    assert (rec.model, rec.format, rec.kv_cache_dtype, rec.fits, rec.max_batch) == (
        "llama-3.1-70b",
        "fp8-dynamic",
        "fp8",
        False,
        1,
    )
    text = "\n".join(rec.reasons)
    assert "4-bit formats are not considered under the strict floor" in text
    assert "option: tensor_parallel 2" in text and "bf16 (unquantized) needs: tensor_parallel 4" in text


@pytest.mark.parametrize(
    ("tolerance", "fmt", "cells"),
    [
        ("balanced", "w4a16-awq", ["bf16/vllm/kv-auto", "w4a16-awq/code/vllm/kv-auto"]),
        ("strict", "fp8-dynamic", ["bf16/vllm/kv-auto", "fp8-dynamic/vllm/kv-auto"]),
    ],
)
def test_7b_coding_model_on_an_h100(tmp_path: Path, tolerance: str, fmt: str, cells: list[str]) -> None:
    rec = pick("h100-80gb", "7b", "code", tolerance)
    assert (rec.model, rec.model_source) == ("qwen2.5-coder-7b", "Qwen/Qwen2.5-Coder-7B-Instruct")
    assert (rec.format, rec.engine, rec.kv_cache_dtype, rec.fits) == (fmt, "vllm", "auto", True)
    gates = {g.task: g.floor_pct for g in rec.plan.evals}
    assert gates["humaneval"] == gates["perplexity"] == FLOORS[tolerance]
    if fmt == "w4a16-awq":  # calibrated in-domain
        assert rec.plan.calibration is not None and rec.plan.calibration.source == "builtin:code"
        assert (rec.plan.calibration.samples, rec.plan.calibration.seq_len) == (512, 2048)
        assert rec.format_entry == {"name": "w4a16-awq", "group_size": 128}
    else:
        assert rec.plan.calibration is None
    assert _cells(rec, tmp_path) == cells
    assert "allow_code_execution: true" in rec.config_yaml()


def test_reasoning_with_strict_quality_is_fp8(tmp_path: Path) -> None:
    rec = pick("h100-80gb", "llama-3.1-8b", "reasoning", "strict")
    assert (rec.format, rec.engine, rec.kv_cache_dtype, rec.fits) == ("fp8-dynamic", "vllm", "auto", True)
    assert {g.task: g.floor_pct for g in rec.plan.evals} == {
        "math500": 99.0,
        "gsm8k": 99.0,
        "perplexity": 99.0,
        "kld": None,
    }
    assert _cells(rec, tmp_path) == ["bf16/vllm/kv-auto", "fp8-dynamic/vllm/kv-auto"]


def test_an_ampere_gpu_without_fp8_gets_int8_for_strict() -> None:
    assert pick("a100-80gb", "llama-3.1-8b", "math", "strict").format == "w8a8-int8"


@pytest.mark.parametrize(
    ("tolerance", "fmt"), [("balanced", "gguf-q4_k_m"), ("aggressive", "gguf-q4_k_m"), ("strict", "gguf-q5_k_m")]
)
def test_a_laptop_gets_gguf_via_llamacpp(tmp_path: Path, tolerance: str, fmt: str) -> None:
    rec = pick("cpu", "llama-3.1-8b", "chat", tolerance)
    assert (rec.format, rec.engine, rec.kv_cache_dtype, rec.fits, rec.memory) == (fmt, "llamacpp", "auto", None, None)
    assert any("GGUF via llama.cpp" in r for r in rec.reasons)
    assert any("4.58 GiB" in r for r in rec.reasons) or fmt != "gguf-q4_k_m"  # llama.cpp's Q4_K_M of Llama-3.1-8B
    # the reference is llama.cpp's own BF16 GGUF: a GGUF cell is judged against its engine's baseline
    # (a bf16 cell on another engine left it with no recovery figure: no verdict, nothing to validate)
    assert _cells(rec, tmp_path) == ["gguf-bf16/llamacpp/kv-auto", f"{fmt}/llamacpp/kv-auto"]


def test_multi_lora_is_gptq(tmp_path: Path) -> None:
    rec = pick("h100-80gb", "llama-3.1-8b", "chat", "balanced", multi_lora=True)
    assert (rec.format, rec.engine, rec.fits) == ("w4a16-gptq", "vllm", True)
    assert any("multi-LoRA" in r for r in rec.reasons)
    assert _cells(rec, tmp_path) == ["bf16/vllm/kv-auto", "w4a16-gptq/chat/vllm/kv-auto"]


def test_b200_aggressive_is_nvfp4_with_per_block_validation(tmp_path: Path) -> None:
    rec = pick("b200", "llama-3.1-70b", "chat", "aggressive")
    assert (rec.format, rec.engine, rec.kv_cache_dtype, rec.fits) == ("nvfp4", "vllm", "auto", True)
    assert any("per-block" in n for n in rec.plan.notes)
    assert rec.plan.calibration is not None  # NVFP4's global activation scales need data
    assert _cells(rec, tmp_path) == ["bf16/vllm/kv-auto", "nvfp4/chat/vllm/kv-auto"]


def test_long_context_tries_an_fp8_kv_cache_first() -> None:
    rec = pick("h100-80gb", "llama-3.1-8b", "long-context", "balanced")
    assert (rec.format, rec.kv_cache_dtype) == ("w4a16-awq", "fp8")


def test_measured_rows_override_the_rules() -> None:
    # SmolLM2 on this CPU: the rules say GGUF Q4_K_M; measured, Q8_0 via llama.cpp recovered
    # 93.4 % of bf16's perplexity (below the aggressive floor of 94) and bf16 on vLLM is the
    # fastest serving cell left
    rec = pick("cpu", "smollm2-135m", "chat", "aggressive", results=QUALITY)
    assert (rec.format, rec.engine, rec.kv_cache_dtype) == ("bf16", "vllm", "auto")
    assert rec.decided_by_rows == ["bf16/vllm/kv-auto"]
    text = "\n".join(rec.reasons)
    assert "gguf-q8_0/llamacpp/kv-auto does not pass the 94 % floor: ppl recovery 93.4 %" in text
    assert "measured rows override the rules: gguf-q4_k_m/llamacpp/kv-auto → bf16/vllm/kv-auto" in text
    assert "bf16/transformers" not in text  # a reference engine never wins on speed
    balanced = pick("cpu", "smollm2-135m", "chat", "balanced", results=QUALITY)
    assert "fp8-dynamic/vllm/kv-auto does not pass the 97 % floor: ppl recovery 94.9 %" in "\n".join(balanced.reasons)


def test_rows_of_other_hardware_or_models_leave_the_rules_standing() -> None:
    gpu = pick("h100-80gb", "smollm2-135m", "chat", "balanced", results=QUALITY)
    assert gpu.format == "w4a16-awq" and gpu.decided_by_rows == []
    assert any("measured on other hardware" in r for r in gpu.reasons)
    other = pick("cpu", "llama-3.1-8b", "chat", "balanced", results=QUALITY)
    assert other.format == "gguf-q4_k_m" and any("no row measures llama-3.1-8b" in r for r in other.reasons)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(hardware="tpu-v5"), "unknown hardware 'tpu-v5'"),
        (dict(workload="poetry"), "unknown workload 'poetry'"),
        (dict(tolerance="loose"), "unknown tolerance 'loose'"),
        (dict(model="gpt-5"), "unknown model 'gpt-5'"),
        (dict(results=Path("/nonexistent/results.parquet")), "no such results file"),
    ],
)
def test_bad_input_is_a_harness_error(kwargs: dict, words: str) -> None:
    args = dict(hardware="h100-80gb", model="7b", workload="chat", tolerance="balanced") | kwargs
    with pytest.raises(HarnessError, match=words):
        pick(**args)


def test_cli_pick_prints_the_reasons_and_writes_the_config(tmp_path: Path, cli) -> None:
    config = tmp_path / "pick.yaml"
    done = cli(
        "pick",
        "--hardware",
        "h100-80gb",
        "--model",
        "llama-3.1-70b",
        "--workload",
        "chat",
        "--tolerance",
        "balanced",
        "--concurrency",
        "128",
        "--context",
        "2048",
        "--write-config",
        str(config),
        env={"COLUMNS": "400"},
    )
    assert done.returncode == 0, done.stderr
    assert "w4a16-awq" in done.stdout and "nothing fits one h100-80gb at 128 x 2048" in done.stdout
    assert [c.name for c in matrix.expand(load_config(config))] == ["bf16/vllm/kv-fp8", "w4a16-awq/chat/vllm/kv-fp8"]


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--hardware", "tpu-v5", "unknown hardware"),
        ("--workload", "poetry", "unknown workload"),
        ("--tolerance", "loose", "unknown tolerance"),
        ("--results", "/nonexistent/results.parquet", "no such results file"),
    ],
)
def test_cli_pick_bad_input_is_one_line_exit_2(cli, option: str, value: str, words: str) -> None:
    args = {"--hardware": "cpu", "--model": "7b", "--workload": "chat", "--tolerance": "balanced"} | {option: value}
    done = cli("pick", *[part for pair in args.items() for part in pair])
    assert done.returncode == 2, done.stdout
    assert done.stderr.strip().count("\n") == 0 and words in done.stderr and "Traceback" not in done.stderr
