"""Model shapes: the dimensions of a Llama-style dense decoder from its config.json, and the one
table of models the harness knows without a download (their shapes and instruct hub ids).

Used by config (synthetic sources), the formats' weight layouts, the memory planner, the picker
and the report, so it sits at the bottom and imports nothing of the harness but its errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

#: config.json fields of the architectures one plans for most, shipped so no download is needed.
#: Values from each model's config.json on the Hugging Face hub.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.1-70B
    "llama-3.1-70b": {
        "model_type": "llama",
        "num_hidden_layers": 80,
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
    },
    # meta-llama/Llama-3.1-8B
    "llama-3.1-8b": {
        "model_type": "llama",
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
    },
    # Qwen/Qwen2.5-7B (Qwen2 has biases on q, k and v)
    "qwen2.5-7b": {
        "model_type": "qwen2",
        "num_hidden_layers": 28,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "tie_word_embeddings": False,
    },
    # HuggingFaceTB/SmolLM2-135M (the harness's builtin model)
    "smollm2-135m": {
        "model_type": "llama",
        "num_hidden_layers": 30,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    },
}

KNOWN_SHAPES["qwen2.5-coder-7b"] = KNOWN_SHAPES["qwen2.5-7b"]  # Qwen/Qwen2.5-Coder-7B: the same shape

_REQUIRED = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
#: config keys of architectures this Llama-style count would get wrong
_UNSUPPORTED = {
    "num_local_experts": "a mixture of experts",
    "num_experts": "a mixture of experts",
    "n_routed_experts": "a mixture of experts",
    "kv_lora_rank": "multi-head latent attention (its KV cache is not per-head)",
}


@dataclass(frozen=True)
class Linear:
    """One projection of a decoder block: weight [out_features, in_features]."""

    role: str  # q, k, v, o, gate, up, down
    in_features: int
    out_features: int

    @property
    def params(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a Llama-style decoder, from its config.json."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | Path, name: str | None = None) -> "ModelShape":
        """From a config.json's dict, a config.json path, or a model directory."""
        where: object = "config"
        if isinstance(config, Mapping):
            fields: Mapping[str, Any] = config
        else:
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            where = path
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise HarnessError(f"{path}: cannot read a config.json ({exc})") from exc
            name = name or path.parent.name
            if not isinstance(loaded, Mapping):
                raise HarnessError(f"{path}: not a JSON object")
            fields = loaded
        if "num_hidden_layers" not in fields and isinstance(fields.get("text_config"), Mapping):
            fields = fields["text_config"]  # multimodal wrappers keep the decoder's fields there
        for key, what in _UNSUPPORTED.items():
            if fields.get(key):
                raise HarnessError(
                    f"{where}: {key}: the model is {what}; this plan counts dense Llama-style decoders only"
                )
        missing = [key for key in _REQUIRED if not isinstance(fields.get(key), int)]
        if missing:
            raise HarnessError(f"{where}: missing or not an integer: {', '.join(missing)}")
        heads = fields["num_attention_heads"]
        head_dim = fields.get("head_dim") or fields["hidden_size"] // heads
        model_type = fields.get("model_type", "")
        return cls(
            name=name or str(fields.get("_name_or_path") or model_type or "model"),
            layers=fields["num_hidden_layers"],
            hidden=fields["hidden_size"],
            intermediate=fields["intermediate_size"],
            heads=heads,
            kv_heads=fields.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            vocab=fields["vocab_size"],
            tied_embeddings=bool(fields.get("tie_word_embeddings", False)),
            qkv_bias=bool(fields.get("attention_bias", model_type == "qwen2")),
        )

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def block_linears(self) -> tuple[Linear, ...]:
        """The seven projections of one decoder block."""
        h, i = self.hidden, self.intermediate
        return (
            Linear("q", h, self.q_dim),
            Linear("k", h, self.kv_dim),
            Linear("v", h, self.kv_dim),
            Linear("o", self.q_dim, h),
            Linear("gate", h, i),
            Linear("up", h, i),
            Linear("down", i, h),
        )

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder blocks' Linear weights: what quantization formats compress."""
        return self.layers * sum(lin.params for lin in self.block_linears())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied_embeddings else self.vocab * self.hidden

    @property
    def norm_params(self) -> int:
        return (2 * self.layers + 1) * self.hidden  # input and post-attention RMSNorm per block, final norm

    @property
    def bias_params(self) -> int:
        return self.layers * (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0

    @property
    def parameter_count(self) -> int:
        return self.linear_params + self.embedding_params + self.lm_head_params + self.norm_params + self.bias_params


def load_shape(spec: str | Path) -> ModelShape:
    """A known architecture's name (`llama-3.1-70b`, `builtin:smollm2-135m`), a config.json, or a
    model directory holding one."""
    text = str(spec)
    known = text.removeprefix("builtin:").lower()
    if known in KNOWN_SHAPES:
        return ModelShape.from_config(KNOWN_SHAPES[known], name=known)
    path = Path(text).expanduser()
    if path.is_dir() or path.is_file():
        return ModelShape.from_config(path)
    raise HarnessError(
        f"unknown model {text!r}: give a config.json, a model directory, or one of {', '.join(KNOWN_SHAPES)}"
    )


#: the hub id a generated config serves for each known shape (the instruct model of that shape)
HUB_IDS: dict[str, str] = {
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B-Instruct",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-coder-7b": "Qwen/Qwen2.5-Coder-7B-Instruct",
    "smollm2-135m": "builtin:smollm2-135m",
}


def known_shape(text: str) -> str | None:
    """The known shape a name or hub id denotes (`Meta-Llama-3.1-8B-Instruct` → `llama-3.1-8b`), or None."""
    name = str(text).strip().lower().removeprefix("builtin:")
    if name in KNOWN_SHAPES:
        return name
    last = name.rsplit("/", 1)[-1]
    for suffix in ("-instruct", "-chat", "-it"):
        last = last.removesuffix(suffix)
    last = last.removeprefix("meta-")
    return last if last in KNOWN_SHAPES else None


def shape_of_source(model_source: str) -> ModelShape | None:
    """The shape of a results row's model source when it is known (a name, a hub id of one, or a
    local model directory that still exists), else None."""
    name = known_shape(model_source)
    if name is not None:
        return load_shape(name)
    path = Path(model_source).expanduser()
    if (path / "config.json").is_file():
        try:
            return load_shape(path)
        except HarnessError:
            return None
    return None
