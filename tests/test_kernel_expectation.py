"""The kernel assertion (issue 12): each format declares, per device, the kernels it is made to
run on; a cell whose engine log shows a fallback gets kernel_expected = false, the report flags
it and `harness gate` can fail on it. The recorded kernel lines are real ones (the CPU tables
in tests/data/report; llama.cpp's loader lines of SmolLM2's Q4_K_M)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness import formats, gate
from harness.config import load_config
from harness.hardware import Hardware
from harness.report.rows import kernel_cell
from harness.stages.bench import kernel_columns
from tests.test_gate import QUALITY, config, real_rows, write_run

DATA = Path(__file__).parent / "data" / "report"
CPU = Hardware("cpu", "AMD EPYC", 2, 24 * 2**30, None, None, ("avx512f",))
H100 = Hardware("cuda", "NVIDIA H100 80GB HBM3", 1, 80 * 2**30, "9.0", "555", ())
B200 = Hardware("cuda", "NVIDIA B200", 1, 180 * 2**30, "10.0", "575", ())


def _expected(name: str, hw: Hardware, engine: str = "vllm", **params: object) -> tuple[str, ...]:
    fmt = formats.get(name)
    return fmt.expected_kernels(fmt.params_model(name=name, **params), engine, hw)


def test_what_vllm_cpu_ran_is_what_the_formats_expect_there() -> None:
    rows = pd.read_parquet(DATA / "formats-cpu.parquet")
    judged = 0
    for _, row in rows[(rows.engine == "vllm") & (rows.status == "ok")].iterrows():
        verdict = kernel_columns(_expected(row.format, CPU), str(row.kernels).split("; ") if row.kernels else [])
        if row.format == "bf16":
            assert verdict["kernel_expected"] is None  # the baseline has no quantized kernel
        else:
            assert verdict["kernel_expected"] is True, (row.cell_name, row.kernels)
            judged += 1
    assert judged >= 8  # fp8-dynamic, GPTQ, AWQ and INT8 cells


@pytest.mark.parametrize(
    ("name", "line", "ok"),
    [
        ("w4a16-gptq", "MacheteLinearKernel for CompressedTensorsWNA16", True),
        ("w4a16-awq", "MarlinLinearKernel for CompressedTensorsWNA16", True),
        ("w4a16-gptq", "ExllamaLinearKernel for CompressedTensorsWNA16", False),  # the slow fallback
        ("fp8-dynamic", "CutlassFP8ScaledMMLinearKernel for CompressedTensorsW8A8Fp8", True),
        ("fp8-dynamic", "MarlinFP8ScaledMMLinearKernel for CompressedTensorsW8A8Fp8", False),  # weight-only FP8
        ("w8a8-int8", "TritonInt8ScaledMMLinearKernel for CompressedTensorsW8A8Int8", False),
    ],
)
def test_gpu_expectations(name: str, line: str, ok: bool) -> None:
    assert kernel_columns(_expected(name, H100), [line])["kernel_expected"] is ok


def test_fp4_expects_fp4_tensor_cores_on_blackwell_and_marlin_weight_only_before() -> None:
    assert "CutlassNvFp4LinearKernel" in _expected("nvfp4", B200)
    before = _expected("nvfp4", H100, weight_only_fallback=True)
    assert "MarlinNvFp4LinearKernel" in before and "CutlassNvFp4LinearKernel" not in before
    assert _expected("nvfp4a16", H100) == before
    assert _expected("nvfp4", CPU) == ()  # no FP4 kernel on a CPU: the cell is unsupported instead


def test_a_gguf_type_must_be_mostly_its_own_tensor_type() -> None:
    """SmolLM2's rows (576) are not a multiple of 256: llama.cpp loaded most Q4_K_M tensors as q5_0."""
    smollm2 = ["ggml f32 x61", "ggml q5_0 x166", "ggml q8_0 x15", "ggml q4_K x16", "ggml q6_K x14"]
    assert kernel_columns(_expected("gguf-q4_k_m", CPU, "llamacpp"), smollm2)["kernel_expected"] is False
    seven_b = ["ggml f32 x65", "ggml q4_K x193", "ggml q6_K x33"]
    assert kernel_columns(_expected("gguf-q4_k_m", CPU, "llamacpp"), seven_b)["kernel_expected"] is True
    q8 = kernel_columns(_expected("gguf-q8_0", CPU, "llamacpp"), ["ggml f32 x61", "ggml q8_0 x211"])
    assert q8 == {"kernel_expected": True, "kernels_expected": "ggml q8_0"}
    assert _expected("gguf-bf16", CPU, "llamacpp") == ("ggml bf16",)


def test_the_report_flags_and_the_gate_notes_or_fails_an_unexpected_kernel(tmp_path: Path) -> None:
    rows = real_rows(QUALITY)
    for row in rows:
        if row["cell_name"] == "fp8-dynamic/vllm/kv-auto":
            row.update(
                kernels="MarlinFP8ScaledMMLinearKernel for CompressedTensorsW8A8Fp8",
                kernel_expected=False,
                kernels_expected="CutlassFP8ScaledMMLinearKernel; FlashInferFP8ScaledMMLinearKernel",
            )
            assert "[UNEXPECTED: made for CutlassFP8ScaledMMLinearKernel or" in kernel_cell(row)
    run = write_run(tmp_path / "run", rows)
    verdict = gate.evaluate(run, [load_config(config(tmp_path, "{recovery_floor_pct: 80}"))])
    assert verdict.passed and any("ran on MarlinFP8ScaledMMLinearKernel" in note for note in verdict.notes)
    strict = load_config(config(tmp_path, "{recovery_floor_pct: 80, unexpected_kernel: fail}"))
    (failure,) = gate.evaluate(run, [strict]).failures
    assert failure.check == "kernel" and failure.cell_name == "fp8-dynamic/vllm/kv-auto"
