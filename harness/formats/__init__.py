"""The format registry: a new format is one module plus one line here."""

from __future__ import annotations

from harness.formats.base import Format
from harness.formats.baseline import Bf16, Fp16
from harness.formats.llmcompressor import Fp8Dynamic, W4A16Gptq, W8A8Int8

REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        Bf16(),
        Fp16(),
        Fp8Dynamic(),
        W4A16Gptq(),
        W8A8Int8(),
    )
}


def get(name: str) -> Format:
    return REGISTRY[name]
