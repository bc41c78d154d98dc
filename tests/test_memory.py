"""The memory plan: shapes, bits per weight, KV cache, and the Llama-3.1-70B / H100 case of
docs/memory.md, whose numbers are pinned here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import formats, gpus, shapes
from harness.errors import HarnessError
from harness.formats.layout import gguf_tensor_type
from harness.plan import memory

GIB = 2**30
WORKLOAD = dict(batch=128, context=2048, gpu="h100-80gb")


def gptq(group_size: int):
    return formats.get("w4a16-gptq").params_model(name="w4a16-gptq", group_size=group_size)


@pytest.mark.parametrize(
    ("name", "published"),
    [
        ("llama-3.1-70b", 70.6e9),
        ("llama-3.1-8b", 8.03e9),
        ("qwen2.5-7b", 7.6e9),
        ("qwen2.5-coder-7b", 7.6e9),
        ("smollm2-135m", 134.5e6),
    ],
)
def test_parameter_counts_match_the_published_sizes(name: str, published: float) -> None:
    assert shapes.load_shape(name).parameter_count == pytest.approx(published, rel=0.01)


def test_the_70b_count_by_hand() -> None:
    shape = shapes.load_shape("llama-3.1-70b")
    block = 8192 * 8192 * 2 + 8192 * 1024 * 2 + 8192 * 28672 * 3  # q, o; k, v; gate, up, down
    assert shape.linear_params == 80 * block == 68_451_041_280
    assert shape.parameter_count == 80 * block + 2 * 128256 * 8192 + (2 * 80 + 1) * 8192 == 70_553_706_496
    # tied embeddings (SmolLM2) are counted once; Qwen2's q/k/v biases are counted
    assert shapes.load_shape("smollm2-135m").lm_head_params == 0
    assert shapes.load_shape("qwen2.5-7b").bias_params == 28 * (3584 + 2 * 512)


def test_kv_bytes_per_token_by_hand() -> None:
    shape = shapes.load_shape("llama-3.1-70b")
    assert memory.kv_bytes_per_token(shape, "auto") == 2 * 80 * 8 * 128 * 2 == 327_680
    assert memory.kv_bytes_per_token(shape, "fp8") == 163_840
    assert memory.kv_bytes(shape, "auto", 128, 2048) == 85_899_345_920 == 80 * GIB
    assert memory.kv_bytes(shape, "fp8", 128, 2048) == 40 * GIB


def test_70b_on_one_h100_bf16_does_not_fit() -> None:
    for kv in ("auto", "fp8"):
        plan = memory.plan("llama-3.1-70b", "bf16", kv, **WORKLOAD)
        assert plan.weights_bytes == 2 * 70_553_706_496 == 141_107_412_992
        assert not plan.fits and plan.max_batch == 0  # the weights alone exceed the 71.7 GiB budget
    assert (
        memory.plan("llama-3.1-70b", "bf16", "auto", **WORKLOAD).total_bytes
        == 141_107_412_992 + 80 * GIB + 3_957_981_184
    )


def test_70b_on_one_h100_nothing_fits_at_128_by_2048() -> None:
    rows = memory.plan_all("llama-3.1-70b", **WORKLOAD)
    assert rows and not [(p.format, p.kv_dtype) for p in rows if p.fits]
    best = memory.plan("llama-3.1-70b", "w4a16-gptq", "fp8", **WORKLOAD)
    assert best.capacity_bytes == int(81559 * 2**20 * 0.9) == 76_968_728_985
    assert best.weights_bytes == 39_500_398_592  # 4.125 bits x 68.45e9 + 16-bit embeddings, lm_head, norms
    assert best.activation_bytes == 16384 * (4 * 8192 + 3 * 28672) * 2 + 128 * 128256 * 4 == 3_957_981_184
    assert best.total_bytes == 86_408_052_736  # 80.47 GiB > 71.68 GiB
    assert best.max_batch == 99
    assert memory.plan("llama-3.1-70b", "w4a16-gptq", "fp8", 99, 2048, "h100-80gb").fits
    assert not memory.plan("llama-3.1-70b", "w4a16-gptq", "fp8", 100, 2048, "h100-80gb").fits


def test_70b_what_fits_with_more_memory() -> None:
    def fitting(**kwargs) -> set[tuple[str, str]]:
        return {(p.format, p.kv_dtype) for p in memory.plan_all("llama-3.1-70b", 128, 2048, **kwargs) if p.fits}

    two_h100 = fitting(gpu="h100-80gb", tensor_parallel=2)
    assert ("fp8-dynamic", "fp8") in two_h100 and ("w4a16-gptq", "auto") in two_h100
    assert ("fp8-dynamic", "auto") not in two_h100 and ("bf16", "fp8") not in two_h100
    h200 = fitting(gpu="h200")
    assert ("fp8-dynamic", "fp8") in h200 and ("fp8-dynamic", "auto") not in h200


def test_tensor_parallel_halves_weights_and_kv_per_gpu() -> None:
    one = memory.plan("llama-3.1-70b", "w4a16-gptq", "auto", **WORKLOAD)
    two = memory.plan("llama-3.1-70b", "w4a16-gptq", "auto", tensor_parallel=2, **WORKLOAD)
    assert two.kv_bytes * 2 == one.kv_bytes
    norms = 2 * shapes.load_shape("llama-3.1-70b").norm_params  # replicated on every rank
    assert two.weights_bytes == (one.weights_bytes - norms) / 2 + norms
    with pytest.raises(HarnessError, match="tensor_parallel"):
        memory.plan("llama-3.1-70b", "bf16", "auto", tensor_parallel=3, **WORKLOAD)


def test_fp8_kv_halves_the_kv_cache() -> None:
    auto = memory.plan("llama-3.1-8b", "fp8-dynamic", "auto", **WORKLOAD)
    fp8 = memory.plan("llama-3.1-8b", "fp8-dynamic", "fp8", **WORKLOAD)
    assert fp8.kv_bytes * 2 == auto.kv_bytes
    assert fp8.weights_bytes == auto.weights_bytes and fp8.max_batch >= 2 * auto.max_batch


def test_bits_per_weight_include_scales_and_zero_points() -> None:
    order = [memory.bits_per_weight(f) for f in ("gguf-q8_0", "fp8-dynamic", gptq(64), gptq(128))]
    assert order == sorted(order, reverse=True) and len(set(order)) == 4
    assert order == [8.5, 8.0, 4 + 16 / 64, 4 + 16 / 128]
    assert memory.bits_per_weight("w4a16-awq") == 4 + 16 / 128 + 4 / 128  # asymmetric: int4 zero points
    assert memory.bits_per_weight("nvfp4a16") == 4 + 8 / 16
    assert memory.bits_per_weight("mxfp4") == 4 + 8 / 32
    assert memory.bits_per_weight("gguf-q4_k_m") == 4.5 and memory.bits_per_weight("gguf-q6_k") == 6.5625
    # with a shape, per-channel scales count: 16 bits per output row
    shape = shapes.load_shape("llama-3.1-70b")
    assert 8.0 < memory.bits_per_weight("fp8-dynamic", shape) < 8.002


def test_gguf_sizes_match_what_llama_cpp_reports() -> None:
    """llama.cpp prints `4.58 GiB (4.89 BPW)` for Llama-3-8B Q4_K_M and 39.59 GiB for the 70B."""
    small, large = shapes.load_shape("llama-3.1-8b"), shapes.load_shape("llama-3.1-70b")
    q4 = memory.weights(small, "gguf-q4_k_m")
    assert round(q4.total / GIB, 2) == 4.58
    assert round(q4.total * 8 / small.parameter_count, 2) == 4.89
    assert memory.weights(large, "gguf-q4_k_m").total == 42_512_531_456  # 39.59 GiB, by hand in docs/memory.md
    assert round(memory.weights(small, "gguf-q8_0").total * 8 / small.parameter_count, 2) == 8.5
    # K-quant rows must divide by 256: SmolLM2's 576-wide rows fall back, its output to Q8_0
    smol = shapes.load_shape("smollm2-135m")
    assert gguf_tensor_type("Q4_K_M", "q", smol, 0, 576) == "Q5_0"
    assert gguf_tensor_type("Q4_K_M", "token_embd", smol) == "Q8_0"


#: llama.cpp's tools/quantize/quantize.cpp lists each type's file size for Llama-3-8B (GiB)
LLAMA_CPP_LLAMA3_8B_GIB = {
    "Q2_K": 2.96,
    "Q3_K_S": 3.41,
    "Q3_K_M": 3.74,
    "Q3_K_L": 4.03,
    "Q4_0": 4.34,
    "Q4_1": 4.78,
    "Q4_K_S": 4.37,
    "Q4_K_M": 4.58,
    "Q5_0": 5.21,
    "Q5_1": 5.65,
    "Q5_K_S": 5.21,
    "Q5_K_M": 5.33,
    "Q6_K": 6.14,
    "Q8_0": 7.96,
}


@pytest.mark.parametrize(("ftype", "listed"), LLAMA_CPP_LLAMA3_8B_GIB.items())
def test_every_gguf_type_matches_llama_cpp_list(ftype: str, listed: float) -> None:
    """The per-tensor rules of each mix, not one bits-per-weight figure: within 0.02 GiB (the file's
    metadata and tokenizer are not weights)."""
    planned = memory.weights(shapes.load_shape("llama-3.1-8b"), f"gguf-{ftype.lower()}").total / GIB
    assert planned == pytest.approx(listed, abs=0.02)


def test_gguf_has_no_fp8_kv_cache() -> None:
    with pytest.raises(HarnessError, match="llamacpp"):
        memory.plan("llama-3.1-8b", "gguf-q4_k_m", "fp8", **WORKLOAD)
    rows = memory.plan_all("llama-3.1-8b", **WORKLOAD)
    assert ("gguf-q4_k_m", "auto") in {(p.format, p.kv_dtype) for p in rows}
    assert ("gguf-q4_k_m", "fp8") not in {(p.format, p.kv_dtype) for p in rows}


def test_fp4_activations_are_noted_before_blackwell() -> None:
    assert "FP4 tensor cores" in (memory.plan("llama-3.1-8b", "nvfp4", "auto", **WORKLOAD).note or "")
    assert memory.plan("llama-3.1-8b", "nvfp4", "auto", 128, 2048, "b200").note is None
    assert memory.plan("llama-3.1-8b", "nvfp4a16", "auto", **WORKLOAD).note is None


def test_config_json_from_a_directory_and_a_file(tmp_path: Path) -> None:
    config = {
        "model_type": "mistral",
        "num_hidden_layers": 4,
        "hidden_size": 512,
        "intermediate_size": 1024,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "vocab_size": 1000,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = shapes.load_shape(tmp_path)
    assert shape == shapes.load_shape(str(tmp_path / "config.json"))
    assert (shape.name, shape.head_dim, shape.kv_heads, shape.tied_embeddings, shape.qkv_bias) == (
        tmp_path.name,
        128,
        2,
        False,
        False,
    )
    assert memory.kv_bytes_per_token(shape) == 2 * 4 * 2 * 128 * 2
    del config["num_key_value_heads"], config["head_dim"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert (shapes.load_shape(tmp_path).kv_heads, shapes.load_shape(tmp_path).head_dim) == (8, 64)


def test_config_json_mistakes_are_harness_errors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "hidden_size": 64}))
    with pytest.raises(HarnessError, match="intermediate_size"):
        shapes.load_shape(tmp_path)
    moe = dict(shapes.KNOWN_SHAPES["llama-3.1-8b"], num_local_experts=8)
    with pytest.raises(HarnessError, match="mixture of experts"):
        shapes.ModelShape.from_config(moe)
    with pytest.raises(HarnessError, match="llama-3.1-70b"):
        shapes.load_shape(tmp_path / "nowhere")


def test_unknown_names_are_harness_errors() -> None:
    with pytest.raises(HarnessError, match="h100-80gb"):
        gpus.get("h1000")
    with pytest.raises(HarnessError, match="w4a16-gptq"):
        memory.plan("llama-3.1-8b", "int3-magic", "auto", **WORKLOAD)
    with pytest.raises(HarnessError, match="fp8_e4m3"):
        memory.plan("llama-3.1-8b", "bf16", "int4", **WORKLOAD)
    with pytest.raises(HarnessError, match="prequantized"):
        memory.weights(shapes.load_shape("llama-3.1-8b"), "prequantized")


def test_gpu_table() -> None:
    assert gpus.get("H100-80GB") is gpus.GPUS["h100-80gb"]
    for gpu in gpus.GPUS.values():
        assert 0.9 * gpu.memory_bytes < gpu.visible_bytes <= gpu.memory_bytes, gpu.name
        assert ("fp8" in gpu.native) == (gpu.fp8_flops is not None) == (gpu.capability >= 8.9), gpu.name
        assert ("fp4" in gpu.native) == (gpu.fp4_flops is not None) == (gpu.capability >= 10.0), gpu.name
    assert memory.default_batched_tokens(gpus.get("h100-80gb")) == 16384
    assert memory.default_batched_tokens(gpus.get("a100-80gb")) == 8192
    assert memory.default_batched_tokens(gpus.get("l40s")) == 8192


def test_cli_memory_answers_the_70b_question(cli) -> None:
    done = cli(
        "memory",
        "--model",
        "llama-3.1-70b",
        "--batch",
        "128",
        "--context",
        "2048",
        "--gpu",
        "h100-80gb",
        env={"COLUMNS": "250"},
    )
    assert done.returncode == 0, done.stderr
    assert "71.68 GiB" in done.stdout and "w4a16-gptq" in done.stdout and "80.47" in done.stdout


def test_cli_memory_unknown_gpu_is_exit_2(cli) -> None:
    done = cli("memory", "--model", "llama-3.1-70b", "--gpu", "h1000")
    assert done.returncode == 2 and "h100-80gb" in done.stderr and "Traceback" not in done.stderr


def test_float32_compute_plans_the_unquantized_tensors_kv_and_activations_in_4_bytes() -> None:
    # vLLM upcasts to the dtype it computes in: an fp32 baseline holds 4 bytes a weight, and an
    # INT8 checkpoint served in float32 keeps int8 projections but fp32 embeddings and norms
    shape = shapes.load_shape("smollm2-135m")
    assert memory.weights(shape, "fp32", "float32").total == 4 * shape.parameter_count
    assert memory.weights(shape, "bf16").total == 2 * shape.parameter_count
    bf16, fp32 = memory.weights(shape, "w8a8-int8"), memory.weights(shape, "w8a8-int8", "float32")
    assert fp32.linear_bytes == bf16.linear_bytes and fp32.embedding_bytes == 2 * bf16.embedding_bytes
    assert memory.kv_bytes_per_token(shape, "auto", compute_dtype="float32") == 2 * memory.kv_bytes_per_token(shape)
    assert memory.kv_bytes_per_token(shape, "fp8", compute_dtype="float32") == memory.kv_bytes_per_token(shape, "fp8")
    logits = 4 * 8 * shape.vocab
    assert memory.activation_bytes(shape, 8, 256, compute_dtype="float32") - logits == 2 * (
        memory.activation_bytes(shape, 8, 256) - logits
    )
    # llama.cpp computes from its file's own types, whatever model.dtype says
    assert memory.weights(shape, "gguf-q8_0", "float32") == memory.weights(shape, "gguf-q8_0")


def test_the_fp32_baseline_is_planned_in_4_bytes_whatever_dtype_is_asked() -> None:
    # the format's own dtype wins (as the engine request takes it): fp32 computes in float32, bf16 in bfloat16
    fp32 = memory.plan("smollm2-135m", "fp32", "auto", 8, 256, "h100-80gb")
    bf16 = memory.plan("smollm2-135m", "bf16", "auto", 8, 256, "h100-80gb")
    assert fp32.weights_bytes == 2 * bf16.weights_bytes and fp32.kv_bytes == 2 * bf16.kv_bytes
    shape = shapes.load_shape("smollm2-135m")
    assert memory.weights(shape, "bf16", "float32") == memory.weights(shape, "bf16")
