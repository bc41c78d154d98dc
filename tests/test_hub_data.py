"""issue 14: a hub calibration set is pinned to a commit (its key changes when the dataset does)
and read from the copy `harness fetch` keeps, so a run without the hub reads the same text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest
from transformers import AutoTokenizer

from harness import matrix
from harness.config import CalibrationSpec, load_config
from harness.errors import HarnessError
from harness.stages import calibration, hub_data

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # tests never reach the hub


def _dataset(path: Path, documents: int = 60) -> Path:
    path.mkdir()
    with (path / "train.jsonl").open("w") as out:
        for i in range(documents):
            out.write(json.dumps({"text": f"document {i}: " + " ".join(f"w{i * j % 97}" for j in range(80))}) + "\n")
    return path


def test_without_the_hub_and_without_a_fetched_copy_the_run_is_told_to_fetch(tmp_path: Path) -> None:
    spec = CalibrationSpec(name="web", source="hf:org/data")
    with pytest.raises(HarnessError, match=r"calibration web: cannot resolve hf:org/data@main .*harness fetch CONFIG"):
        hub_data.pin(spec, tmp_path)


def test_a_revision_fetched_before_is_pinned_without_the_hub(tmp_path: Path) -> None:
    spec = CalibrationSpec(name="web", source="hf:org/data", revision="v2")
    hub_data.remember(spec, tmp_path, "v2", COMMIT)  # what an online pin records
    assert hub_data.pin(spec, tmp_path).revision == COMMIT
    assert hub_data.pin(spec.model_copy(update={"revision": COMMIT}), tmp_path).revision == COMMIT


def test_the_fetched_copy_is_what_calibration_reads(tmp_path: Path, smollm2_dir: Path) -> None:
    source = _dataset(tmp_path / "data")
    spec = CalibrationSpec(name="web", source=f"hf:{source}", revision=COMMIT, samples=4, seq_len=64)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    cache = tmp_path / "cache"
    path = hub_data.fetch(spec, cache, calibration.hub_chars(spec))
    assert path.is_file() and 0 < len(path.read_text().splitlines()) < 60  # what the calibration needs, not all
    streamed = calibration.build_samples(spec, tokenizer)  # straight from the source
    shutil.rmtree(source)  # the hub is gone
    kept = calibration.build_samples(spec, tokenizer, cache)
    assert kept.token_ids == streamed.token_ids
    with pytest.raises(HarnessError, match="cannot read"):
        calibration.build_samples(spec, tokenizer)  # without the copy: nothing to read


def test_the_pinned_commit_is_in_the_artifact_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: c\nmodel: {source: builtin:smollm2-135m}\nformats: [{name: w4a16-gptq, group_size: 64}]\n"
        "calibration: [{name: web, source: 'hf:org/data'}]\n"
    )
    (cell,) = matrix.expand(load_config(path))
    assert cell.calibration is not None
    pinned = [cell.calibration.model_copy(update={"revision": c}) for c in (COMMIT, "f" * 40)]
    keys = [matrix.Cell(cell.format, spec, cell.engine, cell.workload).artifact_key("m", {}) for spec in pinned]
    assert len(set(keys)) == 2 and cell.artifact_key("m", {}) not in keys


def test_harness_fetch_downloads_what_a_run_reads(tmp_path: Path, cli: Any, smollm2_dir: Path) -> None:
    (tmp_path / "org").mkdir()
    _dataset(tmp_path / "org" / "data")  # load_dataset reads a directory of that name before the hub
    source = "org/data"
    config = tmp_path / "fetch.yaml"
    config.write_text(
        f"name: f\nmodel: {{source: builtin:smollm2-135m}}\ncache_dir: {smollm2_dir.parent.parent}\n"
        "formats: [{name: w4a16-gptq, group_size: 64}]\n"
        f"calibration: [{{name: web, source: 'hf:{source}', revision: {COMMIT}, samples: 4, seq_len: 64}}]\n"
    )
    done = cli("fetch", str(config), cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "model builtin:smollm2-135m:" in done.stderr
    assert f"calibration web: hf:{source}@{COMMIT} in " in done.stderr
