"""The engine registry: a new engine is one module plus one line here."""

from __future__ import annotations

from harness.engines.base import Engine
from harness.engines.vllm import VllmEngine

REGISTRY: dict[str, Engine] = {
    e.name: e
    for e in (
        VllmEngine(),
    )
}


def get(name: str) -> Engine:
    return REGISTRY[name]
