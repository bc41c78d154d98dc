"""The compare pass (harness.results.compare): every relative figure is derived after the cells,
from what each cell stored about itself, against a reference chosen by a rule.

Rows here are SYNTHETIC (made for the rule): a cell's own figures and its stored top
log-probabilities, written through the real store as a run's output directory would hold them.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from harness.results import compare
from harness.results import store as results
from harness.results.divergence import kl_divergence
from harness.results.logprobs import save_top as save_logprobs
from harness.results.read import load_results

SETTINGS = json.dumps({"greedy": True, "n": 1, "temperature": 0.0, "max_gen_toks": 96, "tasks": ["harness_prose_ppl"]})
T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


def logprobs(
    seed: int, positions: int = 40, vocab: int = 50, k: int = 8, noise: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a softmax over a fixed base distribution, shaken by `noise` (a quantized cell)."""
    base = np.random.default_rng(0).normal(size=(positions, vocab)) * 3
    logits = base + noise * np.random.default_rng(seed).normal(size=(positions, vocab))
    full = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    top = np.argsort(-full, axis=1)[:, :k]
    return top.astype(np.int64), np.take_along_axis(full, top, axis=1).astype(np.float32)


def row(key: str, fmt: str, kv: str = "auto", engine: str = "vllm", minutes: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "cell_key": key,
        "cell_name": f"{fmt}/{engine}/kv-{kv}",
        "config_name": "cfg",
        "run_id": "run",
        "model_identity": "builtin:smollm2-135m@abc",
        "format": fmt,
        "engine": engine,
        "kv_cache_dtype": kv,
        "status": "ok",
        "eval_settings": SETTINGS,
        "eval_limit": 4,
        "hostname": "host",
        "hw_name": "cpu",
        "hw_count": 2,
        "workload_prompts": 4,
        "workload_input_len": 32,
        "workload_output_len": 16,
        "workload_seed": 0,
        "started_at": T0 + timedelta(minutes=minutes),
        "finished_at": T0 + timedelta(minutes=minutes + 1),
        **extra,
    }


