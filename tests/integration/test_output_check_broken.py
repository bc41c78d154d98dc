"""The output check on a deliberately broken cell: llama.cpp's own llama-server told to favour one
token (`--logit-bias 17+100`, SmolLM2's "!") while the offline engine is not, so the server
answers "!!!!" under load as a broken quantized model does, while its throughput looks fine. The
cell must fail the check, say why, and not be recommended; the healthy cells are
tests/integration/test_smoke_run.py (vLLM) and test_formats.py (llama-server)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.results.decide import decide
from harness.results.read import load_results, records
from tests.conftest import run_cli

pytestmark = pytest.mark.integration

CONFIG = """
name: it-broken-server
model: {source: builtin:smollm2-135m}
formats: [gguf-q8_0]
workload: {prompts: 2, input_len: 32, output_len: 24}
engine: {name: llamacpp, max_model_len: 64, server_args: ["--logit-bias", "17+100"]}
serving: {concurrency: [1, 2], requests: 4}
"""


def test_a_server_that_answers_bangs_fails_its_output_check(tmp_path: Path, smollm2_dir: Path) -> None:
    (tmp_path / "broken.yaml").write_text(CONFIG)
    done = run_cli("run", str(tmp_path / "broken.yaml"), "--output", str(tmp_path / "out"), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    row = pd.read_parquet(tmp_path / "out" / "results.parquet").iloc[0]
    assert row["status"] == "ok", row["reason"]
    assert "--logit-bias 17+100" in row["serving_server"]
    points = list(row["serving"])
    assert all(p["completed"] == 4 and p["output_tok_s"] > 0 for p in points)  # the load figures look fine
    # every checked answer (the first 4 of each point) is "!!!!", where the offline engine's is not
    assert all(p["output_check"]["checked"] == 4 and p["output_check"]["degenerate"] == 4 for p in points), points
    assert all(p["output_check"]["exact"] == 0 for p in points)
    assert row["output_check_ok"] is not None and not row["output_check_ok"]
    assert row["output_check_note"].startswith("degenerate output under load"), row["output_check_note"]
    decision = decide(records(load_results(tmp_path / "out")))
    assert decision.choice is None
    assert any("failed its output check under load" in why for _, why in decision.lost)
