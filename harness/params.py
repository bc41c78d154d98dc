"""Parameter bases every plug-in shares: a format's and an engine's parameters subclass these.

They sit below config, formats, engines and the planner, so each of those imports them at the
top and none of them imports another to learn a parameter type.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: a Hugging Face hub id: ORG/NAME
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]
KV_CACHE_DTYPES: tuple[str, ...] = get_args(KvCacheDtype)


class StrictModel(BaseModel):
    """Unknown keys are errors; values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FormatParams(StrictModel):
    """Base of every format's parameters; each format module subclasses it."""

    name: str
    label: str | None = Field(None, pattern=NAME_PATTERN)

    @property
    def id(self) -> str:
        return self.label or self.name


class EngineParams(StrictModel):
    """Base of every engine's parameters (the config's `engine:` entries); each engine module
    subclasses it with the settings only that engine has."""

    name: str
    max_model_len: int | None = Field(None, ge=16)
    kv_cache_dtype: KvCacheDtype | list[KvCacheDtype] = Field(
        "auto", description="one dtype, or a list: the KV-cache axis of the matrix"
    )
    timeout_s: int = Field(1800, ge=10, description="wall-clock limit of one engine session")
    memory_limit_gib: float | None = Field(
        None,
        gt=0,
        description="host RSS limit of the engine's process tree (offline, server, evals): over it, the tree is "
        "killed and the cell fails as out of memory; None: no limit. Not part of the cell key",
    )
    seed: int = Field(0, ge=0)

    @property
    def kv_dtype(self) -> str:
        """The one KV-cache dtype of an expanded spec (config expands a list into one spec each)."""
        value = self.kv_cache_dtype
        if isinstance(value, list):
            raise ValueError("an engine spec with a list of KV-cache dtypes has not been expanded into cells")
        return value
