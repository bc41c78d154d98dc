"""Faults without an engine: memory limits on real process trees, the locks between runs, row
writes on a real full disk, a hung server process. The engine-backed faults (a vLLM cell out of
memory, a crashing or hanging engine, a taken port, a full cache disk, kill -9, two runs at
once) are in tests/integration/test_faults.py."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import psutil
import pytest

from harness import cell_lock, matrix
from harness.config import ServingSpec, WorkloadSpec, load_config
from harness.engines.base import Engine, EngineRequest, EvalModelRequest, ServerLaunch
from harness.engines.vllm import VllmParams
from harness.isolation import GIB, run_isolated
from harness.results import store as results
from harness.stages import quantize as artifacts
from harness.stages.base import StageStop
from harness.stages.serving import stage as serving

# ---------------------------------------------------------------- memory limit (harness.isolation)


def _allocate(megabytes: int, seconds: float) -> int:
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(seconds)
    return len(block)


def _allocate_in_grandchild(megabytes: int) -> int:
    """The memory is held by a grandchild (as vLLM's engine core holds the model): the tree counts."""
    code = f"b = bytearray({megabytes} * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code])
    child.wait()
    return child.returncode


def test_memory_limit_kills_the_tree_and_says_why(tmp_path: Path) -> None:
    start = time.monotonic()
    outcome = run_isolated(
        _allocate, (700, 30.0), tmp_path / "log.txt", timeout_s=120, memory_limit_bytes=int(0.3 * GIB)
    )
    assert not outcome.ok and outcome.out_of_memory and not outcome.timed_out
    assert re.fullmatch(r"out of memory: peak \d+\.\d\d GiB > limit 0\.30 GiB", outcome.error), outcome.error
    assert outcome.peak_rss_bytes > 0.3 * GIB
    assert time.monotonic() - start < 25  # killed when over, not at the end of its 30 s sleep
    assert "out of memory" in (tmp_path / "log.txt").read_text()


def test_memory_limit_counts_grandchildren(tmp_path: Path) -> None:
    before = {p.pid for p in psutil.process_iter()}
    outcome = run_isolated(
        _allocate_in_grandchild, (600,), tmp_path / "log.txt", timeout_s=120, memory_limit_bytes=int(0.4 * GIB)
    )
    assert outcome.out_of_memory, outcome.error
    time.sleep(0.5)
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.pid not in before and "bytearray(600" in " ".join(p.info["cmdline"] or [])
    ]
    assert not left, "the grandchild survived its tree's kill"


def test_under_the_limit_nothing_happens(tmp_path: Path) -> None:
    outcome = run_isolated(_allocate, (50, 0.5), tmp_path / "log.txt", timeout_s=60, memory_limit_bytes=2 * GIB)
    assert outcome.ok and outcome.value == 50 * 2**20 and not outcome.out_of_memory


# ---------------------------------------------------------------- config and keys

KEYS_CONFIG = """
name: keys
model: {source: builtin:smollm2-135m}
formats: [bf16, fp8-dynamic, {name: w4a16-gptq, group_size: 64}, gguf-q8_0]
calibration: [{name: code, source: builtin:code, samples: 16, seq_len: 128}]
workload: {prompts: 4, input_len: 32, output_len: 16}
engine: [{name: vllm, max_model_len: 128, timeout_s: 600, kv_cache_dtype: [auto, fp8]LIMIT},
         {name: transformers}, {name: llamacpp}]
serving: {concurrency: [1, 2], requests: 4, port: 8123}
QUANTIZE
"""
# Computed before memory_limit_gib existed (same identity and versions): finished rows keep their keys.
KEYS_BEFORE = {
    "bf16/vllm/kv-auto": "b0d01505280503ab",
    "bf16/vllm/kv-fp8": "26a66c0ef1bb9dc5",
    "bf16/transformers/kv-auto": "b9fdeba47fe49bd6",
    "fp8-dynamic/vllm/kv-auto": "ed179630d96a2431",
    "fp8-dynamic/vllm/kv-fp8": "4066367c52b4bce3",
    "fp8-dynamic/transformers/kv-auto": "40cc63dc92d5ff90",
    "w4a16-gptq/code/vllm/kv-auto": "678fd7ea25a219b6",
    "w4a16-gptq/code/vllm/kv-fp8": "126b438638c60af5",
    "w4a16-gptq/code/transformers/kv-auto": "4da9e55adf380574",
    "gguf-q8_0/llamacpp/kv-auto": "a7f9a3fdba8b36b0",
}


