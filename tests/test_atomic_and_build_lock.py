"""Atomic writes (harness.atomic) and the model-directory build lock (issue 14: two runs on a
fresh cache both converted the builtin model and the second crashed at the rename)."""

from __future__ import annotations

import multiprocessing as mp
import time
from functools import partial
from pathlib import Path

import pytest

from harness.atomic import write_atomically, write_text_atomically
from harness.stages import models


def test_a_failed_write_keeps_the_old_content_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "rows" / "cell.parquet"
    write_text_atomically(target, "old")

    def broken(handle) -> None:  # noqa: ANN001
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken)
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["cell.parquet"]


def slow_build(log: str, out_dir: Path) -> None:
    """A model directory that takes a second to build; each build leaves a line in `log`."""
    with open(log, "a") as handle:
        handle.write("built\n")
    time.sleep(1.0)
    (out_dir / "config.json").write_text("{}")


def _build(target: str, log: str) -> None:
    models._build_model_dir(Path(target), "build", partial(slow_build, log), 60, "building failed")


def test_two_runs_on_a_fresh_cache_build_a_model_once(tmp_path: Path) -> None:
    target, log = tmp_path / "models" / "m", tmp_path / "builds.log"
    ctx = mp.get_context("spawn")
    runs = [ctx.Process(target=_build, args=(str(target), str(log))) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(120)
    assert [run.exitcode for run in runs] == [0, 0]
    assert log.read_text() == "built\n"  # the second waited for the first's build and used it
    assert (target / "config.json").is_file()


def test_a_cached_artifact_changed_after_its_build_is_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """issue 14: cached artifacts could be changed (by code with the harness's rights) and were
    reused as they were; each file's SHA-256 is recorded at the build and checked on use."""
    from harness import formats
    from harness.formats.base import QuantizeRequest
    from harness.params import FormatParams
    from harness.stages import quantize
    from tests.test_plugins import Int3

    monkeypatch.setitem(formats.REGISTRY, Int3.name, Int3())
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    request = QuantizeRequest(model, FormatParams(name=Int3.name), None, 0, tmp_path / "unused", "cpu")
    cache, key = tmp_path / "cache", "0123456789abcdef"
    built, outcome = quantize.build(cache, key, request, tmp_path / "q.log", 120)
    assert built is not None, outcome.error
    assert quantize.cached(cache, key) is not None  # untouched: reused
    (built.path / "weights.bin").write_bytes(b"\1" * 4096)  # same size, other content
    assert quantize.cached(cache, key, verify=False) is not None  # the Ray planner's cheap look
    assert quantize.cached(cache, key) is None
    assert "the cached artifact 0123456789abcdef changed after it was built (weights.bin)" in capsys.readouterr().err
    assert not built.path.exists() and len(list((cache / "artifacts" / "quarantine").iterdir())) == 1
    again, _ = quantize.build(cache, key, request, tmp_path / "q.log", 120)
    assert again is not None and (again.path / "weights.bin").read_bytes() == b"\0" * 4096
