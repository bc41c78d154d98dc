"""The engine registry: a new engine is one module plus one line here."""

from __future__ import annotations

from typing import Any

from harness.engines.base import Engine
from harness.engines.llamacpp import LlamaCppEngine
from harness.engines.transformers import TransformersEngine
from harness.engines.vllm import VllmEngine

REGISTRY: dict[str, Engine[Any]] = {
    e.name: e
    for e in (
        VllmEngine(),
        TransformersEngine(),
        LlamaCppEngine(),
    )
}


def get(name: str) -> Engine[Any]:
    return REGISTRY[name]
