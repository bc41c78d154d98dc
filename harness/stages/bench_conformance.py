"""Is the harness's offline tok/s vLLM's own? The same work measured both ways on one loaded
engine, in alternating pairs: the harness's measurement (VllmSession.generate, what every cell's
offline figure comes from) and `vllm bench throughput`'s own request loop
(vllm.benchmarks.throughput._run_vllm_requests, what its `run_vllm` calls once it has built the
LLM): the same prompt token ids, the same sampling (the benchmark's: temperature 1, top-p 1, end
of sequence ignored), the same output lengths, one shared warm-up. One engine for both takes its
load out of the comparison; its settings are the cell's (VllmEngine.settings).

On a small CPU host one run's tok/s moves by several percent from run to run, more than the band
is wide, so the figure is the geometric mean of the pairs' ratios with its 95 % interval, and the
verdict says whether that interval is inside the band (conforms), outside it (deviates), or
across an edge (inconclusive: more pairs would tell). Run in an isolated process."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from harness.engines.base import EngineRequest
from harness.engines.vllm import VllmEngine, VllmSession

#: the band a conforming measurement stays in: harness tok/s over vLLM's benchmark's, both ways
BAND = (0.98, 1.02)
Verdict = Literal["conforms", "deviates", "inconclusive"]
#: an interval no wider than this (high / low) shows a deviation past a band of ±2-3 %
PRECISE_WIDTH = 1.12


@dataclass(frozen=True)
class Conformance:
    """Paired measurements of one figure, the harness's against the reference tool's."""

    harness_tok_s: list[float]  # each pair's harness figure (here: total tok/s)
    vllm_tok_s: list[float]  # and the reference's
    band: tuple[float, float] = BAND
    reference: str = "vllm bench throughput"

    def _log_ratios(self) -> list[float]:
        return [math.log(ours / theirs) for ours, theirs in zip(self.harness_tok_s, self.vllm_tok_s)]

    @property
    def ratio(self) -> float:
        """Harness / vLLM's benchmark: the geometric mean of the pairs' ratios."""
        return math.exp(statistics.fmean(self._log_ratios()))

    @property
    def interval(self) -> tuple[float, float]:
        """95 % interval of the ratio (Student's t over the pairs' log-ratios)."""
        from scipy import stats

        logs = self._log_ratios()
        half = stats.t.ppf(0.975, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
        centre = statistics.fmean(logs)
        return math.exp(centre - half), math.exp(centre + half)

    @property
    def width(self) -> float:
        """High / low of the interval: how much the host's noise leaves undecided."""
        low, high = self.interval
        return high / low

    @property
    def verdict(self) -> Verdict:
        low, high = self.interval
        if self.band[0] <= low and high <= self.band[1]:
            return "conforms"
        if high < self.band[0] or low > self.band[1]:
            return "deviates"
        return "inconclusive"

    def line(self) -> str:
        low, high = self.interval
        return (
            f"harness / {self.reference} = {self.ratio:.3f} (95 % interval {low:.3f}-{high:.3f}, "
            f"{len(self.harness_tok_s)} pairs; band {self.band[0]}-{self.band[1]}): {self.verdict}"
        )


def wants_more_pairs(figures: Iterable[Conformance], done: int, pairs: int, max_pairs: int | None) -> bool:
    """The stopping rule of a sequential fixed-width interval (Chow-Robbins): at least `pairs` (2 or
    more: the figures' intervals are read only past them), then more while any figure's interval is
    wider than PRECISE_WIDTH, up to `max_pairs` (None: `pairs`), stopping only after an even count so
    that neither side went first more often. The rule reads the width, never the verdict, so extra
    pairs cannot shop for a pass; they only make a deviation visible."""
    if done < pairs:
        return True
    if done >= (max_pairs or pairs):
        return False
    return done % 2 == 1 or any(figure.width >= PRECISE_WIDTH for figure in figures)


def _vllm_bench_tok_s(llm: Any, prompts: list[list[int]], output_len: int) -> float:
    from vllm.benchmarks.datasets import SampleRequest
    from vllm.benchmarks.throughput import _run_vllm_requests

    requests = [
        SampleRequest(prompt={"prompt_token_ids": p}, prompt_len=len(p), expected_output_len=output_len)
        for p in prompts
    ]
    elapsed, outputs = _run_vllm_requests(
        llm, requests, n=1, disable_detokenize=False, do_profile=False, prequeue_requests=False, enable_lora=False
    )
    tokens = sum(len(p) for p in prompts) + sum(len(o.outputs[0].token_ids) for o in outputs or [])
    return tokens / elapsed


def measure(
    request: EngineRequest, prompts: list[list[int]], output_len: int, pairs: int, max_pairs: int | None = None
) -> Conformance:
    """`pairs` alternating pairs, and more up to `max_pairs` while the interval is too wide to decide
    (wants_more_pairs)."""
    ours: list[float] = []
    theirs: list[float] = []
    with VllmEngine().start(request) as session:
        assert isinstance(session, VllmSession)
        session.generate(prompts[:1], 4)  # the warm-up every cell's measurement does, shared
        session.generate(prompts, output_len)  # and one of the measured size: the first of a process runs slow
        pair = 0
        while wants_more_pairs([Conformance(ours, theirs)], pair, pairs, max_pairs):
            for side in ("ours", "theirs") if pair % 2 == 0 else ("theirs", "ours"):  # neither always goes first
                if side == "ours":
                    done = session.generate(prompts, output_len)
                    ours.append((done.input_tokens + done.output_tokens) / done.seconds)
                else:
                    theirs.append(_vllm_bench_tok_s(session.llm, prompts, output_len))
            pair += 1
    return Conformance(ours, theirs)
