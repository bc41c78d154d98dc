"""`executor: ray` for real, on a local Ray cluster on this machine (no mocks): three cheap CPU
cells (SmolLM2 GGUF types on llama.cpp, one thread, one CPU per cell, so two run at once on two
cores) run by the local executor and by Ray give the same cells and statuses, each row written
once, by the driver; and Ray workers SIGKILLed mid-cell: once → the cell is retried and ends ok,
twice → a failed row naming the worker's death, while the other cells finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import psutil
import pytest

from harness.config import load_config
from harness.executors.ray import ATTEMPTS_LOG
from harness.results import store as results
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CONFIG = """
name: it-ray
model: {source: builtin:smollm2-135m}
formats: [gguf-q8_0, gguf-q4_k_m, gguf-q5_k_m]
workload: {prompts: 2, input_len: 16, output_len: OUTPUT_LEN}
engine: {name: llamacpp, max_model_len: 256, threads: 1, timeout_s: 300}
ray: {num_cpus_per_cell: 1}
"""
CELLS = ("gguf-q8_0/llamacpp/kv-auto", "gguf-q4_k_m/llamacpp/kv-auto", "gguf-q5_k_m/llamacpp/kv-auto")


def _write(work: Path, name: str, output_len: int = 8, extra: str = "") -> Path:
    path = work / name
    path.write_text(CONFIG.replace("OUTPUT_LEN", str(output_len)) + extra)
    return path


def _frame(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "results.parquet").set_index("cell_name")


def _attempts(out: Path, key: str) -> list[tuple[str, int]]:
    """(host, pid) of each attempt at a cell, from its executor log."""
    log = out / "logs" / key / ATTEMPTS_LOG
    lines = log.read_text().splitlines() if log.is_file() else []
    return [(line.split(" attempt on ")[1].split(" pid ")[0], int(line.rsplit(" pid ", 1)[1])) for line in lines]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> dict:
    """The same config run by the local executor, then by Ray in this process (the driver),
    with every results.write_row call noted (the process that made it, the cell)."""
    import ray

    from harness import pipeline

    work = tmp_path_factory.mktemp("ray")
    config = _write(work, "it-ray.yaml")
    timings: dict[str, float] = {}
    start = time.monotonic()
    pipeline.run(load_config(config, output=work / "local"))
    timings["local"] = time.monotonic() - start

    writes: list[tuple[int, str]] = []
    original = results.write_row

    def noting(out_dir: Path, row: dict):
        writes.append((os.getpid(), row["cell_key"]))
        return original(out_dir, row)

    with warnings.catch_warnings():  # a tip about a future Ray default for num_gpus=0 tasks
        warnings.simplefilter("ignore", FutureWarning)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the local cluster; the run connects to it
    results.write_row = noting
    try:
        start = time.monotonic()
        on_ray = load_config(config, output=work / "ray").model_copy(update={"executor": "ray"})
        pipeline.run(on_ray)
        timings["ray"] = time.monotonic() - start
    finally:
        results.write_row = original
        ray.shutdown()
    print(f"\nwall: local {timings['local']:.1f} s, ray {timings['ray']:.1f} s (3 cells, 2 CPUs)")
    return {"work": work, "local": work / "local", "ray": work / "ray", "writes": writes, "timings": timings}


def test_ray_gives_the_same_cells_and_statuses_as_local(both: dict) -> None:
    local, on_ray = _frame(both["local"]), _frame(both["ray"])
    assert sorted(local.index) == sorted(on_ray.index) == sorted(CELLS)
    assert (local["cell_key"] == on_ray.loc[local.index, "cell_key"]).all()  # the executor is in no key
    assert (on_ray["status"] == "ok").all(), on_ray["reason"].to_dict()
    assert (local["status"] == on_ray.loc[local.index, "status"]).all()
    assert (on_ray["output_tokens"] == 2 * 8).all() and (on_ray["output_tok_s"] > 0).all()
    assert (local["scheme"] == on_ray.loc[local.index, "scheme"]).all()
    assert all(json.loads(s)["n_threads"] == 1 for s in on_ray["engine_settings"])


def test_every_cell_has_one_row_written_by_the_driver(both: dict) -> None:
    out = both["ray"]
    assert len(list((out / "rows").glob("*.parquet"))) == 3
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 3 and frame["cell_key"].is_unique
    writes = both["writes"]
    assert sorted(key for _, key in writes) == sorted(frame["cell_key"])  # each row written once ...
    assert {pid for pid, _ in writes} == {os.getpid()}  # ... by the driver
    for key in frame["cell_key"]:  # while the cell ran in a Ray worker, once
        (attempt,) = _attempts(out, key)
        assert attempt[1] != os.getpid()


def test_cells_ran_side_by_side(both: dict) -> None:
    """Two CPUs, one per cell: the first two cells overlapped in time."""
    frame = _frame(both["ray"]).sort_values("started_at")
    first, second = frame.iloc[0], frame.iloc[1]
    assert second["started_at"] < first["finished_at"]


# --- workers killed mid-cell -------------------------------------------------------------


def _running_cell(pid: int) -> str | None:
    """The cell a Ray worker is running now (Ray titles it `ray::harness-cell NAME`), else None."""
    try:
        title = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return None
    return title.split("ray::harness-cell ", 1)[1].strip() if "ray::harness-cell " in title else None


def _mid_stage(pid: int, out: Path, key: str) -> list[psutil.Process]:
    """The worker's children once one of them holds a stage log of the cell open (the isolated
    stage is past its start-up: it dies with the worker); else []."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            if any(Path(f.path).parent == out / "logs" / key and f.path.endswith(".log") for f in child.open_files()):
                return children
        except psutil.Error:
            continue
    return []


