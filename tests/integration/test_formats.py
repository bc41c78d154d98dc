"""Issue 3's formats for real on SmolLM2: AWQ, NVFP4 weight-only and a GGUF K-quant, through
vLLM, the transformers reference engine and llama.cpp."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import assert_w4a16_verdict, run_cli

pytestmark = pytest.mark.integration

CONFIG = """
name: it-formats
model: {source: builtin:smollm2-135m}
formats:
  - bf16
  - {name: w4a16-awq, group_size: 64}
  - nvfp4a16
  - gguf-q4_k_m
calibration:
  - {name: code, source: builtin:code, samples: 8, seq_len: 128}
workload: {prompts: 2, input_len: 16, output_len: 8}
engine:
  - {name: vllm, max_model_len: 64, timeout_s: 600}
  - {name: transformers, batch_size: 2, timeout_s: 600}
  - {name: llamacpp, max_model_len: 64, timeout_s: 600}
serving: {formats: [bf16, gguf-q4_k_m], concurrency: [1, 2], requests: 4}
"""


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> pd.DataFrame:
    work = tmp_path_factory.mktemp("formats")
    (work / "formats.yaml").write_text(CONFIG)
    done = run_cli("run", str(work / "formats.yaml"), "--output", str(work / "out"), timeout=3000)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(work / "out" / "results.parquet")
    return frame.set_index(frame["format_id"] + "/" + frame["engine"])


def test_every_cell_ends_ok_or_unsupported_with_a_reason(rows: pd.DataFrame) -> None:
    assert len(rows) == 3 * 2 + 1  # gguf only on llama.cpp; the rest on vLLM and transformers
    for name, row in rows.iterrows():
        assert row["status"] in ("ok", "unsupported"), f"{name}: {row['status']}: {row['reason']}"
        if row["status"] == "unsupported":
            assert row["reason"] and "Traceback" not in row["reason"]


def test_awq(rows: pd.DataFrame) -> None:
    row = rows.loc["w4a16-awq/transformers"]
    assert row["status"] == "ok" and row["output_tokens"] == 2 * 8
    assert row["engine_speed_class"] == "reference"
    assert "int4 group 64 asym" in row["scheme"]
    assert_w4a16_verdict(rows.loc["w4a16-awq/vllm"])


def test_nvfp4_weight_only(rows: pd.DataFrame) -> None:
    row = rows.loc["nvfp4a16/transformers"]
    assert row["status"] == "ok", row["reason"]
    assert "float4 tensor_group 16" in row["scheme"]
    config = json.loads((Path(row["artifact_path"]) / "config.json").read_text())
    assert config["quantization_config"]["format"] == "nvfp4-pack-quantized"
    vllm = rows.loc["nvfp4a16/vllm"]
    assert vllm["status"] in ("ok", "unsupported")
    if vllm["status"] == "unsupported":
        assert "kernel" in vllm["reason"].lower()


def test_gguf_k_quant_through_llama_cpp(rows: pd.DataFrame) -> None:
    row = rows.loc["gguf-q4_k_m/llamacpp"]
    assert row["status"] == "ok", row["reason"]
    assert row["output_tokens"] == 2 * 8 and row["output_tok_s"] > 0
    assert (Path(row["artifact_path"]) / "model.gguf").is_file()
    assert "q4_K" in row["kernels"]  # llama.cpp's own list of the tensor types it loaded
    assert row["bits_per_weight"] < rows.loc["bf16/vllm", "bits_per_weight"]
    # the offline figure is llama.cpp's own llama-bench on the artifact, with the cell's settings
    assert json.loads(row["engine_settings"])["offline_figure"].startswith("llama-bench -pg")


def test_gguf_served_by_llama_cpp_server_on_the_same_client(rows: pd.DataFrame) -> None:
    """The GGUF cell under the client load the vLLM cells get: llama.cpp's own llama-server,
    one slot per request in flight, decoding them together."""
    row = rows.loc["gguf-q4_k_m/llamacpp"]
    assert "llama-server --host 127.0.0.1" in row["serving_server"]
    assert "--parallel 2 --ctx-size 128" in row["serving_server"]  # two slots of the cell's 64
    points = list(row["serving"])
    assert [p["concurrency"] for p in points] == [1, 2]
    for p in points:
        assert p["completed"] == 4 and p["failed"] == 0, p["error"]
        assert p["output_tokens"] == 4 * 8  # ignore_eos: every stream runs to its length
        assert 0 < p["ttft_p50_ms"] <= p["ttft_p99_ms"] and 0 < p["itl_p50_ms"]
    # its greedy answers under load are llama.cpp's offline ones (both with flash attention off)
    assert row["output_check_ok"], row["output_check_note"]
    assert "--flash-attn off" in row["serving_server"]
    # continuous batching: two requests decode together (llama-cpp-python's server queued them)
    assert points[1]["output_tok_s"] > points[0]["output_tok_s"]
    assert row["engine_weights_bytes"] and row["engine_weights_bytes"] < row["artifact_bytes"]
    vllm = rows.loc["bf16/vllm"]
    assert [p["completed"] for p in vllm["serving"]] == [4, 4]
    reference = rows.loc["bf16/transformers"]
    assert reference["serving"] is None and "no server" in reference["serving_note"]
