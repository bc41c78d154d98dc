"""The Engine protocol: start a model, generate from token prompts, stop; and read its logs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.config import EngineSpec


@dataclass(frozen=True)
class EngineRequest:
    model_dir: Path
    dtype: str  # "bfloat16", "float16", "auto" (what the checkpoint says)
    spec: EngineSpec
    device: str  # "cpu" or "cuda"
    max_model_len: int
    logprobs_k: int = 0  # top log-probabilities per position the engine must be able to return


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


class EngineSession(ABC):
    @abstractmethod
    def generate(self, prompts: list[list[int]], max_tokens: int) -> Generation:
        """Greedy generation of exactly max_tokens per prompt (end-of-sequence ignored)."""

    def weights_bytes(self) -> int | None:
        """Bytes of the model's weights as loaded by the engine (None: the engine can't say)."""
        return None


class Engine(ABC):
    name: ClassVar[str]
    kv_cache_dtypes: ClassVar[tuple[str, ...]] = ("auto",)
    #: what its speed figures are: "serving" engines are compared with each other, a
    #: "reference" engine's speed is labelled and never mixed into those comparisons
    speed_class: ClassVar[str] = "serving"

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

    def server(self, request: EngineRequest, port: int) -> ServerLaunch | None:
        """The engine's server for the online benchmark; None: it has none (a reference engine)."""
        return None

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
