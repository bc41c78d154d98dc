"""The roofline formula, the GPU peak lookup and the CPU peak measurement cache."""

from __future__ import annotations

import dataclasses
import json

import pytest

from harness import hardware
from harness.errors import HarnessError
from harness.gpus import GPUS
from harness.hardware import Hardware, Peak
from harness.plan import roofline
from harness.shapes import ModelShape, load_shape


def tiny(tied: bool = False) -> ModelShape:
    return ModelShape.from_config(
        {
            "model_type": "llama",
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 100,
            "tie_word_embeddings": tied,
        },
        name="tiny",
    )


# By hand, for tiny(): head_dim 64 / 4 = 16, KV width 2 x 16 = 32.
LINEAR_PER_LAYER = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 128  # q, k, v, o, gate, up, down = 36,864
LINEAR = 2 * LINEAR_PER_LAYER  # 73,728
TABLE = 100 * 64  # embeddings, and the lm_head when untied
NORMS = (2 * 2 + 1) * 64
KV_PER_TOKEN = 2 * 2 * 2 * 16 * 2  # K and V x layers x KV heads x head_dim x 2 bytes = 256


def test_pieces_by_hand():
    shape = tiny()
    assert LINEAR_PER_LAYER == 36_864
    assert roofline.matmul_params(shape) == LINEAR + TABLE  # the lm_head is a matmul, the embedding a lookup
    # bf16 reads every weight but the input embedding table: 2 bytes x (linear + lm_head + norms)
    assert roofline.weight_bytes_per_step(shape, "bf16") == 2 * (LINEAR + TABLE + NORMS)
    # tied: the one table is the lm_head, read in full; same byte count here by construction
    assert roofline.weight_bytes_per_step(tiny(tied=True), "bf16") == 2 * (LINEAR + TABLE + NORMS)
    assert roofline.flops_per_token(shape, 100) == 2 * (LINEAR + TABLE) + 4 * 2 * 64 * 100
    assert roofline.mean_decode_context(96, 8) == 100


def test_formula_memory_and_compute_bound():
    shape = tiny()
    w = 2 * (LINEAR + TABLE + NORMS)  # 160,896 bytes
    flops = 2 * (LINEAR + TABLE) + 4 * 2 * 64 * 100  # 211,456 per token at L = 100
    args = dict(
        batch=4,
        context=100,
        weight_bytes=w,
        kv_bytes_per_token=KV_PER_TOKEN,
        matmul_params=LINEAR + TABLE,
        layers=2,
        attention_width=64,
    )

    fast_flops = roofline.roofline_tok_s(**args, peak=Peak(1e9, 1e12, "test"))
    memory_bound = 4 * 1e9 / (w + 4 * 100 * KV_PER_TOKEN)  # 4e9 / 263,296 = 15,192 tok/s
    assert fast_flops.memory_tok_s == pytest.approx(memory_bound)
    assert fast_flops.compute_tok_s == pytest.approx(1e12 / flops)
    assert fast_flops.bound == "memory" and fast_flops.tok_s == pytest.approx(memory_bound)
    assert fast_flops.fraction(memory_bound / 2) == pytest.approx(0.5)

    slow_flops = roofline.roofline_tok_s(**args, peak=Peak(1e9, 1e9, "test"))
    assert slow_flops.bound == "compute" and slow_flops.tok_s == pytest.approx(1e9 / flops)  # 4,729 tok/s

    cell = roofline.cell_roofline(shape, "bf16", "auto", 4, 96, 8, Peak(1e9, 1e12, "test"))
    assert dataclasses.replace(cell, end_to_end_tok_s=None) == fast_flops  # decode: the formula above
    # with prefill: 4 prompts of 96 tokens (at most one read of the weights, or their FLOPs), then 7 decode steps
    prefill = max(w / 1e9, 4 * 96 * (2 * (LINEAR + TABLE) + 2 * 2 * 64 * 96) / 1e12)
    assert cell.end_to_end_tok_s == pytest.approx(4 * 8 / (prefill + 7 * 4 / memory_bound))
    assert cell.fraction(cell.end_to_end_tok_s) == pytest.approx(1.0)
    row = cell.as_row()
    assert row["roofline_bound"] == "memory" and row["roofline_source"] == "test"
    assert row["roofline_tok_s"] == cell.end_to_end_tok_s and row["roofline_decode_tok_s"] == cell.tok_s


def test_cell_roofline_kv_dtype_and_gguf():
    shape = tiny()
    peak = Peak(1e9, 1e12, "test")
    fp8 = roofline.cell_roofline(shape, "bf16", "fp8", 4, 96, 8, peak)
    assert fp8.kv_bytes_per_token == KV_PER_TOKEN // 2
    # Q8_0: 34 bytes per 32 weights for every Linear and the output matrix; norms in F32;
    # the (untied) token_embd table is not read per step.
    q8 = roofline.cell_roofline(shape, "gguf-q8_0", "auto", 4, 96, 8, peak)
    assert q8.weight_bytes == LINEAR // 32 * 34 + TABLE // 32 * 34 + NORMS * 4
    with pytest.raises(HarnessError):
        roofline.cell_roofline(shape, "bf16", "int3", 4, 96, 8, peak)


