"""Cells, keys, the format registry and the group-size check."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import formats, matrix, pipeline
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
    text = CONFIG.replace("{name: w4a16-gptq, group_size: 32, label: gptq-g32}", "{name: w4a16-gptq, group_size: 64, label: again}")
    cells = matrix.expand(load(tmp_path, text))
    assert cells[2].artifact_key("m", {}) == cells[4].artifact_key("m", {})


def test_registry_lists_the_slice_formats() -> None:
    assert {"bf16", "fp16", "fp8-dynamic", "w4a16-gptq", "w8a8-int8"} <= set(formats.REGISTRY)
    for name, fmt in formats.REGISTRY.items():
        assert fmt.name == name and fmt.engines and fmt.hardware and fmt.summary


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
    from harness.models import linear_layers, parameter_count

    layers = dict(linear_layers(smollm2_dir))
    assert layers["model.layers.0.self_attn.q_proj"] == 576
    assert layers["model.layers.0.mlp.down_proj"] == 1536
    assert 130e6 < parameter_count(smollm2_dir) < 140e6
