"""Evaluation data is verified on every use: a changed copy is written again from its source, a
source that is not the pinned one is refused (issue 14: a program that rewrote humaneval.jsonl
made every later model score 1.0)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.stages.evaluate import data


def _spec(text: str) -> data.PackagedFile:
    return data.PackagedFile("pkg", "1.0", "member", "MIT", hashlib.sha256(text.encode()).hexdigest())


def test_a_tampered_copy_is_written_again_from_its_source(tmp_path: Path) -> None:
    good = '{"task_id": "HumanEval/0", "test": "assert candidate(1) == 2"}\n'
    path = tmp_path / "humaneval.jsonl"
    builds: list[int] = []

    def build() -> str:
        builds.append(1)
        return good

    assert data._verified_packaged(path, _spec(good), build).read_text() == good
    assert data._verified_packaged(path, _spec(good), build).read_text() == good
    assert len(builds) == 1  # a verified copy is used as it is
    path.write_text('{"task_id": "HumanEval/0", "test": "pass"}\n')  # every completion would pass
    assert data._verified_packaged(path, _spec(good), build).read_text() == good
    assert len(builds) == 2


def test_a_source_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="not the pinned"):
        data._verified_packaged(tmp_path / "x.jsonl", _spec("pinned\n"), lambda: "other\n")
    assert not (tmp_path / "x.jsonl").exists()


def test_the_held_out_prose_is_checked_against_what_it_is_made_from(tmp_path: Path) -> None:
    path = data.heldout_prose_file(tmp_path)
    made = path.read_bytes()
    path.write_text('{"name": "x", "text": "short"}\n')
    assert data.heldout_prose_file(tmp_path).read_bytes() == made


def test_the_pins_are_those_of_the_cached_data(tmp_path: Path) -> None:
    """The pinned digests are those of the files the harness writes (where this machine has them)."""
    from harness.stages import models

    cached = models.default_cache_dir() / "data"
    checked = 0
    for name, spec in (("humaneval.jsonl", data.HUMANEVAL), ("math500.jsonl", data.MMATH)):
        if (cached / name).is_file():
            assert hashlib.sha256((cached / name).read_bytes()).hexdigest() == spec.sha256, name
            checked += 1
    if not checked:
        pytest.skip("no evaluation data fetched on this machine yet")
