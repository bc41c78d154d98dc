"""The long-context retrieval task (lm-eval task `harness_passkey`): a five-digit pass key hidden
at a random depth in filler text, asked for at the end, scored by exact match. The prompt is
Mohtashami and Jaggi's (2023, "Landmark Attention"), used since by long-context studies; every
prompt is generated offline from a seed and measured in the model's own tokens, so each length
is a length in that model's context. Accuracy by length, per KV-cache dtype, shows what a
quantized KV cache costs where its errors accumulate: far back in a long context.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from harness.atomic import write_text_atomically
from harness.config import PasskeySpec

TASK = "harness_passkey"
HEADER = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
    "I will quiz you about the important information there.\n"
)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
QUESTION = "\nWhat is the pass key? The pass key is"


def _needle(key: str) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key. "


def documents(tokenizer: Any, spec: PasskeySpec) -> list[dict[str, Any]]:
    """spec.items prompts per length, in order of length: {text, key, length, depth, tokens}."""
    rng = np.random.default_rng(spec.seed)

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    fixed = count(HEADER + _needle("00000") + QUESTION)
    per_filler = count(FILLER * 20) / 20
    docs = []
    for length in spec.lengths:
        repeats = max(1, round((length - fixed) / per_filler))
        for _ in range(spec.items):
            key = f"{int(rng.integers(10_000, 100_000))}"
            depth = int(rng.integers(0, repeats + 1))
            text = HEADER + FILLER * depth + _needle(key) + FILLER * (repeats - depth) + QUESTION
            docs.append({"text": text, "key": key, "length": length, "depth": depth / repeats, "tokens": count(text)})
    return docs


def data_file(data_dir: Path, tokenizer_dir: Path, spec: PasskeySpec) -> Path:
    """The task's JSONL for this tokenizer and these settings (written once, atomically)."""
    from transformers import AutoTokenizer

    tokenizer_hash = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_dir / name).is_file():
            tokenizer_hash.update((tokenizer_dir / name).read_bytes())
    digest = hashlib.sha256(
        json.dumps(spec.model_dump(), sort_keys=True).encode() + tokenizer_hash.digest()
    ).hexdigest()[:16]
    target = data_dir / f"passkey-{digest}.jsonl"
    if target.is_file():
        return target
    docs = documents(AutoTokenizer.from_pretrained(tokenizer_dir), spec)
    write_text_atomically(target, "".join(json.dumps(doc) + "\n" for doc in docs))
    return target


def answer(generated: str) -> str | None:
    """The first number the model said."""
    found = re.search(r"\d+", generated)
    return found.group(0) if found else None


def by_length(path: Path, outcomes: dict[str, Any]) -> dict[str, float]:
    """Accuracy per prompt length from the per-document outcomes (doc_id: the line's index)."""
    lengths = [json.loads(line)["length"] for line in path.read_text(encoding="utf-8").splitlines() if line]
    totals: dict[int, list[float]] = {}
    for doc_id, value in outcomes.items():
        index = int(doc_id)
        if 0 <= index < len(lengths):
            totals.setdefault(lengths[index], []).append(float(value))
    return {str(length): sum(v) / len(v) for length, v in sorted(totals.items())}
