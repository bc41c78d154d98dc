"""model.source synthetic:...: an architecture's exact shape with seeded random weights."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from harness.config import load_config
from harness.errors import HarnessError
from harness.shapes import ModelShape
from harness.stages import models

TINY = {  # a Llama-style shape small enough to build in a second
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "tie_word_embeddings": False,
    "max_position_embeddings": 512,
}


def write_config(directory: Path, config: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def cache_with_builtin(root: Path, smollm2_dir: Path) -> Path:
    """A fresh cache that already holds the converted builtin SmolLM2 (its tokenizer is reused)."""
    (root / "models").mkdir(parents=True)
    (root / "models" / smollm2_dir.name).symlink_to(smollm2_dir)
    return root


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def smollm2_2_layers(tmp_path_factory, smollm2_dir: Path):
    """SmolLM2's config.json with 2 layers, built once into a fresh cache."""
    config = json.loads((smollm2_dir / "config.json").read_text())
    config["num_hidden_layers"] = 2
    source = write_config(tmp_path_factory.mktemp("smollm2-2l"), config)
    cache = cache_with_builtin(tmp_path_factory.mktemp("cache"), smollm2_dir)
    return source, cache, models.resolve(f"synthetic:{source}", None, cache)


def test_built_saved_and_loadable_by_transformers(smollm2_2_layers) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, cache, resolved = smollm2_2_layers
    assert resolved.synthetic and "random weights" in resolved.note
    assert resolved.identity.startswith(f"synthetic:{source.name}@") and resolved.identity.endswith("+s0")
    assert resolved.path.parent == cache / "models"
    info = json.loads((resolved.path / "harness-model.json").read_text())
    assert info["synthetic"] and info["weights"] == "streamed" and info["tokenizer"] == "smollm2"

    model, loading = AutoModelForCausalLM.from_pretrained(resolved.path, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"]
    assert model.dtype == torch.bfloat16 and model.config.num_hidden_layers == 2
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    norm = model.model.layers[0].input_layernorm.weight
    assert torch.equal(norm, torch.ones_like(norm))
    q = model.model.layers[0].self_attn.q_proj.weight.float()
    assert abs(q.mean().item()) < 1e-3 and 0.018 < q.std().item() < 0.022  # N(0, initializer_range 0.02)

    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    assert len(tokenizer) == 49152 and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("def f(x):\n    return x", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.input_ids.shape[1] + 4

    # what the pipeline asks of any model directory
    expected = ModelShape.from_config(resolved.path).parameter_count
    assert models.parameter_count(resolved.path) == expected == sum(p.numel() for p in model.parameters())
    linears = dict(models.linear_layers(resolved.path))
    assert linears["model.layers.1.mlp.down_proj"] == 1536 and linears["model.layers.0.self_attn.q_proj"] == 576


def test_cached_and_deterministic_under_the_seed(
    smollm2_2_layers, smollm2_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    source, cache, first = smollm2_2_layers
    weights = sha(first.path / "model.safetensors")

    # a second resolve in the same cache builds nothing
    def no_build(*_args, **_kwargs):
        raise AssertionError("rebuilt a cached synthetic model")

    with monkeypatch.context() as patch:
        patch.setattr(models, "run_isolated", no_build)
        assert models.resolve(f"synthetic:{source}", None, cache) == first

    # the same seed in another cache: the same bytes; another seed: other weights, another identity
    other_cache = cache_with_builtin(tmp_path / "other", smollm2_dir)
    again = models.resolve(f"synthetic:{source / 'config.json'}", None, other_cache)
    assert sha(again.path / "model.safetensors") == weights and again.identity == first.identity
    seeded = models.resolve(f"synthetic:{source}", None, other_cache, seed=1)
    assert sha(seeded.path / "model.safetensors") != weights
    assert seeded.identity != first.identity and seeded.identity.endswith("+s1")


def test_small_vocab_gets_a_byte_level_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    source = write_config(tmp_path / "tiny", TINY)
    resolved = models.resolve(f"synthetic:{source}", None, tmp_path / "cache")
    assert "byte-level" in resolved.note
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    assert len(tokenizer) == 1000
    text = "héllo, wörld\n\tdef f(): ✓"
    ids = tokenizer(text).input_ids
    assert len(ids) == len(text.encode()) and max(ids) < 1000  # one token per byte, all embeddable
    assert tokenizer.decode(ids) == text
    assert tokenizer.decode([999]) == "<|synthetic_999|>"  # every id of the model decodes
    config = json.loads((resolved.path / "config.json").read_text())
    assert (
        (config["bos_token_id"], config["eos_token_id"]) == (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    )
    assert config["architectures"] == ["LlamaForCausalLM"] and config["dtype"] == "bfloat16"


def test_tokenizer_beside_the_config_is_used_and_padded(tmp_path: Path, smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    source = write_config(tmp_path / "with-tokenizer", {**TINY, "vocab_size": 49200, "eos_token_id": 2})
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (source / name).write_bytes((smollm2_dir / name).read_bytes())
    resolved = models.resolve(f"synthetic:{source}", None, tmp_path / "cache", dtype="float16")
    assert "beside its config.json" in resolved.note
    assert json.loads((resolved.path / "config.json").read_text())["dtype"] == "float16"
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    assert len(tokenizer) == 49200 and tokenizer.decode([49199]) == "<|synthetic_49199|>"
    assert tokenizer("Hello world").input_ids == AutoTokenizer.from_pretrained(smollm2_dir)("Hello world").input_ids


def test_moe_falls_back_to_transformers_save_pretrained(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    mixtral = {**TINY, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}
    resolved = models.resolve(f"synthetic:{write_config(tmp_path / 'moe', mixtral)}", None, tmp_path / "cache")
    assert json.loads((resolved.path / "harness-model.json").read_text())["weights"].startswith("transformers")
    model, loading = AutoModelForCausalLM.from_pretrained(resolved.path, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"]
    assert models.parameter_count(resolved.path) == sum(p.numel() for p in model.parameters())


def test_known_architectures_by_name() -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    label, config, tokenizer_dir = models.synthetic_config("llama-3.1-70b")
    assert label == "llama-3.1-70b" and tokenizer_dir is None
    fields = {k: v for k, v in config.items() if k != "torch_dtype"}
    built = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(built)
    assert sum(p.numel() for p in meta.parameters()) == 70_553_706_496  # docs/memory.md's count
    assert built.max_position_embeddings == 131072 and built.architectures == ["LlamaForCausalLM"]
    assert models.synthetic_config("builtin:smollm2-135m")[0] == "smollm2-135m"


def test_unusable_sources_are_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(HarnessError, match="not a known architecture"):
        models.synthetic_config("llama-9000")
    with pytest.raises(HarnessError, match="no config.json"):
        models.synthetic_config(str(tmp_path))

    import huggingface_hub

    def offline(*_args, **_kwargs):
        raise OSError("the hub is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(HarnessError, match="cannot download its config.json"):
        models.synthetic_config("meta-llama/Llama-3.1-70B")
    write_config(tmp_path / "tiny", {**TINY, "vocab_size": 100})
    with pytest.raises(HarnessError, match="259"):
        models.synthetic_spec(str(tmp_path / "tiny"), None, tmp_path / "cache")


def test_pad_tokenizer_json(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(
        json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2}}, "added_tokens": [{"id": 3, "content": "<s>"}]})
    )
    assert models.pad_tokenizer_json(path, 6) == 3
    assert json.loads(path.read_text())["model"]["vocab"] == {
        "a": 0,
        "b": 2,
        "<|synthetic_1|>": 1,
        "<|synthetic_4|>": 4,
        "<|synthetic_5|>": 5,
    }
    assert models.pad_tokenizer_json(path, 6) == 0


CONFIG = """
name: t
model: {source: SOURCE}
formats: [bf16]
workload: {prompts: 2, input_len: 8, output_len: 8}
engine: {name: vllm, max_model_len: 64}
"""


def test_config_accepts_synthetic_sources(tmp_path: Path) -> None:
    source = write_config(tmp_path / "arch", TINY)
    path = tmp_path / "config.yaml"
    good = [
        "synthetic:llama-3.1-70b",
        f"synthetic:{source}",
        f"synthetic:{source / 'config.json'}",
        "synthetic:meta-llama/Llama-3.1-70B",
    ]
    for spec in good:
        path.write_text(textwrap.dedent(CONFIG).replace("SOURCE", spec))
        assert load_config(path).model.source == spec
    for spec, words in (
        (f"synthetic:{tmp_path / 'missing'}", "config.json"),
        ("synthetic:llama-9000", "known architecture"),
    ):
        path.write_text(textwrap.dedent(CONFIG).replace("SOURCE", spec))
        with pytest.raises(HarnessError) as caught:
            load_config(path)
        assert str(caught.value).startswith(f"{path}: model.source") and words in str(caught.value)
