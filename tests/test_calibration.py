"""Calibration samples: deterministic, exact length, disjoint from evaluation text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config import CalibrationSpec
from harness.errors import HarnessError
from harness.stages.calibration import build_samples, builtin_documents


def spec(**kw) -> CalibrationSpec:
    base = {"name": "c", "source": "builtin:code", "samples": 4, "seq_len": 64, "seed": 0}
    return CalibrationSpec(**{**base, **kw})


@pytest.mark.parametrize("source", ["builtin:code", "builtin:prose"])
def test_builtin_samples_are_deterministic_and_exact(tokenizer, source: str) -> None:
    first = build_samples(spec(source=source), tokenizer)
    second = build_samples(spec(source=source), tokenizer)
    assert first.token_ids == second.token_ids
    assert len(first.token_ids) == 4 and all(len(s) == 64 for s in first.token_ids)
    assert first.domain == source.split(":")[1]


def test_seed_changes_samples(tokenizer) -> None:
    assert build_samples(spec(seed=0), tokenizer).token_ids != build_samples(spec(seed=1), tokenizer).token_ids


@pytest.mark.parametrize("kind", ["code", "prose"])
def test_calibration_and_evaluation_parts_are_disjoint(kind: str) -> None:
    calib = {d.name for d in builtin_documents(kind, "calibration")}
    held_out = {d.name for d in builtin_documents(kind, "evaluation")}
    assert calib and held_out
    assert not calib & held_out
    assert 0.1 < len(held_out) / (len(calib) + len(held_out)) < 0.3


def test_code_samples_look_like_python(tokenizer) -> None:
    text = "".join(tokenizer.decode(s) for s in build_samples(spec(samples=32), tokenizer).token_ids)
    assert any(word in text for word in ("def ", "import ", "class ", "return", "self"))


def test_local_jsonl_and_txt(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"body": f"record {i} " * 50}) for i in range(5)))
    (tmp_path / "b.txt").write_text("plain text document " * 100)
    from_jsonl = build_samples(spec(source=str(tmp_path / "a.jsonl"), column="body", samples=2, seq_len=32), tokenizer)
    assert "record" in tokenizer.decode(from_jsonl.token_ids[0])
    from_glob = build_samples(spec(source=str(tmp_path / "*"), column="body", samples=4, seq_len=32), tokenizer)
    assert from_glob.domain == "custom" and len(from_glob.token_ids) == 4


def test_missing_column_is_a_user_error(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"content": "x"}))
    with pytest.raises(HarnessError, match="column 'text'"):
        build_samples(spec(source=str(tmp_path / "a.jsonl"), samples=1, seq_len=8), tokenizer)


def test_too_little_text_is_a_user_error(tmp_path: Path, tokenizer) -> None:
    (tmp_path / "a.txt").write_text("short")
    with pytest.raises(HarnessError, match="gives only"):
        build_samples(spec(source=str(tmp_path / "a.txt"), samples=2, seq_len=64), tokenizer)


def test_unreachable_hub_dataset_is_a_user_error(tokenizer, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match="cannot read hf:allenai/c4"):
        build_samples(spec(source="hf:allenai/c4", subset="en", samples=1, seq_len=8), tokenizer)
