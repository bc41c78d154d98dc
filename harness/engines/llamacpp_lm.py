"""An lm-eval model over llama.cpp's Python bindings, so GGUF cells are scored by lm-eval's
own tasks and metrics with llama.cpp computing every token (lm-eval's `gguf` backend needs a
running llama.cpp server; this needs none).

The protocol is lm-eval's hf and vllm backends': a rolling log-likelihood is conditioned on the
model's BOS token (EOS only where the vocabulary has no BOS: lm-eval's `prefix_token_id`), and
text is tokenized without special tokens unless `add_bos_token` is set."""

from __future__ import annotations

from typing import Any

import numpy as np
from lm_eval.api.model import LM


class LlamaCppLM(LM):
    def __init__(
        self,
        model_path: str,
        n_ctx: int,
        n_threads: int,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        seed: int = 0,
        flash_attn: bool = False,
        add_bos_token: bool | None = None,
    ) -> None:
        super().__init__()
        from llama_cpp import Llama

        self.n_ctx = n_ctx
        self.add_bos = bool(add_bos_token)  # lm-eval's backends default to False for causal models
        self.llm = Llama(
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_batch=n_batch,
            n_gpu_layers=n_gpu_layers,
            seed=seed,
            flash_attn=flash_attn,
            logits_all=True,
            verbose=True,
        )

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        answers = []
        for request in requests:
            context, kwargs = request.args
            max_tokens = int(kwargs.get("max_gen_toks", 256))
            prompt = self.llm.tokenize(context.encode("utf-8"), add_bos=self.add_bos, special=True)
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

    @property
    def prefix_token_id(self) -> int:
        """What a rolling log-likelihood is conditioned on: BOS, else EOS (as lm-eval's backends)."""
        bos = int(self.llm.token_bos())
        return bos if bos >= 0 else int(self.llm.token_eos())

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Sum of log p(token | previous tokens) over the whole text, in lm-eval's own rolling
        windows (lm_eval.utils, as its vllm backend calls them: every window after the first is
        conditioned on the tokens before it, up to the context length)."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        totals = []
        for request in requests:
            (text,) = request.args
            text_tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=self.add_bos, special=False)
            windows = get_rolling_token_windows(
                token_list=text_tokens, prefix_token=self.prefix_token_id, max_seq_len=self.n_ctx - 2, context_len=1
            )
            total = 0.0
            for context, continuation in map(make_disjoint_window, windows):
                logprobs = self.window_logprobs((context + continuation)[:-1])
                offset = len(context) - 1  # the row that predicts the continuation's first token
                total += float(sum(logprobs[offset + i, t] for i, t in enumerate(continuation)))
            totals.append(total)
        return totals

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        raise NotImplementedError(
            "multiple-choice scoring through llama.cpp is not wired; use generation or perplexity tasks"
        )