@pytest.fixture(scope="module")
def killed(both: dict) -> dict:
    """A CLI run with `--executor ray` (it starts its own local cluster): the worker of the first
    cell is SIGKILLed once mid-cell, that of the second cell twice; the third is left alone."""
    work = both["work"]
    config = _write(work, "it-ray-killed.yaml", output_len=48)  # a cell long enough to be caught mid-stage
    out = work / "killed"
    plan = {CELLS[0]: 1, CELLS[1]: 2}
    killed: dict[str, list[int]] = {name: [] for name in plan}
    orphans: list[psutil.Process] = []
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", str(config), "--output", str(out), "--executor", "ray"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            for log in (out / "logs").glob(f"*/{ATTEMPTS_LOG}"):
                key = log.parent.name
                for _, pid in _attempts(out, key):
                    name = _running_cell(pid)
                    if name not in plan or pid in killed[name] or len(killed[name]) >= plan[name]:
                        continue
                    children = _mid_stage(pid, out, key)
                    if children:
                        os.kill(pid, signal.SIGKILL)
                        killed[name].append(pid)
                        orphans.extend(children)
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.communicate()[0]
    wall = time.monotonic() - start
    time.sleep(2)
    alive = [p.pid for p in orphans if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    print(f"\nkilled run: {wall:.1f} s; killed {killed}")
    return {"out": out, "returncode": proc.returncode, "output": output, "killed": killed, "alive": alive, "wall": wall}


def test_a_cell_whose_worker_is_killed_once_is_retried_and_ends_ok(killed: dict) -> None:
    assert killed["returncode"] == 0, killed["output"][-3000:]
    assert len(killed["killed"][CELLS[0]]) == 1
    row = _frame(killed["out"]).loc[CELLS[0]]
    assert row["status"] == "ok", row["reason"]
    attempts = _attempts(killed["out"], row["cell_key"])
    assert len(attempts) == 2 and attempts[0][1] == killed["killed"][CELLS[0]][0] and attempts[1][1] != attempts[0][1]
    assert f"ray: {CELLS[0]} ran 2 times" in killed["output"]


def test_a_cell_whose_worker_is_killed_twice_is_a_failed_row_saying_why(killed: dict) -> None:
    assert len(killed["killed"][CELLS[1]]) == 2
    row = _frame(killed["out"]).loc[CELLS[1]]
    assert row["status"] == "failed" and row["failed_stage"] == "executor"
    assert "worker died (2 attempts; max_retries 1)" in row["reason"] and "WorkerCrashedError" in row["reason"]
    assert [pid for _, pid in _attempts(killed["out"], row["cell_key"])] == killed["killed"][CELLS[1]]


def test_the_other_cells_finish_and_nothing_is_left_running(killed: dict) -> None:
    frame = _frame(killed["out"])
    assert sorted(frame.index) == sorted(CELLS) and frame["cell_key"].is_unique
    assert frame.loc[CELLS[2], "status"] == "ok"
    assert len(_attempts(killed["out"], frame.loc[CELLS[2], "cell_key"])) == 1
    assert killed["alive"] == []  # the killed workers' stage processes died with them
