"""Calibration sources → deterministic tokenized samples.

Sources: `builtin:code` (the Python standard library's .py files), `builtin:prose`
(the language-reference prose in the standard library's pydoc_data), local files
(.txt/.md/.rst/.py as documents, .jsonl/.json with a text column, globs), and hub
datasets (`hf:ORG/NAME`, streamed) for users with the internet.

Builtin texts are split once, by a hash of each document's name, into a calibration
part (80 %) and an evaluation part (20 %), so quality is never measured on text the
quantizer saw. See calib/README.md.
"""

from __future__ import annotations

import glob
import hashlib
import json
import random
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config import CalibrationSpec
from harness.errors import HarnessError
from harness.stages import hub_data

Part = Literal["calibration", "evaluation"]
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "turtledemo", "lib2to3"}


@dataclass(frozen=True)
class Document:
    name: str
    text: str


@dataclass(frozen=True)
class CalibrationSamples:
    name: str
    domain: str
    source: str
    seq_len: int
    token_ids: list[list[int]]


def in_part(name: str, part: Part) -> bool:
    """Stable 80/20 split by document name: 1 in 5 documents is held out for evaluation."""
    held_out = hashlib.sha1(name.encode()).digest()[0] % 5 == 0
    return held_out if part == "evaluation" else not held_out


def builtin_documents(kind: str, part: Part) -> Iterator[Document]:
    if kind == "code":
        root = Path(sysconfig.get_paths()["stdlib"])
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if _SKIP_DIRS.intersection(rel.parts) or not in_part(str(rel), part):
                continue
            try:
                yield Document(str(rel), path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, OSError):
                continue
    elif kind == "prose":
        from pydoc_data.topics import topics

        for key in sorted(topics):
            if in_part(key, part):
                yield Document(key, topics[key])
    else:
        raise HarnessError(f"unknown builtin text {kind!r}; builtins: code, prose")


def file_documents(pattern: str, column: str) -> Iterator[Document]:
    for name in sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True)):
        path = Path(name)
        if not path.is_file():
            continue
        if path.suffix == ".jsonl":
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    yield Document(f"{path}:{i + 1}", _text_of(json.loads(line), column, path, i + 1))
        elif path.suffix == ".json":
            records = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(records, list):
                raise HarnessError(f"{path}: a .json calibration file holds a list of records or strings")
            for i, record in enumerate(records):
                yield Document(f"{path}[{i}]", _text_of(record, column, path, i))
        else:
            yield Document(str(path), path.read_text(encoding="utf-8"))


def _text_of(record: Any, column: str, path: Path, where: int) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict) and isinstance(record.get(column), str):
        return record[column]
    raise HarnessError(f"{path}: record {where} has no text column {column!r}; set the calibration set's 'column'")


def hub_chars(spec: CalibrationSpec) -> int:
    """Characters of a hub dataset's text a calibration reads (then shuffles and tokenizes)."""
    return spec.samples * spec.seq_len * 8


def hub_documents(spec: CalibrationSpec, cache_dir: Path | None) -> Iterator[Document]:
    try:
        for i, record in enumerate(hub_data.records(spec, cache_dir)):
            yield Document(f"{spec.source}#{i}", _text_of(record, spec.column, Path(spec.source), i))
    except HarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, missing split or column: the user's to fix
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(
            f"calibration {spec.name}: cannot read {spec.source} ({first}); check the name, split and network"
        ) from None


def documents(spec: CalibrationSpec, cache_dir: Path | None = None) -> Iterator[Document]:
    """cache_dir: where `harness fetch` keeps hub datasets (read before the hub is asked)."""
    if spec.source.startswith("builtin:"):
        return builtin_documents(spec.source.split(":", 1)[1], "calibration")
    if spec.source.startswith("hf:"):
        return hub_documents(spec, cache_dir)
    return file_documents(spec.source, spec.column)


def build_samples(spec: CalibrationSpec, tokenizer: Any, cache_dir: Path | None = None) -> CalibrationSamples:
    """Shuffle documents with the seed, pack their tokens (EOS between documents) and cut
    them into `samples` windows of exactly `seq_len` tokens."""
    docs = documents(spec, cache_dir)
    if spec.source.startswith("hf:"):
        ordered: list[Document] = []
        for doc in docs:  # a stream: take enough, in order, then shuffle those
            ordered.append(doc)
            if sum(len(d.text) for d in ordered) > hub_chars(spec):
                break
    else:
        ordered = list(docs)
    random.Random(spec.seed).shuffle(ordered)
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    buffer: list[int] = []
    samples: list[list[int]] = []
    for doc in ordered:
        buffer.extend(tokenizer(doc.text, add_special_tokens=False)["input_ids"] + separator)
        while len(buffer) >= spec.seq_len and len(samples) < spec.samples:
            samples.append(buffer[: spec.seq_len])
            buffer = buffer[spec.seq_len :]
        if len(samples) == spec.samples:
            break
    if len(samples) < spec.samples:
        raise HarnessError(
            f"calibration {spec.name}: {spec.source} gives only {len(samples)} samples of {spec.seq_len} tokens "
            f"(asked for {spec.samples}); add text or lower samples/seq_len"
        )
    return CalibrationSamples(spec.name, spec.resolved_domain, spec.source, spec.seq_len, samples)


def samples_for(
    spec: CalibrationSpec, model_dir: Path, cache: dict[str, CalibrationSamples], cache_dir: Path | None = None
) -> CalibrationSamples:
    """The set's samples, tokenized by the model's tokenizer, built once per run (`cache`)."""
    if spec.name not in cache:
        from transformers import AutoTokenizer

        cache[spec.name] = build_samples(spec, AutoTokenizer.from_pretrained(model_dir), cache_dir)
    return cache[spec.name]
