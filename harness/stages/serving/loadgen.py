"""A streaming OpenAI-compatible client load: per-request TTFT, TPOT, ITL and end-to-end
latency at a fixed concurrency or under Poisson arrivals, as vLLM's `vllm bench serve` measures
them (first chunk = first token; an ITL per chunk; TPOT over the tokens after the first;
percentiles by numpy).

Tokens are counted as vLLM's client counts them: from the usage the server streams last
(`stream_options: {include_usage: true}`), never from chunks, since a server may merge several
tokens into one chunk (an API server lagging its engine, speculative decoding) or end with an
empty chunk that only carries the finish reason. Only a server that streams no usage at all
(llama-cpp-python's) is counted one token per non-empty chunk. Poisson arrivals are drawn as
vLLM draws them: exponential gaps rescaled so the last request goes out at N / rate, each sent
at its absolute time (no drift, no trailing sleep)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.config import SloSpec

PERCENTILES = (50, 90, 99)
METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass(frozen=True)
class LoadRequest:
    prompt: list[int] | str
    max_tokens: int
    input_tokens: int  # by the source model's tokenizer (servers that stream no usage don't say)


@dataclass
class RequestResult:
    ok: bool
    error: str | None = None
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    e2el_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    text: str = ""  # the answer as streamed (the output checks compare it)

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.output_tokens < 2 or self.ttft_s is None or self.e2el_s is None:
            return None
        return (self.e2el_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class Target:
    base_url: str
    model: str
    extra_body: dict[str, Any]
    timeout_s: float


async def _one(session: Any, target: Target, request: LoadRequest) -> RequestResult:
    import aiohttp

    body = {
        "model": target.model,
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "min_tokens": request.max_tokens,  # exactly max_tokens: the length is the workload's, not the model's
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **target.extra_body,
    }
    result = RequestResult(ok=False)
    chunks = 0
    start = time.perf_counter()
    last = start
    try:
        async with session.post(target.base_url + "/v1/completions", json=body) as answer:
            if answer.status != 200:
                result.error = f"HTTP {answer.status}: {(await answer.text())[:300]}"
                return result
            async for raw in answer.content:
                line = raw.decode("utf-8", errors="replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                payload = json.loads(data)
                now = time.perf_counter()
                choice = (payload.get("choices") or [None])[0]
                # A token chunk: text, or no finish yet (a token may decode to ""); llama.cpp ends
                # with an empty chunk that only carries the finish reason.
                if choice is not None:
                    result.text += choice.get("text") or ""
                if choice is not None and (choice.get("text") or choice.get("finish_reason") is None):
                    if result.ttft_s is None:
                        result.ttft_s = now - start
                    else:
                        result.itl_s.append(now - last)
                    last = now
                    chunks += 1
                usage = payload.get("usage")
                if usage:
                    result.input_tokens = int(usage.get("prompt_tokens") or 0)
                    result.output_tokens = int(usage.get("completion_tokens") or 0)
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        return result
    result.e2el_s = time.perf_counter() - start
    if not result.output_tokens:  # a server that streams no usage (llama-cpp-python): one token per chunk
        result.output_tokens = chunks
        result.input_tokens = request.input_tokens
    if result.output_tokens < request.max_tokens:
        result.error = f"the stream ended after {result.output_tokens} of {request.max_tokens} tokens"
        return result
    result.ok = True
    return result


async def _drive(
    target: Target, requests: list[LoadRequest], concurrency: int | None, rate: float | None, seed: int
) -> tuple[list[RequestResult], float]:
    import aiohttp

    limit = asyncio.Semaphore(concurrency) if concurrency else None
    rng = np.random.default_rng(seed)
    timeout = aiohttp.ClientTimeout(total=target.timeout_s)

    # A connection per request (force_close): reusing keep-alive connections, 1 request of 96 at
    # concurrency 4 failed against llama-server ("Can not write request body": its HTTP library
    # had closed the pooled connection), 0 of 96 with this. A loopback connect is ~0.1 ms of TTFT.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def bounded(request: LoadRequest) -> RequestResult:
            if limit is None:
                return await _one(session, target, request)
            async with limit:
                return await _one(session, target, request)

        send_at = arrival_times(len(requests), rate, rng)
        start = time.perf_counter()
        tasks = []
        for request, due in zip(requests, send_at):
            wait = start + due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(bounded(request)))
        results = await asyncio.gather(*tasks)
        return list(results), time.perf_counter() - start


def arrival_times(count: int, rate: float | None, rng: np.random.Generator) -> list[float]:
    """Seconds after the start at which each request is sent: all at once without a rate, else a
    Poisson process rescaled so that the last request goes out at count / rate (vLLM's rule)."""
    if rate is None or count == 0:
        return [0.0] * count
    times = np.cumsum(rng.exponential(1.0 / rate, size=count))
    return [float(t) for t in times * ((count / rate) / times[-1])]


def _stats(name: str, values_s: list[float]) -> dict[str, float | None]:
    if not values_s:
        return {f"{name}_mean_ms": None, **{f"{name}_p{p}_ms": None for p in PERCENTILES}}
    ms = np.asarray(values_s) * 1000.0
    return {
        f"{name}_mean_ms": float(ms.mean()),
        **{f"{name}_p{p}_ms": float(np.percentile(ms, p)) for p in PERCENTILES},
    }


def request_record(result: RequestResult) -> dict[str, Any]:
    """What the SLO is judged on, kept per request in each point (`per_request`): the SLO is
    not part of a cell's key, so a changed SLO re-derives goodput from these (harness.stages.
    serving.slo) instead of measuring again. TPOT of a one-token answer counts as 0."""

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else seconds * 1000.0

    tpot = result.tpot_s if result.output_tokens > 1 else 0.0
    return {"ok": result.ok, "ttft_ms": ms(result.ttft_s), "tpot_ms": ms(tpot), "e2el_ms": ms(result.e2el_s)}


def meets_slo(record: dict[str, Any], slo: SloSpec) -> bool:
    """Whether one request_record met every threshold the SLO sets."""
    if not record["ok"]:
        return False
    checks = ((slo.ttft_ms, record["ttft_ms"]), (slo.tpot_ms, record["tpot_ms"]), (slo.e2el_ms, record["e2el_ms"]))
    return all(limit is None or (value is not None and value <= limit) for limit, value in checks)


def slo_columns(records: list[dict[str, Any]], duration_s: float, slo: SloSpec) -> dict[str, float | None]:
    """A point's goodput and SLO attainment, from its per-request records."""
    good = sum(meets_slo(record, slo) for record in records)
    return {
        "goodput_rps": good / duration_s if duration_s > 0 else None,
        "slo_attained_pct": 100.0 * good / len(records) if records else None,
    }


def summarize(
    results: list[RequestResult], duration_s: float, slo: SloSpec, concurrency: int | None, rate: float | None
) -> dict[str, Any]:
    """One sweep point, in the results schema's SERVING_POINT layout."""
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    output_tokens = sum(r.output_tokens for r in done)
    input_tokens = sum(r.input_tokens for r in done)
    records = [request_record(r) for r in results]
    point: dict[str, Any] = {
        "mode": "rate" if rate is not None else "concurrency",
        "concurrency": concurrency,
        "request_rate": rate,
        "requests": len(results),
        "completed": len(done),
        "failed": len(failed),
        "duration_s": duration_s,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "request_throughput": len(done) / duration_s if duration_s > 0 else None,
        "output_tok_s": output_tokens / duration_s if duration_s > 0 else None,
        "total_tok_s": (input_tokens + output_tokens) / duration_s if duration_s > 0 else None,
        **slo_columns(records, duration_s, slo),
        "error": failed[0].error if failed else None,
        "per_request": records,
    }
    point.update(_stats("ttft", [r.ttft_s for r in done if r.ttft_s is not None]))
    point.update(_stats("tpot", [t for r in done if (t := r.tpot_s) is not None]))
    point.update(_stats("itl", [gap for r in done for gap in r.itl_s]))
    point.update(_stats("e2el", [r.e2el_s for r in done if r.e2el_s is not None]))
    return point


def run_point(
    target: Target,
    requests: list[LoadRequest],
    slo: SloSpec,
    concurrency: int | None = None,
    rate: float | None = None,
    seed: int = 0,
    inspect: Callable[[list[RequestResult]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Send every request (at most `concurrency` in flight, or arriving as a Poisson process of
    `rate` per second) and summarize; `inspect` adds its entries from the requests' results (the
    output checks)."""
    results, duration = asyncio.run(_drive(target, requests, concurrency, rate, seed))
    point = summarize(results, duration, slo, concurrency, rate)
    if inspect is not None:
        point.update(inspect(results))
    return point


def warm_up(target: Target, requests: list[LoadRequest]) -> None:
    """First requests pay one-off costs (allocations, kernel selection): not part of a point."""
    if requests:
        asyncio.run(_drive(target, requests, 1, None, 0))