def _keys(tmp_path: Path, limit: str, quantize: str) -> dict[str, str]:
    path = tmp_path / f"keys{len(limit)}{len(quantize)}.yaml"
    path.write_text(KEYS_CONFIG.replace("LIMIT", limit).replace("QUANTIZE", quantize))
    return {
        c.name: c.key("builtin:test@1", {"llmcompressor": "0.14.0.1"}, "engine==1")
        for c in matrix.expand(load_config(path))
    }


def test_memory_limits_are_not_part_of_any_key(tmp_path: Path) -> None:
    assert _keys(tmp_path, "", "") == KEYS_BEFORE
    assert _keys(tmp_path, ", memory_limit_gib: 0.5", "quantize: {memory_limit_gib: 2}") == KEYS_BEFORE


def test_memory_limit_must_be_positive(tmp_path: Path, cli: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nmodel: {source: builtin:smollm2-135m}\nformats: [bf16]\nengine: {name: vllm, memory_limit_gib: 0}\n"
    )
    done = cli("validate", str(path))
    assert (
        done.returncode == 2 and "engine.memory_limit_gib" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    )


# ---------------------------------------------------------------- locks (harness.cell_lock)


def _hold_lock(path: str, ready: Any, release: Any) -> None:
    with cell_lock.FileLock(Path(path)):
        ready.set()
        release.wait(60)


@contextmanager
def _held_elsewhere(path: Path) -> Iterator[None]:
    """The lock held by another process, as another harness run would hold it."""
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(path), ready, release))
    proc.start()
    assert ready.wait(30)
    try:
        yield
    finally:
        release.set()
        proc.join(30)


def test_a_cell_another_run_holds_comes_last(tmp_path: Path) -> None:
    order = []
    waits = []
    with _held_elsewhere(tmp_path / "locks" / "k2.lock"):
        turns = cell_lock.in_turn(
            tmp_path,
            [("c1", "k1"), ("c2", "k2"), ("c3", "k3")],
            on_wait=lambda item, key, who: waits.append((item, who)),
        )
        for item, key in turns:
            order.append(item)
            if item == "c3":
                break  # c2 is still held elsewhere: don't wait for it here
    assert order == ["c1", "c3"]
    # once the other run let go, the deferred cell is taken (waited for) after the others
    order = [item for item, _ in cell_lock.in_turn(tmp_path, [("c1", "k1"), ("c2", "k2")])]
    assert order == ["c1", "c2"]


def test_a_held_cell_is_waited_for_after_the_others(tmp_path: Path) -> None:
    """No cell is waited for first (baselines included): relative figures come after the cells."""
    lock = tmp_path / "locks" / "base.lock"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(lock), ready, release))
    proc.start()
    assert ready.wait(30)
    waits: list[str] = []

    def on_wait(item: str, key: str, holder: str) -> None:
        waits.append(f"{item} by {holder}")
        release.set()  # the other run finishes while we wait

    order = [item for item, _ in cell_lock.in_turn(tmp_path, [("base", "base"), ("q", "q")], on_wait=on_wait)]
    proc.join(30)
    assert order == ["q", "base"]
    assert waits and f"pid {proc.pid}" in waits[0]


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from harness.cell_lock import FileLock
        FileLock(Path({str(tmp_path / "k.lock")!r})).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, check=False)
    lock = cell_lock.FileLock(tmp_path / "k.lock")
    assert lock.acquire(wait=False)  # a kill -9 leaves no cell locked
    lock.release()


