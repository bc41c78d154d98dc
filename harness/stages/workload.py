"""The prompts a cell is measured with: seeded random token ids (as vLLM's own random benchmark
dataset), the same for every cell of a model; or a local prompts file."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from harness.config import WorkloadSpec
from harness.errors import HarnessError


@lru_cache(maxsize=8)  # every cell of a model shares them: tokenizer loaded once per run
def make_prompts(tokenizer_dir: Path, workload: WorkloadSpec) -> list[list[int]]:
    """Random token ids (special tokens excluded), seeded: the same prompts for every cell
    of a model, exactly input_len tokens each, as vLLM's own random benchmark dataset."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    special = set(tokenizer.all_special_ids)
    allowed = np.array([i for i in range(len(tokenizer)) if i not in special])
    rng = np.random.default_rng(workload.seed)
    return [rng.choice(allowed, size=workload.input_len).tolist() for _ in range(workload.prompts)]


def read_prompts_file(path: Path) -> list[str]:
    """A prompt per non-empty line, or JSONL objects with a "prompt" field."""
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                prompts.append(str(json.loads(line)["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise HarnessError(f'{path}:{number}: a JSONL prompt line is an object with a "prompt" field') from None
        else:
            prompts.append(line.replace("\\n", "\n"))
    if not prompts:
        raise HarnessError(f"{path}: no prompts in the file")
    return prompts
