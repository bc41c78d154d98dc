"""Hugging Face transformers as a reference engine: it loads every compressed-tensors
checkpoint (decompressing it to dense weights; activation-quantized formats are
fake-quantized in Python), so quality can be measured where vLLM has no kernel.

Its speed is not a serving speed: rows say `speed_class: reference`, and reports never put
its tok/s beside vLLM's or llama.cpp's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Literal

import numpy as np
from pydantic import Field

from harness.engines.base import Engine, EngineRequest, EngineSession, EvalModelRequest, Generation
from harness.params import EngineParams


class TransformersParams(EngineParams):
    name: Literal["transformers"] = "transformers"
    batch_size: int = Field(16, ge=1, le=4096, description="prompts per generate call")


class TransformersSession(EngineSession):
    def __init__(self, model: Any, pad_token_id: int, batch_size: int) -> None:
        self.model = model
        self.pad_token_id = pad_token_id
        self.batch_size = batch_size

    def generate(self, prompts: list[list[int]], max_tokens: int) -> Generation:
        import torch

        start = time.perf_counter()
        out_tokens = 0
        for i in range(0, len(prompts), self.batch_size):
            batch = prompts[i : i + self.batch_size]
            width = max(len(p) for p in batch)
            ids = torch.tensor([[self.pad_token_id] * (width - len(p)) + p for p in batch])  # left padding
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=ids.to(self.model.device),
                    attention_mask=mask.to(self.model.device),
                    max_new_tokens=max_tokens,
                    min_new_tokens=max_tokens,
                    do_sample=False,
                    pad_token_id=self.pad_token_id,
                )
            out_tokens += (output.shape[1] - width) * len(batch)
        seconds = time.perf_counter() - start
        return Generation(len(prompts), sum(len(p) for p in prompts), out_tokens, seconds)


class TransformersEngine(Engine[TransformersParams]):
    name = "transformers"
    params_model = TransformersParams
    speed_class = "reference"
    full_logits = True

    def version(self) -> str:
        return f"transformers=={metadata.version('transformers')}"

    def settings(self, request: EngineRequest) -> dict[str, Any]:
        return {
            "model": str(request.model_dir),
            "dtype": request.dtype,
            "device": request.device,
            "batch_size": self.own(request.spec).batch_size,
        }

    def concurrent_sequences(self, request: EngineRequest, prompts: int) -> int:
        return min(prompts, self.own(request.spec).batch_size)

    @contextmanager
    def start(self, request: EngineRequest) -> Iterator[TransformersSession]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dtype = getattr(torch, request.dtype) if request.dtype != "auto" else "auto"
        model = AutoModelForCausalLM.from_pretrained(
            request.model_dir, dtype=dtype, device_map=request.device if request.device == "cuda" else None
        )
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        try:
            yield TransformersSession(model, pad, self.own(request.spec).batch_size)
        finally:
            del model

    def lm_eval_model(self, request: EvalModelRequest) -> Any:
        """lm-eval's own `hf` backend."""
        from lm_eval.models.huggingface import HFLM

        er = request.engine_request
        return HFLM(
            pretrained=str(er.model_dir),
            dtype=er.dtype,
            batch_size=request.batch_size,
            device=er.device,
            add_bos_token=request.add_bos_token,
        )

    def full_logprobs(self, model: Any, window: list[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            logits = model.model(torch.tensor([window], device=model.model.device)).logits[0, :-1].float()
        result: np.ndarray = torch.log_softmax(logits, dim=-1).cpu().numpy()
        return result
