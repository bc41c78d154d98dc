"""llama.cpp through its Python bindings (llama-cpp-python): the engine of record for GGUF."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
from pydantic import Field

from harness import llamacpp_tools
from harness.engines.base import Engine, EngineRequest, EngineSession, EvalModelRequest, Generation, ServerLaunch
from harness.params import EngineParams


class LlamaCppParams(EngineParams):
    name: Literal["llamacpp"] = "llamacpp"
    threads: int | None = Field(None, ge=1, description="CPU threads (default: all cores)")
    server_args: list[str] = Field(
        default_factory=list,
        description="extra llama-server arguments, after the harness's own (a later one wins); the offline engine "
        "does not see them, and the output checks under load show when they change the answers",
        exclude_if=lambda value: not value,  # none: the keys of cells from before this setting
    )


#: settings that describe the measurement, not arguments of the bindings' Llama()
_NOT_LOAD_ARGS = ("sequences", "offline_figure")

# llama.cpp's loader lists the tensor types it found: "llama_model_loader: - type q4_K:   97 tensors"
_TENSOR_TYPES = re.compile(r"llama_model_loader: - type\s+(\w+):\s+(\d+) tensors")


class LlamaCppSession(EngineSession):
    """The bindings load the model only when asked for what only they give (greedy answers, the
    weights' size), after the offline figure: llama-bench loads its own copy, and a second copy
    held meanwhile would share the host's memory bandwidth with it (and, offloaded, the GPU's
    memory)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self._llm: Any = None

    @property
    def llm(self) -> Any:
        if self._llm is None:
            from llama_cpp import Llama

            self._llm = Llama(**self.settings, verbose=True)  # verbose: the loader's tensor-type lines go to the log
        return self._llm

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()

    def generate(self, prompts: list[list[int]], max_tokens: int) -> Generation:
        """llama.cpp's own llama-bench on the artifact: its prompt + generation test (one
        sequence, prefill then decode, as the bindings and llama-bench both run one at a time),
        once per prompt, with the cell's threads, batch size, GPU layers and flash attention. The
        figure is llama.cpp's, not a Python sampling loop's around it (that loop ran at 0.957 of
        llama-bench on SmolLM2 Q8_0). Token contents do not change llama.cpp's speed; lengths do,
        and are the prompts' (their mean, when they differ)."""
        input_len = round(sum(len(p) for p in prompts) / len(prompts))
        argv = [
            str(llamacpp_tools.program("llama-bench")),
            *("-m", self.settings["model_path"], "-t", str(self.settings["n_threads"])),
            *("-b", str(self.settings["n_batch"]), "-ngl", "99" if self.settings["n_gpu_layers"] else "0"),
            *("-fa", "on" if self.settings["flash_attn"] else "off"),
            *("-p", "0", "-n", "0", "-pg", f"{input_len},{max_tokens}", "-r", str(len(prompts)), "-o", "json"),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
        sys.stderr.write(f"$ {' '.join(argv)}\n{done.stderr[-4000:]}")
        if done.returncode != 0:
            raise RuntimeError(f"llama-bench exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
        (test,) = json.loads(done.stdout)
        seconds = float(test["avg_ns"]) * 1e-9 * len(prompts)
        return Generation(len(prompts), input_len * len(prompts), max_tokens * len(prompts), seconds)

    def greedy(self, prompts: list[list[int]], max_tokens: list[int]) -> list[list[int]] | None:
        """As llama-server answers a load request: greedy, its end-of-generation tokens masked
        (its ignore_eos sets their logit bias to -inf)."""
        from llama_cpp import LogitsProcessorList
        from llama_cpp import llama_cpp as lib

        vocab = lib.llama_model_get_vocab(self.llm.model)
        eog = [t for t in range(self.llm.n_vocab()) if lib.llama_vocab_is_eog(vocab, t)]

        def mask(_ids: Any, scores: Any) -> Any:
            scores[eog] = -np.inf
            return scores

        answers = []
        for prompt, count in zip(prompts, max_tokens):
            ids: list[int] = []
            for token in self.llm.generate(
                prompt, temp=0.0, top_k=1, reset=True, logits_processor=LogitsProcessorList([mask])
            ):
                ids.append(int(token))
                if len(ids) >= count:
                    break
            answers.append(ids)
        return answers

    def weights_bytes(self) -> int | None:
        from llama_cpp import llama_cpp as lib

        return int(lib.llama_model_size(self.llm.model))


class LlamaCppEngine(Engine[LlamaCppParams]):
    name = "llamacpp"
    params_model = LlamaCppParams
    artifact_kinds = ("gguf",)
    has_server = True
    reference_engine = "vllm"  # GGUF cells without a gguf-bf16/gguf-f16 cell are compared with vLLM's bf16
    full_logits = True

    def version(self) -> str:
        return f"llama-cpp-python=={llamacpp_tools.bindings_version() or 'not installed'}"

    def settings(self, request: EngineRequest) -> dict[str, Any]:
        return {
            "model_path": str(request.model_dir / "model.gguf"),
            "n_ctx": request.max_model_len,
            "n_threads": self.own(request.spec).threads or os.cpu_count() or 1,
            "n_batch": 512,
            "n_gpu_layers": -1 if request.device == "cuda" else 0,
            "seed": request.spec.seed,
            # off, as the bindings and llama-bench default to, and said to llama-server too (its
            # default is auto: on where supported): with it on one side only, the server's greedy
            # answers left the offline engine's within 5 tokens on 6 of 12 output checks (Q8_0)
            "flash_attn": False,
            "sequences": "one at a time",
            "offline_figure": "llama-bench -pg (prompt + generation), once per prompt",
        }

    def server(self, request: EngineRequest, port: int, slots: int = 1) -> ServerLaunch:
        """llama.cpp's own llama-server (built by scripts/setup from the bindings' sources): one
        slot per request the sweep keeps in flight, each with the cell's context, decoded together
        (continuous batching), as GGUF is served in production."""
        settings = self.settings(request)
        argv = [
            str(llamacpp_tools.program("llama-server")),
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--model", settings["model_path"], "--alias", "cell"),
            *("--parallel", str(slots), "--ctx-size", str(settings["n_ctx"] * slots), "--no-kv-unified"),
            *("--threads", str(settings["n_threads"]), "--batch-size", str(settings["n_batch"])),
            *("--n-gpu-layers", str(settings["n_gpu_layers"]), "--seed", str(settings["seed"])),
            *("--flash-attn", "on" if settings["flash_attn"] else "off"),
            "--no-webui",
            *self.own(request.spec).server_args,
        ]
        return ServerLaunch(
            argv=argv,
            env={},
            health_path="/health",
            model_name="cell",
            text_prompts=False,
            extra_body={"ignore_eos": True},
        )

    def concurrent_sequences(self, request: EngineRequest, prompts: int) -> int:
        return 1  # llama-bench's prompt + generation test decodes one sequence

    @contextmanager
    def start(self, request: EngineRequest) -> Iterator[LlamaCppSession]:
        llamacpp_tools.require_bindings()
        llamacpp_tools.program("llama-bench")  # the offline figure's program: missing is a start-up error
        session = LlamaCppSession({k: v for k, v in self.settings(request).items() if k not in _NOT_LOAD_ARGS})
        try:
            yield session
        finally:
            session.close()

    def kernels(self, log_text: str) -> list[str]:
        """The GGUF tensor types llama.cpp loaded: shows K-quant fallbacks (e.g. q5_0 where a
        dimension is not a multiple of 256)."""
        counts: dict[str, int] = {}
        for kind, count in _TENSOR_TYPES.findall(log_text):
            counts[kind] = int(count)
        return [f"ggml {kind} x{count}" for kind, count in counts.items()]

    def lm_eval_model(self, request: EvalModelRequest) -> Any:
        """An lm-eval model over the bindings (engines/llamacpp_lm.py)."""
        from harness.engines.llamacpp_lm import LlamaCppLM

        settings = {k: v for k, v in self.settings(request.engine_request).items() if k not in _NOT_LOAD_ARGS}
        return LlamaCppLM(**settings, add_bos_token=request.add_bos_token)

    def full_logprobs(self, model: Any, window: list[int]) -> np.ndarray:
        result: np.ndarray = model.window_logprobs(window)[:-1]
        return result
