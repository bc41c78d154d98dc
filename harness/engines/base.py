"""The Engine protocol: what an engine is (its parameters, what it loads, its devices, whether it
has a server), how it runs (start, generate, stop), how quality is measured on it (its lm-eval
model and its next-token log-probabilities), and how its logs are read."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from harness.params import EngineParams

EP = TypeVar("EP", bound=EngineParams)


@dataclass(frozen=True)
class EngineRequest:
    model_dir: Path
    dtype: str  # "bfloat16", "float16", "auto" (what the checkpoint says)
    spec: EngineParams  # the engine's own parameter type (Engine.params_model)
    device: str  # "cpu" or "cuda"
    max_model_len: int
    logprobs_k: int = 0  # top log-probabilities per position the engine must be able to return


@dataclass(frozen=True)
class Parallelism:
    """How one cell of an engine spreads over devices: tensor x pipeline parallel."""

    tensor: int = 1
    pipeline: int = 1

    @property
    def devices(self) -> int:
        return self.tensor * self.pipeline


@dataclass(frozen=True)
class Generation:
    prompts: int
    input_tokens: int
    output_tokens: int
    seconds: float


@dataclass(frozen=True)
class ServerLaunch:
    """How to start the engine's OpenAI-compatible server for one cell."""

    argv: list[str]
    env: dict[str, str]
    health_path: str  # a GET that answers 200 once the model is loaded
    model_name: str  # the `model` field requests name
    text_prompts: bool  # the server takes text prompts only (else token ids)
    extra_body: dict[str, Any]  # engine-specific request fields (e.g. vLLM's ignore_eos)


@dataclass(frozen=True)
class MemorySplit:
    """What the engine said it allocated (None: it did not say)."""

    weights_bytes: int | None = None
    kv_cache_bytes: int | None = None
    kv_cache_tokens: int | None = None


@dataclass(frozen=True)
class EvalModelRequest:
    """What an engine's lm-eval model is built from."""

    engine_request: EngineRequest
    batch_size: int
    add_bos_token: bool | None  # lm-eval's add_bos_token; None: the tokenizer's default


class EngineSession(ABC):
    @abstractmethod
    def generate(self, prompts: list[list[int]], max_tokens: int) -> Generation:
        """Exactly max_tokens per prompt (end-of-sequence ignored), sampled as the engine's
        reference benchmark samples (vLLM: temperature 1 and top-p 1, as `vllm bench throughput`;
        llama.cpp, transformers: greedy)."""

    def weights_bytes(self) -> int | None:
        """Bytes of the model's weights as loaded by the engine (None: the engine can't say)."""
        return None

    def greedy(self, prompts: list[list[int]], max_tokens: list[int]) -> list[list[int]] | None:
        """Each prompt's greedy answer of exactly max_tokens[i] token ids, sampled as the engine's
        server samples a load request (temperature 0, end of sequence as the server's ignore_eos
        treats it): the reference of the output checks under load. None: the engine can't."""
        return None


class Engine(ABC, Generic[EP]):
    name: ClassVar[str]
    params_model: type[EP]
    kv_cache_dtypes: ClassVar[tuple[str, ...]] = ("auto",)
    #: what its speed figures are: "serving" engines are compared with each other, a
    #: "reference" engine's speed is labelled and never mixed into those comparisons
    speed_class: ClassVar[str] = "serving"
    #: the checkpoint kinds it loads (Format.artifact_kind)
    artifact_kinds: ClassVar[tuple[str, ...]] = ("hf",)
    #: whether it has an OpenAI-compatible server for the online benchmark
    has_server: ClassVar[bool] = False
    #: the engine whose baseline cell is this engine's quality reference when it ran no baseline
    #: cell itself (GGUF cells are compared with vLLM's bf16): declared, not guessed
    reference_engine: ClassVar[str | None] = None
    #: whether full_logprobs returns the whole next-token distribution (exact KL divergence);
    #: an engine without it overrides top_logprobs (its KLD is a top-k estimate)
    full_logits: ClassVar[bool] = False

    def own(self, spec: EngineParams) -> EP:
        """`spec` as this engine's own parameter type (config built it from params_model)."""
        if not isinstance(spec, self.params_model):
            raise TypeError(f"{self.name}: expected {self.params_model.__name__}, got {type(spec).__name__}")
        return spec

    def parallelism(self, spec: EngineParams) -> Parallelism:
        """Devices one request of a cell uses (tensor x pipeline parallel)."""
        return Parallelism()

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def settings(self, request: EngineRequest) -> dict[str, Any]:
        """The engine arguments actually used, recorded in every row."""

    def environment(self, request: EngineRequest) -> dict[str, str]:
        """Environment variables the engine is started with, recorded in every row."""
        return {}

    @abstractmethod
    def start(self, request: EngineRequest) -> AbstractContextManager[EngineSession]:
        """Load the model; the context manager always stops the engine."""

    def server(self, request: EngineRequest, port: int, slots: int = 1) -> ServerLaunch:
        """The engine's server for the online benchmark (only when has_server); slots: the most
        requests the sweep keeps in flight (an engine with fixed decode slots sizes them to it)."""
        raise NotImplementedError(f"{self.name} has no server")

    @abstractmethod
    def lm_eval_model(self, request: EvalModelRequest) -> Any:
        """lm-eval's model (an `lm_eval.api.model.LM`) for this engine, loaded on the artifact."""

    def full_logprobs(self, model: Any, window: list[int]) -> np.ndarray:
        """(len(window) - 1, vocab) log-probabilities of each next token of `window`, from the
        model lm_eval_model built. Engines that can't return full logits override top_logprobs."""
        raise NotImplementedError(f"{self.name} returns no full logits")

    def top_logprobs(self, model: Any, windows: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each position's k most likely next tokens and their log-probabilities: (positions, k)
        ids and values, positions 1..n-1 of every window, predicting the window's next token."""
        return top_k(np.concatenate([self.full_logprobs(model, window) for window in windows]), k)

    def window_distributions(self, model: Any, windows: list[list[int]]) -> np.ndarray:
        """(positions, vocab) float32: the whole next-token distribution at every position that
        top_logprobs returns (only where full_logits)."""
        return np.concatenate([self.full_logprobs(model, window) for window in windows]).astype(np.float32)

    def kernels(self, log_text: str) -> list[str]:
        """Kernels the engine said it selected, from its log."""
        return []

    def memory_split(self, log_text: str) -> MemorySplit:
        """Weights loaded and KV cache allocated, as the engine logged them."""
        return MemorySplit()

    def concurrent_sequences(self, request: EngineRequest, prompts: int) -> int:
        """Sequences decoded together when `prompts` are submitted at once (the roofline's B)."""
        return prompts

    def unsupported_reason(self, error: str, log_text: str) -> str | None:
        """The engine's own words when it refused the format on this hardware, else None."""
        return None

    def refusal(self, kernels: tuple[str, ...], device: str) -> str | None:
        """Why the engine cannot run a format whose kernels (on this device) are `kernels`,
        known before anything is calibrated or built; None: let it try."""
        return None


def top_k(logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest log-probabilities, largest first: (ids int64, values float32)."""
    top = np.argsort(-logprobs, axis=1)[:, :k]
    return top.astype(np.int64), np.take_along_axis(logprobs, top, axis=1).astype(np.float32)
