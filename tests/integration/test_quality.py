"""Quality for real on SmolLM2: lm-eval tasks over packaged data, perplexity, KLD against the
baseline, recovery; and the harness's figures equal lm-eval's when run directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.stages import models
from harness.stages.evaluate import lm_eval as evals
from tests.conftest import ROOT, run_cli

# the nightly CPU tier (scripts/nightly-cpu): too long for every CI run on a 2-core AVX2 host
# (docs/production.md, "CI time and what each tier proves")
pytestmark = [pytest.mark.integration, pytest.mark.nightly]

CONFIG = """
name: it-quality
model: {source: builtin:smollm2-135m}
formats: [bf16, fp8-dynamic, gguf-bf16, gguf-q8_0]
workload: {prompts: 2, input_len: 16, output_len: 8}
engine:
  - {name: vllm, max_model_len: 64}
  - {name: transformers, batch_size: 4}
  - {name: llamacpp, max_model_len: 64}
evals:
  tasks: [humaneval, math500, perplexity]
  limit: 3
  max_gen_toks: 48  # SmolLM2 scores ~0 on both; the pipeline, not the score, is under test
  allow_code_execution: true
  kld: {windows: 2, seq_len: 128, top_k: 16}
"""


@pytest.fixture(scope="module")
def quality(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> dict:
    work = tmp_path_factory.mktemp("quality")
    (work / "q.yaml").write_text(CONFIG)
    done = run_cli("run", str(work / "q.yaml"), "--output", str(work / "out"), timeout=3000)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_parquet(work / "out" / "results.parquet")
    return {"rows": frame.set_index("cell_name"), "work": work}


def test_every_cell_has_quality_figures(quality: dict) -> None:
    rows = quality["rows"]
    assert len(rows) == 6  # bf16 and fp8 on vLLM and transformers; BF16 and Q8_0 on llama.cpp
    for name, row in rows.iterrows():
        assert row["status"] == "ok", f"{name}: {row['reason']}"
        assert pd.isna(row["eval_note"]), f"{name}: {row['eval_note']}"
        assert 0.0 <= row["pass_at_1"] <= 1.0 and 0.0 <= row["math_exact_match"] <= 1.0
        assert 5 < row["perplexity"] < 500, name
        assert json.loads(row["eval_samples"]) == {"harness_humaneval": 3, "harness_math500": 3, "harness_prose_ppl": 3}
        assert row["kld_positions"] == 2 * 127
        assert json.loads(row["eval_settings"])["temperature"] == 0.0
        loads = json.loads(row["engine_loads"])  # the model loaded twice: offline throughput, then lm-eval
        assert set(loads) == {"offline", "evaluate"} and all(s > 0 for s in loads.values()), name


def test_kld_and_recovery_against_the_baseline(quality: dict) -> None:
    rows = quality["rows"]
    base = rows.loc["bf16/vllm/kv-auto"]
    assert base["kld_mean"] == pytest.approx(0.0, abs=1e-9) and base["top1_agreement"] == 1.0
    assert base["perplexity_recovery_pct"] == pytest.approx(100.0)
    for name in ("fp8-dynamic/vllm/kv-auto", "fp8-dynamic/transformers/kv-auto", "gguf-q8_0/llamacpp/kv-auto"):
        row = rows.loc[name]
        assert 0.0 < row["kld_mean"] < 0.5, name  # quantized: some divergence, not noise
        assert 0.7 < row["top1_agreement"] < 1.0, name
        assert 80 < row["perplexity_recovery_pct"] < 120, name
    # the same engine's baseline is the reference: llama.cpp's is its BF16 GGUF (as llama.cpp's own KLD)
    assert rows.loc["fp8-dynamic/transformers/kv-auto", "kld_reference"] == "bf16/transformers/kv-auto"
    gguf_base = rows.loc["gguf-bf16/llamacpp/kv-auto"]
    assert rows.loc["gguf-q8_0/llamacpp/kv-auto", "reference_cell_key"] == gguf_base["cell_key"]
    # exact where both cells kept the whole distribution, a labelled estimate on vLLM (top 16)
    assert rows.loc["fp8-dynamic/transformers/kv-auto", "kld_method"] == "exact"
    assert rows.loc["gguf-q8_0/llamacpp/kv-auto", "kld_method"] == "exact"
    assert rows.loc["fp8-dynamic/vllm/kv-auto", "kld_method"] == "top-16 estimate"


def test_a_bf16_gguf_scores_the_bf16_vllm_perplexity(quality: dict) -> None:
    """The same protocol on every engine (BOS prefix, lm-eval's rolling windows): the same weights
    in llama.cpp score vLLM's perplexity within 0.5 % (EOS and fresh windows gave 6.5 % more)."""
    rows = quality["rows"]
    vllm, gguf = rows.loc["bf16/vllm/kv-auto", "perplexity"], rows.loc["gguf-bf16/llamacpp/kv-auto", "perplexity"]
    assert gguf == pytest.approx(vllm, rel=0.005)


def test_exact_kld_equals_a_full_vocabulary_numpy_computation(quality: dict) -> None:
    from scipy.special import rel_entr

    from harness.results.logprobs import full_relative

    out = quality["work"] / "out"
    rows = quality["rows"]
    for name, reference in (
        ("fp8-dynamic/transformers/kv-auto", "bf16/transformers/kv-auto"),
        ("gguf-q8_0/llamacpp/kv-auto", "gguf-bf16/llamacpp/kv-auto"),
    ):
        cell = np.load(out / full_relative(rows.loc[name, "kld_logprobs"])).astype(np.float64)
        base = np.load(out / full_relative(rows.loc[reference, "kld_logprobs"])).astype(np.float64)
        assert cell.shape == base.shape and cell.shape[1] >= 49152, name  # the whole vocabulary
        per_position = rel_entr(np.exp(base), np.exp(cell)).sum(axis=1)
        assert rows.loc[name, "kld_mean"] == pytest.approx(float(per_position.mean()), abs=1e-6), name


def test_every_quantized_cell_has_intervals(quality: dict) -> None:
    for name, row in quality["rows"].iterrows():
        if row["format"] in ("bf16", "gguf-bf16"):
            continue
        stats = json.loads(row["paired_stats"])
        low, high = stats["perplexity"]["recovery_ci95"]
        assert low <= row["perplexity_recovery_pct"] <= high, name
        assert stats["perplexity"]["items"] == 3 and stats["pass_at_1"]["worse_flips"] is not None, name
        kld_low, kld_high = stats["kld"]["ci95"]["kld_mean"]
        assert kld_low <= row["kld_mean"] <= kld_high, name


def test_every_document_score_is_kept(quality: dict) -> None:
    """Per-item outcomes (for paired statistics): one score per document and metric."""
    for name, row in quality["rows"].iterrows():
        items = json.loads(row["eval_items"])
        assert len(items["pass_at_1"]) == 3 and len(items["math_exact_match"]) == 3, name
        assert sum(items["pass_at_1"].values()) / 3 == pytest.approx(row["pass_at_1"]), name


def test_harness_figures_equal_lm_eval_run_directly(quality: dict) -> None:
    row = quality["rows"].loc["bf16/transformers/kv-auto"]
    model_dir = models.resolve("builtin:smollm2-135m", None, models.default_cache_dir()).path
    include = evals.prepare_task_dir(models.default_cache_dir(), ["harness_humaneval", "harness_prose_ppl"], 48)
    out = quality["work"] / "direct"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={model_dir},dtype=bfloat16",
            "--tasks",
            "harness_humaneval,harness_prose_ppl",
            "--include_path",
            str(include),
            "--limit",
            "3",
            "--batch_size",
            "8",
            "--device",
            "cpu",
            "--confirm_run_unsafe_code",
            "--output_path",
            str(out),
            "--seed",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    assert report["harness_humaneval"]["pass_at_1,create_test"] == row["pass_at_1"]
    assert report["harness_prose_ppl"]["word_perplexity,none"] == pytest.approx(row["perplexity"], rel=1e-6)


def test_humaneval_is_skipped_with_a_reason_without_permission() -> None:
    from harness.config import EvalSpec
    from harness.stages.evaluate.stage import lm_eval_tasks

    tasks, note = lm_eval_tasks(EvalSpec(tasks=["humaneval", "perplexity"], allow_code_execution=False))
    assert tasks == ["harness_prose_ppl"]
    assert "allow_code_execution" in note