def _row(key: str, status: str = "ok", name: str | None = None) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return {"cell_key": key, "cell_name": name or key, "status": status, "started_at": now, "finished_at": now}


def _write_rows(out_dir: str, prefix: str, count: int) -> None:
    for i in range(count):
        results.write_row(Path(out_dir), _row(f"{prefix}{i:02d}"))


def test_concurrent_writers_lose_no_row(tmp_path: Path) -> None:
    """Four processes write 12 rows each into one directory at once: every merge is whole, and
    the last one holds all 48 rows."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_write_rows, args=(str(tmp_path), f"p{n}-", 12)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    frame = pd.read_parquet(tmp_path / "results.parquet")
    assert len(frame) == 48 and frame["cell_key"].is_unique
    assert not [p for p in (tmp_path / "rows").iterdir() if not p.name.endswith(".parquet")]  # no temporary file left


def test_row_status_sees_rows_written_during_the_run(tmp_path: Path) -> None:
    since = datetime.now(timezone.utc)
    assert results.row_status(tmp_path, "k") is None
    results.write_row(tmp_path, _row("k", "failed"))
    assert results.row_status(tmp_path, "k") is None  # a failed row from an earlier run: computed again
    assert results.row_status(tmp_path, "k", since) == "failed"  # one a concurrent run just wrote: not repeated
    results.write_row(tmp_path, _row("k", "ok"))
    assert results.row_status(tmp_path, "k") == "ok"


# ---------------------------------------------------------------- a real full disk (tmpfs)


def fill(directory: Path, leave_bytes: int = 0) -> None:
    """Fill the file system of `directory` up to `leave_bytes` free."""
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    try:
        with open(directory / "filler", "ab") as filler:
            filler.write(b"\0" * max(0, free - leave_bytes))
    except OSError:
        pass


@contextmanager
def full_tmpfs(path: Path, size: str = "1m", full: bool = True) -> Iterator[Path]:
    """A small tmpfs at `path` (filled up). Needs root (CI on this machine kind runs as root)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs to make a full disk here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}"
        )
    try:
        if full:
            fill(path)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_row_on_a_full_disk_stops_the_run_with_one_line(tmp_path: Path) -> None:
    results.write_row(tmp_path, _row("before"))
    with full_tmpfs(tmp_path / "rows"):
        with pytest.raises(results.ResultsWriteError) as caught:
            results.write_row(tmp_path, _row("k", name="bf16/transformers/kv-auto"))
        message = str(caught.value)
        assert "\n" not in message and caught.value.exit_code == 74
        assert message.startswith("cannot write the row of cell bf16/transformers/kv-auto (ok) to ")
        assert "[Errno 28] No space left on device" in message
        assert sorted(p.name for p in (tmp_path / "rows").iterdir()) == ["filler"]  # no half-written row
    assert list(pd.read_parquet(tmp_path / "results.parquet")["cell_key"]) == ["before"]  # the merged table is intact


def test_a_full_disk_under_the_merged_table_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with full_tmpfs(out, full=False):
        results.write_row(out, _row("a"))
        row_bytes = (out / "rows" / "a.parquet").stat().st_size
        fill(out, leave_bytes=row_bytes + 8192)  # room for the next row file, not for the merged table
        with pytest.raises(results.ResultsWriteError) as caught:
            results.write_row(out, _row("b"))
        assert "the row of cell b is saved in" in str(caught.value) and "No space left on device" in str(caught.value)
        assert (out / "rows" / "b.parquet").is_file()
        assert list(pd.read_parquet(out / "results.parquet")["cell_key"]) == ["a"]  # the old merge, whole
        assert not [p for p in out.rglob(".*") if p.is_file() and p.suffix == ".tmp"]
        (out / "filler").unlink()  # space again: the next run's start brings the merged table up to date
        results.merge_if_stale(out)
        assert sorted(pd.read_parquet(out / "results.parquet")["cell_key"]) == ["a", "b"]


# ---------------------------------------------------------------- staging directories (harness.artifacts)


