"""The format registry: a new format is one module plus one line here."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from harness.formats.base import Format
from harness.formats.baseline import Bf16, Fp16, Fp32
from harness.formats.gguf import gguf_formats
from harness.formats.llmcompressor import (
    Fp8Dynamic,
    Fp8Static,
    Mxfp4,
    Mxfp4A16,
    Nvfp4,
    Nvfp4A16,
    W4A16Awq,
    W4A16Gptq,
    W8A8Int8,
)
from harness.formats.prequantized import Prequantized
from harness.params import FormatParams

_FORMATS: tuple[Format[Any], ...] = (
    Bf16(),
    Fp16(),
    Fp32(),
    Fp8Dynamic(),
    W4A16Gptq(),
    W8A8Int8(),
    W4A16Awq(),
    Fp8Static(),
    Nvfp4(),
    Nvfp4A16(),
    Mxfp4(),
    Mxfp4A16(),
    Prequantized(),
    *gguf_formats(),
)
REGISTRY: dict[str, Format[Any]] = {f.name: f for f in _FORMATS}


def get(name: str) -> Format[Any]:
    return REGISTRY[name]


def params_from_entry(entry: dict[str, Any]) -> FormatParams:
    """A format's parameter object from a config-style entry ({"name": ..., "group_size": ...}); a
    results row's recorded parameters that no longer validate here (a prequantized path that is
    gone) are taken as they are."""
    fmt = REGISTRY[entry["name"]]
    try:
        return fmt.params_model.model_validate(entry)
    except ValidationError:
        return fmt.params_model.model_construct(**entry)
