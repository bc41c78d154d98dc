"""An lm-eval model over llama.cpp's Python bindings, so GGUF cells are scored by lm-eval's
own tasks and metrics with llama.cpp computing every token (lm-eval's `gguf` backend needs a
running llama.cpp server; this needs none)."""

from __future__ import annotations

from typing import Any

import numpy as np
from lm_eval.api.model import LM


class LlamaCppLM(LM):
    def __init__(
        self, model_path: str, n_ctx: int, n_threads: int, n_batch: int = 512, n_gpu_layers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        from llama_cpp import Llama

        self.n_ctx = n_ctx
        self.llm = Llama(
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_batch=n_batch,
            n_gpu_layers=n_gpu_layers,
            seed=seed,
            logits_all=True,
            verbose=True,
        )

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        answers = []
        for request in requests:
            context, kwargs = request.args
            max_tokens = int(kwargs.get("max_gen_toks", 256))
            prompt = self.llm.tokenize(context.encode("utf-8"), add_bos=False, special=True)
            prompt = prompt[-(self.n_ctx - max_tokens) :]
            done = self.llm.create_completion(
                prompt, max_tokens=max_tokens, temperature=0.0, top_k=1, stop=list(kwargs.get("until") or [])
            )
            answers.append(done["choices"][0]["text"])
        return answers

    def window_logprobs(self, tokens: list[int]) -> np.ndarray:
        """(len(tokens), vocab) log-probabilities of the next token after each position."""
        self.llm.reset()
        self.llm.eval(tokens)
        logits = np.array(self.llm.scores[: len(tokens)], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Sum of log p(token | previous tokens) over the whole text, in windows of n_ctx."""
        totals = []
        for request in requests:
            (text,) = request.args
            # End-of-text before the text: its first token is scored too, as lm-eval's hf backend does.
            tokens = [self.llm.token_eos()] + self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
            total = 0.0
            for start in range(0, len(tokens) - 1, self.n_ctx - 1):
                window = tokens[start : start + self.n_ctx]
                logprobs = self.window_logprobs(window)
                total += float(sum(logprobs[i, t] for i, t in enumerate(window[1:])))
            totals.append(total)
        return totals

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "multiple-choice scoring through llama.cpp is not wired; use generation or perplexity tasks"
        )