def test_llama_70b_on_h100_worked_example():
    """docs/memory.md's Roofline example, from the figures of its memory worked example."""
    peak = hardware.peak_for(Hardware("cuda", "NVIDIA H100 80GB HBM3", 1, 0, "9.0", None, ()), None)
    r = roofline.cell_roofline(load_shape("llama-3.1-70b"), "bf16", "auto", 128, 1024, 2048, peak)
    assert r.context == 2048
    w = 141_107_412_992 - 2 * 1_050_673_152  # all bf16 weights less the input embedding table
    assert r.weight_bytes == w == 139_006_066_688
    assert r.kv_bytes_per_token == 327_680
    assert r.memory_tok_s == pytest.approx(128 * 3.35e12 / (w + 128 * 2048 * 327_680))
    assert round(r.memory_tok_s, 1) == 1906.6
    n = 68_451_041_280 + 1_050_673_152
    assert r.flops_per_token == 2 * n + 4 * 80 * 8192 * 2048 == 144_372_137_984
    assert round(r.compute_tok_s, 1) == 6853.8
    assert r.bound == "memory"
    two = roofline.cell_roofline(load_shape("llama-3.1-70b"), "bf16", "auto", 128, 1024, 2048, peak.times(2))
    assert two.tok_s == pytest.approx(2 * r.tok_s)


def test_the_compute_peak_is_the_formats_own():
    """FP8 and INT8 matmuls run at twice BF16's rate on Hopper, FP4 only has a faster peak on
    Blackwell; a weight-only format computes in BF16; a CPU has only its measured peak."""
    h100 = hardware.peak_for(Hardware("cuda", "NVIDIA H100 80GB HBM3", 1, 0, "9.0", None, ()), None)
    shape = load_shape("llama-3.1-8b")
    bf16 = roofline.cell_roofline(shape, "bf16", "auto", 256, 1024, 128, h100)
    fp8 = roofline.cell_roofline(shape, "fp8-dynamic", "auto", 256, 1024, 128, h100)
    int8 = roofline.cell_roofline(shape, "w8a8-int8", "auto", 256, 1024, 128, h100)
    w4 = roofline.cell_roofline(shape, "w4a16-gptq", "auto", 256, 1024, 128, h100)
    assert (fp8.compute_precision, int8.compute_precision, w4.compute_precision) == ("fp8", "int8", "bf16")
    assert fp8.compute_tok_s / bf16.compute_tok_s == pytest.approx(1979e12 / 989.5e12, rel=0.01)
    assert int8.compute_flops == fp8.compute_flops and w4.compute_flops == bf16.compute_flops
    nvfp4 = roofline.cell_roofline(shape, "nvfp4", "auto", 256, 1024, 128, h100)
    assert nvfp4.compute_precision == "bf16"  # Hopper has no FP4 tensor cores
    cpu = roofline.cell_roofline(shape, "fp8-dynamic", "auto", 4, 64, 64, Peak(1e11, 1e12, "cpu"))
    assert cpu.compute_precision == "bf16" and cpu.compute_flops == 1e12


def test_a_perfect_engine_can_reach_the_ceiling_it_is_compared_with():
    """At 1,024 -> 128 on an H100 the decode-only ceiling counted prefill time against the engine:
    a perfect one scored at most about a third of it. With prefill in the ceiling, the time a
    perfect engine needs (prefill at the compute peak, decode at the bound) scores 1.0."""
    h100 = hardware.peak_for(Hardware("cuda", "NVIDIA H100 80GB HBM3", 1, 0, "9.0", None, ()), None)
    r = roofline.cell_roofline(load_shape("llama-3.1-8b"), "bf16", "auto", 64, 1024, 128, h100)
    assert r.end_to_end_tok_s is not None and r.end_to_end_tok_s < 0.7 * r.tok_s
    assert r.fraction(r.end_to_end_tok_s) == pytest.approx(1.0)


def test_gpu_peaks_from_the_datasheet_table():
    for gpu in GPUS.values():
        hw = Hardware("cuda", gpu.product, 8, gpu.visible_bytes, gpu.compute_capability, "550", ())
        peak = hardware.peak_for(hw, None)
        assert (peak.bandwidth_bytes_s, peak.flops) == (gpu.bandwidth_bytes_s, gpu.bf16_flops)  # per GPU, not x 8
        assert gpu.name in peak.source
    h100 = hardware.peak_for(Hardware("cuda", "NVIDIA H100 80GB HBM3", 1, 0, "9.0", None, ()), None)
    assert (h100.bandwidth_bytes_s, h100.flops) == (3.35e12, 989.5e12)
    with pytest.raises(HarnessError, match="no datasheet figures"):
        hardware.peak_for(Hardware("cuda", "NVIDIA Tesla T4", 1, 0, "7.5", None, ()), None)