def test_stale_staging_is_removed_but_not_a_build_in_progress(tmp_path: Path) -> None:
    directory = tmp_path / "artifacts"
    stale = directory / ".0123456789abcdef.k1l2m3n4"
    busy = directory / ".fedcba9876543210.a1b2c3d4"
    for staging in (stale, busy):
        staging.mkdir(parents=True)
        (staging / "model.safetensors").write_bytes(b"half")
    (directory / "0123456789abcdef").mkdir()  # an entry without its metadata file is never reused
    assert artifacts.cached(tmp_path, "0123456789abcdef") is None
    with _held_elsewhere(directory / artifacts.LOCKS / "fedcba9876543210.lock"):
        removed = artifacts.remove_stale_staging(directory)
    assert removed == [stale] and busy.is_dir() and not stale.exists()
    # the key being built by the caller (it holds that lock itself): its leftovers go too
    mine = directory / ".fedcba9876543210.z9y8x7w6"
    mine.mkdir()
    with cell_lock.FileLock(directory / artifacts.LOCKS / "fedcba9876543210.lock"):
        assert sorted(artifacts.remove_stale_staging(directory, holding="fedcba9876543210")) == sorted([busy, mine])


# ---------------------------------------------------------------- a hung server (harness.serving)

HUNG_SERVER = """
import http.server, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # healthy
        self.send_response(200); self.end_headers(); self.wfile.write(b"{}")
    def do_POST(self):  # takes the request, never answers
        time.sleep(3600)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class _HungServerEngine(Engine[VllmParams]):
    """A server that answers its health check and hangs on every request: what a deadlocked
    engine looks like from outside."""

    name = "hung"
    params_model = VllmParams
    has_server = True

    def __init__(self, script: Path) -> None:
        self.script = script

    def version(self) -> str:
        return "hung==0"

    def settings(self, request: EngineRequest) -> dict[str, Any]:
        return {}

    def start(self, request: EngineRequest) -> Any:
        raise NotImplementedError

    def server(self, request: EngineRequest, port: int, slots: int = 1) -> ServerLaunch:
        return ServerLaunch([sys.executable, str(self.script), str(port)], {}, "/health", "m", False, {})

    def lm_eval_model(self, request: EvalModelRequest) -> Any:
        raise NotImplementedError


def test_a_hung_server_fails_the_stage_after_the_request_timeout(tmp_path: Path, smollm2_dir: Path) -> None:
    script = tmp_path / "hung.py"
    script.write_text(HUNG_SERVER)
    request = EngineRequest(smollm2_dir, "bfloat16", VllmParams(name="vllm"), "cpu", 64)
    spec = ServingSpec(concurrency=[1, 4], requests=2, request_timeout_s=3, warmup_requests=1)
    start = time.monotonic()
    with pytest.raises(StageStop) as caught:
        serving.measure(
            _HungServerEngine(script),
            request,
            spec,
            WorkloadSpec(prompts=2, input_len=8, output_len=4),
            smollm2_dir,
            tmp_path / "server.log",
        )
    took = time.monotonic() - start
    assert (
        caught.value.reason
        == "serve under load: warm-up: no answer within serving.request_timeout_s = 3 s (server hung)"
    )
    assert took < 30, took  # one timeout, not one per request and point
    time.sleep(0.5)
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(script) in " ".join(p.info["cmdline"] or [])]


def test_a_taken_port_names_the_port(tmp_path: Path, smollm2_dir: Path) -> None:
    script = tmp_path / "hung.py"
    script.write_text(HUNG_SERVER)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        request = EngineRequest(smollm2_dir, "bfloat16", VllmParams(name="vllm"), "cpu", 64)
        spec = ServingSpec(concurrency=[1], requests=2, port=port)
        with pytest.raises(StageStop) as caught:
            serving.measure(
                _HungServerEngine(script),
                request,
                spec,
                WorkloadSpec(prompts=2, input_len=8, output_len=4),
                smollm2_dir,
                tmp_path / "server.log",
            )
    assert f"port {port} on 127.0.0.1 is already taken" in str(caught.value)
    assert json.loads(caught.value.columns["serving_slo"]) is not None
