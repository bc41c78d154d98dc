"""The engine registry: a new engine is one module plus one line here."""

from __future__ import annotations

from harness.engines.base import Engine
from harness.engines.llamacpp import LlamaCppEngine
from harness.engines.transformers import TransformersEngine
from harness.engines.vllm import VllmEngine

REGISTRY: dict[str, Engine] = {
    e.name: e
    for e in (
        VllmEngine(),
        TransformersEngine(),
        LlamaCppEngine(),
    )
}


def get(name: str) -> Engine:
    return REGISTRY[name]
