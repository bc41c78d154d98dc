"""Hub calibration datasets (`hf:ORG/NAME`), pinned and kept: a run resolves each one's revision
(a branch or tag, `main` when none is given) to its commit, which enters the artifact key, so a
dataset updated on the hub is new data; the documents a calibration reads are written once to
the cache (`harness fetch` does it ahead, where the hub is reachable), so runs without the
network (the nightly's run step, HF_HUB_OFFLINE=1) read the same text."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.atomic import write_atomically
from harness.config import CalibrationSpec
from harness.errors import HarnessError

PREFIX = "hf:"
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _store(spec: CalibrationSpec, cache_dir: Path) -> Path:
    what = json.dumps([spec.source, spec.subset, spec.split, spec.column])
    return cache_dir / "calibration" / hashlib.sha256(what.encode()).hexdigest()[:16]


def _manifest(store: Path) -> dict[str, Any]:
    path = store / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {"revisions": {}, "files": {}}


def pin(spec: CalibrationSpec, cache_dir: Path) -> CalibrationSpec:
    """The spec with `revision` set to the commit its hub dataset is at now, or (hub unreachable)
    the commit fetched last for that revision. Other sources are returned as they are."""
    if not spec.source.startswith(PREFIX) or (spec.revision and _COMMIT.fullmatch(spec.revision)):
        return spec
    requested = spec.revision or "main"
    try:
        from huggingface_hub import HfApi

        commit = HfApi().dataset_info(spec.source[len(PREFIX) :], revision=requested).sha
        remember(spec, cache_dir, requested, commit)
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing: the fetched copy may do
        commit = _manifest(_store(spec, cache_dir))["revisions"].get(requested)
        if commit is None:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise HarnessError(
                f"calibration {spec.name}: cannot resolve {spec.source}@{requested} on the hub ({first}) and no copy "
                "was fetched; run `harness fetch CONFIG` where the hub is reachable"
            ) from None
    return spec.model_copy(update={"revision": commit})


def remember(spec: CalibrationSpec, cache_dir: Path, requested: str, commit: str) -> None:
    """Record that `requested` resolved to `commit`, for runs without the hub."""
    store = _store(spec, cache_dir)
    manifest = _manifest(store)
    if manifest["revisions"].get(requested) != commit:
        manifest["revisions"][requested] = commit
        _write_manifest(store, manifest)


def _stream(spec: CalibrationSpec, skip: int) -> Iterator[dict[str, Any]]:
    from datasets import load_dataset

    dataset = load_dataset(
        spec.source[len(PREFIX) :], spec.subset, split=spec.split, streaming=True, revision=spec.revision
    )
    yield from dataset.skip(skip) if skip else dataset


def fetch(spec: CalibrationSpec, cache_dir: Path, chars: int) -> Path:
    """Write the first records of the pinned dataset, at least `chars` characters of text (or all
    of it), to the cache; returns the file. Already there: nothing is downloaded."""
    store = _store(spec, cache_dir)
    path = store / f"{spec.revision}.jsonl"
    manifest = _manifest(store)
    held = manifest["files"].get(path.name)
    if held is not None and (held["complete"] or held["chars"] >= chars):
        return path
    records, total, complete = [], 0, True
    try:
        for record in _stream(spec, 0):
            records.append(record)
            total += len(record.get(spec.column) or "") if isinstance(record, dict) else 0
            if total >= chars:
                complete = False
                break
    except Exception as exc:  # noqa: BLE001 - the user's network, name or split to fix
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarnessError(
            f"calibration {spec.name}: cannot read {spec.source} ({first}); check the name and split"
        ) from None
    text = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
    write_atomically(path, lambda handle: handle.write(text))
    manifest["files"][path.name] = {"chars": total, "complete": complete, "records": len(records)}
    _write_manifest(store, manifest)
    return path


def _write_manifest(store: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    write_atomically(store / "manifest.json", lambda handle: handle.write(text))


def records(spec: CalibrationSpec, cache_dir: Path | None) -> Iterator[dict[str, Any]]:
    """The pinned dataset's records: the fetched ones first, then (when the calibration needs
    more and the fetched copy is not the whole dataset) streamed from the hub after them."""
    fetched = 0
    if cache_dir is not None and spec.revision:
        store = _store(spec, cache_dir)
        held = _manifest(store)["files"].get(f"{spec.revision}.jsonl")
        if held is not None:
            with (store / f"{spec.revision}.jsonl").open(encoding="utf-8") as lines:
                for line in lines:
                    fetched += 1
                    yield json.loads(line)
            if held["complete"]:
                return
    yield from _stream(spec, fetched)