def test_cpu_peak_is_measured_once_then_cached(tmp_path, monkeypatch):
    real = hardware.measure_cpu_peak
    calls = []

    def small(**_kwargs):
        calls.append(1)
        return real(budget_s=0.3, array_bytes=2**20, matmul_n=64)

    monkeypatch.setattr(hardware, "measure_cpu_peak", small)
    cpu = Hardware("cpu", "Test CPU @ 1 GHz", 2, 2**30, None, None, ())
    first = hardware.peak_for(cpu, tmp_path)
    assert len(calls) == 1
    assert first.bandwidth_bytes_s > 0 and first.flops > 0
    assert first.source.startswith("measured on this host (Test CPU @ 1 GHz, 2 cores")

    cache = hardware.cpu_peak_cache_file(cpu, tmp_path)
    saved = json.loads(cache.read_text())
    assert saved["cpu"] == "Test CPU @ 1 GHz" and saved["cores"] == 2
    assert saved["bandwidth_bytes_s"] == first.bandwidth_bytes_s

    again = hardware.peak_for(cpu, tmp_path)
    assert len(calls) == 1 and again == first  # read from the cache, not remeasured

    hardware.peak_for(Hardware("cpu", "Test CPU @ 1 GHz", 4, 2**30, None, None, ()), tmp_path)
    assert len(calls) == 2  # another core count: another key
    cache.write_text("not json")
    hardware.peak_for(cpu, tmp_path)
    assert len(calls) == 3  # an unreadable cache is measured again
    hardware.peak_for(cpu, tmp_path, remeasure=True)
    assert len(calls) == 4


def test_bf16_is_not_measured_where_the_cpu_emulates_it():
    """On a CPU without bf16 instructions a bf16 matmul runs at ~0.3 GFLOP/s: measuring it blew
    the probe's budget (173 s on an AVX2 host). It is skipped there, and the figures say why."""
    emulated = hardware.measure_cpu_peak(budget_s=0.3, array_bytes=2**20, matmul_n=64, bf16_native=False)
    assert set(emulated["flops_by_dtype"]) == {"float32"} and "no bf16 instructions" in emulated["flops_note"]
    native = hardware.measure_cpu_peak(budget_s=0.3, array_bytes=2**20, matmul_n=64, bf16_native=True)
    assert set(native["flops_by_dtype"]) == {"float32", "bfloat16"} and native["flops_note"] is None
    assert hardware.bf16_is_native(("avx2", "avx512_bf16")) and not hardware.bf16_is_native(("avx2", "avx512f"))


def test_a_cpus_compute_peak_is_labelled_with_the_dtype_measured(tmp_path):
    """Where bf16 is emulated the CPU's peak is float32's: the roofline row said "bf16"."""
    cpu = Hardware("cpu", "Test CPU @ 1 GHz", 2, 2**30, None, None, ())
    cache = hardware.cpu_peak_cache_file(cpu, tmp_path)
    cache.parent.mkdir(parents=True)
    for measured, label in (("float32", "fp32"), ("bfloat16", "bf16")):
        cache.write_text(json.dumps({"bandwidth_bytes_s": 1e10, "flops": 4e10, "flops_dtype": measured}))
        peak = hardware.peak_for(cpu, tmp_path)
        assert peak.flops_for("bf16") == (4e10, label) and peak.flops_for("int8") == (4e10, label)
        assert peak.times(2).flops_for("fp8") == (8e10, label)
    h100 = hardware.peak_for(Hardware("cuda", "NVIDIA H100 80GB HBM3", 1, 0, "9.0", None, ()), None)
    assert h100.flops_for("bf16")[1] == "bf16" and h100.flops_for("fp8")[1] == "fp8"


def test_the_matmul_is_sized_to_its_share_of_the_budget():
    import torch

    assert hardware._matmul_size(torch.float32, max_n=2048, seconds=1e-12) == 128
    assert hardware._matmul_size(torch.float32, max_n=2048, seconds=1e6) == 2048
    assert hardware._matmul_size(torch.float32, max_n=64, seconds=1e6) == 64


def test_a_simulated_smaller_cpu_hides_its_missing_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/avx2-host hides AVX-512 and AMX: the harness's rows, keys and bf16 decision must be
    the AVX2 CPU's, or a simulated run would reuse (and be compared with) the real CPU's cells."""
    monkeypatch.delenv("HARNESS_HIDE_CPU_FLAGS", raising=False)
    _, real = hardware._cpu_model_and_flags()
    monkeypatch.setenv("HARNESS_HIDE_CPU_FLAGS", "avx512,amx")
    _, hidden = hardware._cpu_model_and_flags()
    assert hidden == tuple(f for f in real if not f.startswith(("avx512", "amx")))
    assert not hardware.bf16_is_native(hidden)
