"""The load client against small real HTTP servers (aiohttp) that stream as servers do: several
tokens per chunk, an empty final chunk, usage last; Poisson arrivals at their nominal rate; the
readiness check that accepts only our own server, directly (no proxy).

The servers here are SYNTHETIC stand-ins for an OpenAI-compatible server's streaming format:
they check the client's counting, not any engine's speed."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from harness.config import SloSpec
from harness.stages.serving import loadgen
from harness.stages.serving.server import _healthy, listener_is_ours


@contextmanager
def fake_server(tokens_per_chunk: int, empty_final_chunk: bool, usage: bool) -> Iterator[str]:
    from aiohttp import web

    sent_at: list[float] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        sent_at.append(time.perf_counter())
        total = int(body["max_tokens"])
        answer = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await answer.prepare(request)
        done = 0
        while done < total:
            step = min(tokens_per_chunk, total - done)
            done += step
            last = done == total and not empty_final_chunk
            choice = {"text": "ab" * step, "finish_reason": "length" if last else None}
            await answer.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
            await asyncio.sleep(0.002)
        if empty_final_chunk:
            await answer.write(
                f"data: {json.dumps({'choices': [{'text': '', 'finish_reason': 'length'}]})}\n\n".encode()
            )
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if usage and wants_usage:
            tail = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": total}}
            await answer.write(f"data: {json.dumps(tail)}\n\n".encode())
        await answer.write(b"data: [DONE]\n\n")
        return answer

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def requests(count: int, tokens: int) -> list[loadgen.LoadRequest]:
    return [loadgen.LoadRequest(prompt=[1, 2, 3, 4, 5], max_tokens=tokens, input_tokens=5) for _ in range(count)]


def test_multi_token_chunks_and_an_empty_final_chunk_count_every_token() -> None:
    """4 requests of 8 tokens at concurrency 2, 2 tokens per chunk: all complete with 8 tokens
    each (one token per chunk counted 4 of 8 and failed them all)."""
    with fake_server(tokens_per_chunk=2, empty_final_chunk=True, usage=True) as url:
        target = loadgen.Target(url, "m", {}, timeout_s=30)
        point = loadgen.run_point(target, requests(4, 8), SloSpec(), concurrency=2)
    assert (point["completed"], point["failed"], point["output_tokens"]) == (4, 0, 32), point["error"]
    assert point["tpot_mean_ms"] is not None and point["itl_mean_ms"] is not None


def test_a_server_without_usage_is_counted_by_chunk() -> None:
    with fake_server(tokens_per_chunk=1, empty_final_chunk=True, usage=False) as url:
        point = loadgen.run_point(loadgen.Target(url, "m", {}, timeout_s=30), requests(2, 6), SloSpec(), concurrency=1)
    assert (point["completed"], point["output_tokens"]) == (2, 12)


@contextmanager
def one_request_per_connection_server() -> Iterator[str]:
    """Answers the first request on each connection (keep-alive, no `Connection: close`), and
    closes the connection when a second one arrives on it, unanswered: what an HTTP server does
    to a pooled connection it has already timed out (llama-server's library does after 5 s)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def read_request(conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            piece = conn.recv(65536)
            if not piece:
                return b""
            data += piece
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        while len(body) < length:
            body += conn.recv(65536)
        return body

    def serve(conn: socket.socket) -> None:
        with conn:
            body = read_request(conn)
            if not body:
                return
            total = int(json.loads(body)["max_tokens"])
            events = [{"choices": [{"text": "ab", "finish_reason": None}]} for _ in range(total)]
            events.append({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": total}})
            payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len(payload)}\r\n\r\n"
            conn.sendall(head.encode() + payload)
            read_request(conn)  # the next request on this connection: closed unanswered

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


def test_no_request_goes_out_on_a_connection_the_server_may_have_closed() -> None:
    """Seen with llama-server: 1 request of 96 failed with "Can not write request body" when the
    client reused a keep-alive connection the server had closed. Every request gets its own."""
    with one_request_per_connection_server() as url:
        point = loadgen.run_point(loadgen.Target(url, "m", {}, timeout_s=30), requests(4, 3), SloSpec(), concurrency=1)
    assert (point["completed"], point["failed"], point["output_tokens"]) == (4, 0, 12), point["error"]


def test_poisson_arrivals_offer_the_nominal_rate() -> None:
    """vLLM's rule: the last request goes out at N / rate, so the offered rate is the nominal one
    (the old loop offered 0.71x at 8 req/s with 16 requests)."""
    times = loadgen.arrival_times(16, 8.0, np.random.default_rng(0))
    assert times == sorted(times) and 16 / times[-1] == pytest.approx(8.0, rel=1e-9)
    with fake_server(tokens_per_chunk=1, empty_final_chunk=False, usage=True) as url:
        target = loadgen.Target(url, "m", {}, timeout_s=30)
        start = time.perf_counter()
        point = loadgen.run_point(target, requests(16, 2), SloSpec(), rate=8.0)
        elapsed = time.perf_counter() - start
    assert point["completed"] == 16
    assert 16 / point["duration_s"] == pytest.approx(8.0, rel=0.05)  # the last answers a few ms after its send
    assert elapsed < 16 / 8.0 + 1.0  # no trailing sleep


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_listener() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def test_the_health_check_goes_direct_whatever_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with http_listener() as port:
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert _healthy(f"http://127.0.0.1:{port}/health")


def test_a_foreign_listener_is_not_our_server() -> None:
    """A process that has not bound the port yet (a server still loading) must not be taken for
    ready because someone else answers on it; a child that listens there is ours."""
    with http_listener() as port:
        loading = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert not listener_is_ours(port, loading.pid)
        finally:
            loading.kill()
            loading.wait()
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); time.sleep(30)\n"
    )
    ours = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert ours.stdout is not None
        assert listener_is_ours(int(ours.stdout.readline()), ours.pid)
    finally:
        ours.kill()
        ours.wait()


def test_no_prompt_is_sent_twice_across_sweep_points(smollm2_dir) -> None:  # noqa: ANN001 - a fixture
    """Each point (and the warm-up) gets prompts of its own: a prefix-caching server would
    otherwise find later points' prefills cached (every point once replayed the same prompts)."""
    from harness.config import ServingSpec, WorkloadSpec
    from harness.stages.serving.stage import sweep_prompts

    spec = ServingSpec(concurrency=[1, 4], request_rates=[2.0], requests=8, warmup_requests=2)
    prompts = sweep_prompts(spec, WorkloadSpec(input_len=32, output_len=8), smollm2_dir, False, 3)
    sent = [tuple(r.prompt) for r in prompts.warmup] + [tuple(r.prompt) for point in prompts.points for r in point]
    assert [len(point) for point in prompts.points] == [8, 8, 8] and len(prompts.warmup) == 2
    assert len(set(sent)) == len(sent) == 26
    assert prompts.note.startswith("fresh prompts: 26 distinct")


def test_a_short_prompts_file_says_its_prompts_repeat(smollm2_dir, tmp_path) -> None:  # noqa: ANN001
    from harness.config import ServingSpec, WorkloadSpec
    from harness.stages.serving.stage import sweep_prompts

    (tmp_path / "p.txt").write_text("one prompt\nanother prompt\n")
    spec = ServingSpec(concurrency=[1, 2], requests=2, warmup_requests=1, prompts_file=str(tmp_path / "p.txt"))
    prompts = sweep_prompts(spec, WorkloadSpec(), smollm2_dir, True, 2)
    assert prompts.note.startswith("prompts repeat: 2 distinct prompts for 5 requests")