def write(out: Path, rows: list[dict[str, Any]], stored: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    for r in rows:
        if r["cell_key"] in stored:
            r["kld_logprobs"] = save_logprobs(out, r["cell_key"], *stored[r["cell_key"]])
        results.write_row(out, r)
    return pd.read_parquet(out / "results.parquet").set_index("cell_key")


KV_TRAP = [
    ("base", "bf16", "auto", 68.02, 0.0, 211.0),
    ("base-fp8kv", "bf16", "fp8", 71.19, 0.6, 205.0),
    ("fp8", "fp8-dynamic", "auto", 70.00, 0.5, 60.0),
    ("fp8-fp8kv", "fp8-dynamic", "fp8", 72.50, 0.8, 58.0),
]


def kv_trap_rows() -> tuple[list[dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    rows = [
        row(key, fmt, kv, perplexity=ppl, output_tok_s=speed, minutes=i)
        for i, (key, fmt, kv, ppl, _, speed) in enumerate(KV_TRAP)
    ]
    stored = {key: logprobs(i, noise=noise) for i, (key, _, _, _, noise, _) in enumerate(KV_TRAP)}
    return rows, stored


def test_each_kv_cache_dtype_is_compared_with_the_kv_auto_baseline(tmp_path: Path) -> None:
    """The KV-cache trap: bf16 with an FP8 KV cache is not its own reference (it showed KLD 0 and
    top-1 agreement 1.0 while its perplexity rose 68.0 → 71.2); every cell's reference is bf16 + KV auto."""
    rows, stored = kv_trap_rows()
    table = write(tmp_path, rows, stored)
    assert set(table["reference_cell_key"]) == {"base"}
    kv_only = table.loc["base-fp8kv"]
    assert kv_only["kld_mean"] > 0.01 and kv_only["top1_agreement"] < 1.0
    assert kv_only["perplexity_recovery_pct"] == pytest.approx(100 * 68.02 / 71.19)
    assert (
        table.loc["base", "kld_mean"] == pytest.approx(0.0, abs=1e-9)
        and table.loc["base", "perplexity_recovery_pct"] == 100
    )
    # FP8 weights with an FP8 KV cache diverge more than without: the two effects add up
    assert table.loc["fp8-fp8kv", "kld_mean"] > table.loc["fp8", "kld_mean"]
    assert "KV cache auto" in table.loc["fp8-fp8kv", "reference_rule"]


def test_kld_is_the_divergence_of_the_stored_log_probabilities(tmp_path: Path) -> None:
    rows, stored = kv_trap_rows()
    table = write(tmp_path, rows, stored)
    direct = kl_divergence(*stored["base"], *stored["fp8"])
    assert table.loc["fp8", "kld_mean"] == pytest.approx(direct.kld_mean)
    assert table.loc["fp8", "kld_p99"] == pytest.approx(direct.kld_p99)
    assert table.loc["fp8", "top1_agreement"] == pytest.approx(direct.top1_agreement)
    assert table.loc["fp8", "kld_positions"] == 40 and table.loc["fp8", "kld_reference"] == "bf16/vllm/kv-auto"


def test_the_order_cells_finish_in_changes_nothing(tmp_path: Path) -> None:
    """A baseline that finishes last (Ray, a concurrent or a resumed run) gives the same figures:
    before it exists the quantized rows say they have no reference; once it is written, they have it."""
    rows, stored = kv_trap_rows()
    first = write(tmp_path / "in-order", [dict(r) for r in rows], stored)
    quantized_first = [r for r in rows if r["format"] != "bf16"] + [r for r in rows if r["format"] == "bf16"]
    early = write(tmp_path / "baseline-last", [dict(r) for r in quantized_first[:2]], stored)
    assert early["reference_cell_key"].isna().all() and early["kld_mean"].isna().all()
    assert all(rule.startswith("no reference") for rule in early["reference_rule"])
    last = write(tmp_path / "baseline-last", [dict(r) for r in quantized_first[2:]], stored)
    columns = ["reference_cell_key", "kld_mean", "top1_agreement", "perplexity_recovery_pct", "speedup"]
    pd.testing.assert_frame_equal(first[columns].sort_index(), last[columns].sort_index())


def test_the_reference_must_share_the_eval_settings(tmp_path: Path) -> None:
    """A baseline evaluated on other settings is no reference (a re-keyed baseline with another
    limit gave a recovery of 181.8 % instead of 90.9 %)."""
    rows = [
        row("old-base", "bf16", perplexity=40.0, eval_limit=8, minutes=0),
        row("base", "bf16", perplexity=20.0, minutes=1),
        row("q", "fp8-dynamic", perplexity=22.0, minutes=2),
        row("q-other", "fp8-dynamic", perplexity=22.0, eval_settings=SETTINGS.replace("96", "128"), minutes=3),
    ]
    table = write(tmp_path, rows, {})
    assert table.loc["q", "reference_cell_key"] == "base"
    assert table.loc["q", "perplexity_recovery_pct"] == pytest.approx(100 * 20.0 / 22.0)
    assert pd.isna(table.loc["q-other", "reference_cell_key"])
    assert "same eval settings" in table.loc["q-other", "reference_rule"]


def test_a_gguf_cell_is_compared_with_the_declared_engine_not_the_first_alphabetically(tmp_path: Path) -> None:
    rows = [
        row("hf-base", "bf16", engine="transformers", perplexity=44.5, minutes=0),
        row("vllm-base", "bf16", engine="vllm", perplexity=45.1, minutes=1),
        row("q8", "gguf-q8_0", engine="llamacpp", perplexity=48.3, minutes=2),
    ]
    table = write(tmp_path, rows, {})
    assert table.loc["q8", "reference_cell_key"] == "vllm-base"
    assert "declared by llamacpp" in table.loc["q8", "reference_rule"]
    assert table.loc["hf-base", "reference_cell_key"] == "hf-base"  # the transformers engine has its own baseline


def test_speedup_is_over_the_same_engines_baseline_on_the_same_host_and_workload(tmp_path: Path) -> None:
    rows, stored = kv_trap_rows()
    rows.append(row("elsewhere", "fp8-dynamic", output_tok_s=100.0, hostname="other", minutes=9))
    table = write(tmp_path, rows, stored)
    assert table.loc["fp8", "speedup"] == pytest.approx(60.0 / 211.0)
    assert table.loc["base-fp8kv", "speed_reference_key"] == "base"
    assert pd.isna(table.loc["elsewhere", "speedup"])  # no baseline measured on that host


def test_cells_store_only_what_they_measured_themselves(tmp_path: Path) -> None:
    """The row files keep the cell's own figures; the relative ones live in the merged table."""
    rows, stored = kv_trap_rows()
    write(tmp_path, rows, stored)
    own = results.read_rows(tmp_path).set_index("cell_key")
    assert own[list(compare.QUALITY_COLUMNS + compare.SPEED_COLUMNS)].isna().all().all()
    assert own.loc["fp8", "perplexity"] == 70.0


def test_a_table_without_its_log_probabilities_keeps_only_kld_against_the_same_reference(tmp_path: Path) -> None:
    rows, stored = kv_trap_rows()
    write(tmp_path / "run", rows, stored)
    copied = tmp_path / "copy" / "results.parquet"
    copied.parent.mkdir()
    shutil.copy(tmp_path / "run" / "results.parquet", copied)
    table = load_results(copied).set_index("cell_key")
    assert table.loc["fp8", "kld_mean"] > 0  # computed against bf16/auto when the run merged; still that reference
    old = pd.read_parquet(copied)
    old.loc[old["cell_key"] == "fp8", "reference_cell_key"] = "base-fp8kv"  # an old table's wrong reference
    old.to_parquet(copied)
    assert pd.isna(load_results(copied).set_index("cell_key").loc["fp8", "kld_mean"])


def outcomes(right: int, wrong: int, offset: int = 0) -> dict[str, int]:
    """Per-document Pass@1 outcomes: `right` ones then `wrong` zeros, doc ids from `offset`."""
    return {str(offset + i): int(i < right) for i in range(right + wrong)}


def test_paired_statistics_are_computed_against_the_reference_over_shared_documents(tmp_path: Path) -> None:
    """Every recovered metric with per-document outcomes in both rows gets flips, McNemar's p and
    bootstrap intervals of the difference and of the recovery, stored in paired_stats."""
    base_items = outcomes(16, 4)
    cell_items = dict(base_items)
    for doc in ("0", "1", "2"):  # three right → wrong
        cell_items[doc] = 0
    cell_items["19"] = 1  # one wrong → right
    rows = [
        row("base", "bf16", pass_at_1=0.8, eval_items=json.dumps({"pass_at_1": base_items})),
        row("q", "w8a8-int8", pass_at_1=0.7, eval_items=json.dumps({"pass_at_1": cell_items}), minutes=1),
    ]
    table = write(tmp_path, rows, {})
    stats = json.loads(table.loc["q", "paired_stats"])["pass_at_1"]
    assert (stats["worse_flips"], stats["better_flips"], stats["items"]) == (3, 1, 20)
    assert stats["mcnemar_p"] == pytest.approx(0.625)  # 2 x P(X <= 1), X ~ Bin(4, 1/2)
    assert stats["recovery"] == pytest.approx(100 * 14 / 16)
    low, high = stats["recovery_ci95"]
    assert low < stats["recovery"] < high
    assert json.loads(table.loc["base", "paired_stats"])["pass_at_1"]["diff"] == 0


def test_kld_has_intervals_from_a_bootstrap_over_windows(tmp_path: Path) -> None:
    settings = json.dumps({**json.loads(SETTINGS), "kld": {"windows": 4, "seq_len": 10, "top_k": 8}})
    rows, stored = kv_trap_rows()
    for r in rows:
        r["eval_settings"] = settings
    table = write(tmp_path, rows, stored)
    kld = json.loads(table.loc["fp8", "paired_stats"])["kld"]
    assert kld["windows"] == 4
    for name in ("kld_mean", "kld_median", "kld_p99", "top1_agreement"):
        low, high = kld["ci95"][name]
        assert low <= table.loc["fp8", name] <= high, name
    assert table.loc["fp8", "kld_median"] == pytest.approx(kl_divergence(*stored["base"], *stored["fp8"]).kld_median)


def full_logprobs(seed: int, noise: float, positions: int = 40, vocab: int = 50) -> np.ndarray:
    base = np.random.default_rng(0).normal(size=(positions, vocab)) * 3
    logits = base + noise * np.random.default_rng(seed).normal(size=(positions, vocab))
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def test_kld_is_exact_where_both_cells_kept_the_whole_distribution(tmp_path: Path) -> None:
    """transformers and llama.cpp keep the whole distribution: the KLD is then computed over the
    full vocabulary; against a reference that kept only its top k, it is a labelled bound."""
    from scipy.special import rel_entr

    from harness.results.logprobs import full_relative, save_full

    full = {"base": full_logprobs(0, 0.0), "fp8": full_logprobs(1, 0.5)}
    rows = [row("base", "bf16", engine="transformers"), row("fp8", "fp8-dynamic", engine="transformers", minutes=1)]
    stored = {key: (np.argsort(-lp, axis=1)[:, :8], np.sort(lp, axis=1)[:, ::-1][:, :8]) for key, lp in full.items()}
    for key, lp in full.items():
        save_full(tmp_path / full_relative(f"logprobs/{key}.npz"), lp)
    table = write(tmp_path, rows, stored)
    expected = rel_entr(np.exp(full["base"].astype(np.float32)), np.exp(full["fp8"].astype(np.float32))).sum(axis=1)
    assert table.loc["fp8", "kld_method"] == "exact"
    assert table.loc["fp8", "kld_mean"] == pytest.approx(float(expected.mean()), abs=1e-6)
    (tmp_path / full_relative("logprobs/base.npz")).unlink()  # the reference kept only its top 8
    results.merge(tmp_path)
    bounded = pd.read_parquet(tmp_path / "results.parquet").set_index("cell_key").loc["fp8"]
    assert bounded["kld_method"] == "top-8 bound" and bounded["kld_mean"] <= float(expected.mean())


def test_a_gguf_cell_is_compared_with_llama_cpps_own_bf16_where_it_ran(tmp_path: Path) -> None:
    """As llama.cpp's own KL divergence (an F16 base): gguf-bf16 on llama.cpp first, vLLM's bf16 otherwise."""
    rows = [
        row("vllm-base", "bf16", engine="vllm", perplexity=45.1, minutes=0),
        row("gguf-base", "gguf-bf16", engine="llamacpp", perplexity=45.2, minutes=1),
        row("q8", "gguf-q8_0", engine="llamacpp", perplexity=48.3, minutes=2),
    ]
    table = write(tmp_path, rows, {})
    assert table.loc["q8", "reference_cell_key"] == "gguf-base"
    assert table.loc["q8", "reference_rule"].startswith("baseline gguf-bf16 on llamacpp,")
    assert table.loc["gguf-base", "reference_cell_key"] == "gguf-base"
    assert table.loc["vllm-base", "reference_cell_key"] == "vllm-base"
