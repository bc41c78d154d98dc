"""The quantize stage: build a format's checkpoint once per artifact key, cache it, reuse it.

A checkpoint is written into a temporary directory beside the cache entry and renamed
into place only when complete, so a killed run never leaves half an artifact to reuse.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness import formats
from harness.formats.base import QuantizeRequest
from harness.isolation import StageOutcome, run_isolated

META_FILE = "harness-artifact.json"


@dataclass(frozen=True)
class Artifact:
    key: str
    path: Path
    bytes: int
    quantize_s: float | None  # None for a baseline (nothing was built)
    peak_rss_bytes: int | None
    peak_gpu_bytes: int | None
    reused: bool


def checkpoint_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf"))


def _quantize_child(format_name: str, request: QuantizeRequest) -> float:
    """Runs in an isolated process; returns the quantization wall time."""
    start = time.perf_counter()
    formats.get(format_name).quantize(request)
    return time.perf_counter() - start


def existing(model_dir: Path, key: str) -> Artifact:
    """A checkpoint served as it is (a baseline, or a user's pre-quantized model)."""
    return Artifact(key, model_dir, checkpoint_bytes(model_dir), None, None, None, reused=True)


def cached(cache_dir: Path, key: str) -> Artifact | None:
    path = cache_dir / "artifacts" / key
    meta = path / META_FILE
    if not meta.is_file():
        return None
    data = json.loads(meta.read_text())
    return Artifact(key, path, data["bytes"], data["quantize_s"], data["peak_rss_bytes"], data["peak_gpu_bytes"], reused=True)


def build(cache_dir: Path, key: str, request: QuantizeRequest, log_path: Path, timeout_s: float) -> tuple[Artifact | None, StageOutcome]:
    """Quantize into a temporary directory in an isolated process; rename it into the cache
    when complete. request.out_dir is replaced by that temporary directory."""
    target = cache_dir / "artifacts" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    try:
        outcome = run_isolated(_quantize_child, (request.params.name, replace(request, out_dir=staging)), log_path, timeout_s)
        if not outcome.ok:
            return None, outcome
        artifact = Artifact(key, target, checkpoint_bytes(staging), outcome.value, outcome.peak_rss_bytes, outcome.peak_gpu_bytes, reused=False)
        meta = {k: v for k, v in asdict(artifact).items() if k not in ("path", "reused")}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        os.chmod(staging, 0o755)
        if target.exists():  # another run finished the same artifact first: keep theirs
            return cached(cache_dir, key), outcome
        os.replace(staging, target)
        return Artifact(**{**asdict(artifact), "path": target}), outcome
    finally:
        shutil.rmtree(staging, ignore_errors=True)



def describe_scheme(directory: Path) -> str | None:
    """What the checkpoint itself says its quantization is (config.json quantization_config)."""
    if (directory / "model.gguf").is_file():
        return _describe_gguf(directory / "model.gguf")
    config = directory / "config.json"
    if not config.is_file():
        return None
    quant = json.loads(config.read_text()).get("quantization_config")
    if not quant:
        return None
    parts = []
    for name, group in sorted((quant.get("config_groups") or {}).items()):
        for role in ("weights", "input_activations"):
            args = group.get(role)
            if not args:
                continue
            text = f"{role.split('_')[0]} {args.get('type')}{args.get('num_bits')} {args.get('strategy')}"
            if args.get("group_size"):
                text += f" {args['group_size']}"
            text += " sym" if args.get("symmetric") else " asym"
            if args.get("dynamic"):
                text += " dynamic"
            parts.append(text)
    if quant.get("kv_cache_scheme"):
        parts.append(f"kv {quant['kv_cache_scheme'].get('type')}{quant['kv_cache_scheme'].get('num_bits')}")
    return f"{quant.get('format') or quant.get('quant_method')}: " + "; ".join(parts)


def _describe_gguf(path: Path) -> str:
    """The tensor types inside a GGUF file, most frequent first (K-quant fallbacks show here)."""
    from collections import Counter

    from gguf import GGUFReader

    counts = Counter(tensor.tensor_type.name for tensor in GGUFReader(path).tensors)
    return "gguf: " + ", ".join(f"{kind} x{n}" for kind, n in counts.most_common())
