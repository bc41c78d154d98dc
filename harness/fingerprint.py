"""Identities of local inputs for cell keys: a key must change when what decides a result changes
(an edited calibration file, retrained weights at the same size, a new tokenizer) and not when it
is only named differently (./calib.txt vs its absolute path)."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

#: weight files are too large to read for a key: their name, size, mtime and inode identify them
#: (rewriting one in place changes its mtime, replacing it its inode)
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def content_identity(source: str) -> str | None:
    """For a local file or glob: "content:<sha256>" over its matches' contents in order (their
    paths resolved, so ./calib.txt and its absolute path are the same source, and an edited file
    is a new one). None for builtin:, hf: and other non-file sources."""
    if source.startswith(("builtin:", "hf:")):
        return None
    matches = sorted({str(Path(m).resolve()) for m in glob.glob(str(Path(source).expanduser()), recursive=True)})
    files = [Path(m) for m in matches if Path(m).is_file()]
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(bytes.fromhex(file_sha256(path)))
    return f"content:{digest.hexdigest()[:32]}"


def model_directory(directory: Path) -> str:
    """A local model directory: every file's content (config, tokenizer, chat template, ...),
    except weight files, which are identified by name, size, mtime and inode."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if path.suffix in WEIGHT_SUFFIXES:
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}\n".encode())
        else:
            digest.update(f"{name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def files_sha256(directory: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file under `directory` (relative name → SHA-256), but those named in `skip`."""
    return {
        path.relative_to(directory).as_posix(): file_sha256(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name not in skip
    }
