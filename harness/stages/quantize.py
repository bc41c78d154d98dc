"""The quantize stage: build a format's checkpoint once per artifact key, cache it, reuse it.

A checkpoint is written into a temporary directory beside the cache entry and renamed
into place only when complete, so a killed run never leaves half an artifact to reuse: a
cache entry counts only with its metadata file, written last, and the staging directories a
killed run left behind (`.<key>.<random>`) are never read, only removed by the next build
(a staging directory is stale when nobody holds its key's lock, `artifacts/.locks/<key>.lock`:
two runs never build the same artifact at once, the second one waits and reuses it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from harness import fingerprint, formats
from harness.cell_lock import FileLock
from harness.config import QuantizeSpec
from harness.errors import HarnessError
from harness.formats.base import Format, QuantizeRequest
from harness.isolation import StageOutcome, memory_limit_bytes, run_isolated
from harness.stages.base import StageStop

META_FILE = "harness-artifact.json"
LOCKS = ".locks"
_STAGING = re.compile(r"^\.([0-9a-f]{16})\.[A-Za-z0-9_]+$")  # tempfile.mkdtemp(prefix=".KEY.")
_NO_SPACE = ("No space left on device", "[Errno 28]", "os error 28", "ENOSPC")
_FULL_BELOW = 16 * 2**20  # free bytes under which a failed build's file system counts as full


@dataclass(frozen=True)
class Artifact:
    key: str
    path: Path
    bytes: int
    quantize_s: float | None  # None for a baseline (nothing was built)
    peak_rss_bytes: int | None
    peak_gpu_bytes: int | None
    reused: bool

    def columns(self, parameters: int) -> dict[str, Any]:
        return {
            "artifact_key": self.key,
            "artifact_path": str(self.path),
            "artifact_bytes": self.bytes,
            "bits_per_weight": 8 * self.bytes / parameters if parameters else None,
            "artifact_reused": self.reused,
            "scheme": describe_scheme(self.path),
            "quantize_s": self.quantize_s,
            "quantize_peak_rss_bytes": self.peak_rss_bytes,
            "quantize_peak_gpu_bytes": self.peak_gpu_bytes,
        }


def checkpoint_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf"))


def _quantize_child(fmt: Format[Any], request: QuantizeRequest) -> float:
    """Runs in an isolated process; returns the quantization wall time. The format object is
    handed over (not looked up again in the child's registry): any registered format runs."""
    start = time.perf_counter()
    fmt.quantize(request)
    return time.perf_counter() - start


def existing(model_dir: Path, key: str) -> Artifact:
    """A checkpoint served as it is (a baseline, or a user's pre-quantized model)."""
    return Artifact(key, model_dir, checkpoint_bytes(model_dir), None, None, None, reused=True)


def cached(cache_dir: Path, key: str, verify: bool = True) -> Artifact | None:
    """The cached build of `key`, or None. verify: its files are checked against the SHA-256s
    recorded when it was built; an entry that differs (changed after the build) is moved to
    artifacts/quarantine/ with a warning and counts as absent, so the cell builds it again."""
    path = cache_dir / "artifacts" / key
    meta = path / META_FILE
    if not meta.is_file():
        return None
    data = json.loads(meta.read_text())
    if verify and "files" in data:  # entries built before hashes were recorded are trusted as they are
        found = fingerprint.files_sha256(path, skip=(META_FILE,))
        if found != data["files"]:
            changed = sorted(set(found.items()) ^ set(data["files"].items()))
            quarantine = cache_dir / "artifacts" / "quarantine" / f"{key}.{int(time.time())}"
            quarantine.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, quarantine)
            print(
                f"warning: the cached artifact {key} changed after it was built ({changed[0][0]}); "
                f"moved to {quarantine} and built again",
                file=sys.stderr,
            )
            return None
    return Artifact(
        key, path, data["bytes"], data["quantize_s"], data["peak_rss_bytes"], data["peak_gpu_bytes"], reused=True
    )


def obtain(
    fmt: Format[Any],
    request: QuantizeRequest,
    key: str,
    cache_dir: Path,
    spec: QuantizeSpec,
    log_path: Path,
    calibrate: Callable[[], list[list[int]] | None],
    on_stage: Callable[[str], None],
) -> Artifact:
    """The cell's artifact: the checkpoint itself (a baseline, a prequantized model), the cached
    build, or a new build (calibrate, then quantize). Raises StageStop when it cannot be had."""
    existing_dir = fmt.existing_checkpoint(request.params, request.model_dir)
    if existing_dir is not None:
        return existing(existing_dir, key)
    found = cached(cache_dir, key)
    if found is not None:
        return found
    try:
        samples = calibrate()  # None for a data-free format
    except HarnessError as exc:
        raise StageStop("failed", str(exc), "calibrate") from exc
    on_stage("quantize")
    artifact, outcome = build(
        cache_dir, key, replace(request, samples=samples), log_path, spec.timeout_s, spec.memory_limit_gib
    )
    if artifact is None:
        peaks = {"quantize_peak_rss_bytes": outcome.peak_rss_bytes, "quantize_peak_gpu_bytes": outcome.peak_gpu_bytes}
        raise StageStop("failed", f"quantize: {outcome.error}", "quantize", peaks)
    return artifact


def build(
    cache_dir: Path,
    key: str,
    request: QuantizeRequest,
    log_path: Path,
    timeout_s: float,
    memory_limit_gib: float | None = None,
) -> tuple[Artifact | None, StageOutcome]:
    """Quantize into a temporary directory in an isolated process; rename it into the cache
    when complete. request.out_dir is replaced by that temporary directory. Held under the
    key's lock: a run that finds another building the same artifact waits, then reuses it.
    A failure (the stage's error, out of memory, a full disk) comes back as (None, outcome)."""
    target = cache_dir / "artifacts" / key
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(target.parent / LOCKS / f"{key}.lock")
        lock.acquire()
    except OSError as exc:
        return None, _failed(f"cannot create the artifact cache {target.parent}: {exc}")
    try:
        done = cached(cache_dir, key)
        if done is not None:  # another run built it while this one waited for the lock
            return done, StageOutcome(
                done.quantize_s, None, None, done.peak_rss_bytes or 0, done.peak_gpu_bytes, 0.0, False
            )
        remove_stale_staging(target.parent, holding=key)
        return _build_locked(target, key, request, log_path, timeout_s, memory_limit_gib)
    finally:
        lock.release()


def _build_locked(
    target: Path, key: str, request: QuantizeRequest, log_path: Path, timeout_s: float, memory_limit_gib: float | None
) -> tuple[Artifact | None, StageOutcome]:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
    except OSError as exc:
        return None, _failed(_no_space_reason(target.parent, str(exc)))
    outcome: StageOutcome | None = None
    try:
        outcome = run_isolated(
            _quantize_child,
            (formats.get(request.params.name), replace(request, out_dir=staging)),
            log_path,
            timeout_s,
            memory_limit_bytes(memory_limit_gib),
        )
        if not outcome.ok:
            for kept, copy in _keep_logs(
                staging, log_path
            ):  # the error names the copy, not the staging file that goes now
                outcome = replace(outcome, error=(outcome.error or "").replace(str(kept), str(copy)))
            if not (outcome.out_of_memory or outcome.timed_out) and _says_no_space(outcome.error or "", staging):
                outcome = replace(outcome, error=_no_space_reason(target.parent, outcome.error or ""))
            return None, outcome
        artifact = Artifact(
            key,
            target,
            checkpoint_bytes(staging),
            outcome.value,
            outcome.peak_rss_bytes,
            outcome.peak_gpu_bytes,
            reused=False,
        )
        meta = {k: v for k, v in asdict(artifact).items() if k not in ("path", "reused")}
        meta["files"] = fingerprint.files_sha256(staging)  # checked on every use (cached)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))  # last: the entry counts only with it
        os.chmod(staging, 0o755)
        if target.exists():  # an entry without metadata: a build that a run without locks left
            shutil.rmtree(target)
        os.replace(staging, target)
        return Artifact(**{**asdict(artifact), "path": target}), outcome
    except OSError as exc:  # the harness's own writes (metadata, rename) on a full or read-only disk
        error = (
            _no_space_reason(target.parent, f"writing the artifact: {exc}")
            if _says_no_space(str(exc), None)
            else f"writing the artifact: {exc}"
        )
        base = outcome or _failed(error)
        return None, replace(base, value=None, error=error)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(artifacts_dir: Path, holding: str | None = None) -> list[Path]:
    """Remove the staging directories that killed builds left: those whose key's lock nobody
    holds, and those of `holding`, the key whose lock the caller holds (before it stages its own)."""
    removed = []
    for entry in artifacts_dir.iterdir() if artifacts_dir.is_dir() else ():
        match = _STAGING.match(entry.name)
        if not match or not entry.is_dir():
            continue
        if match.group(1) == holding:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
            continue
        lock = FileLock(artifacts_dir / LOCKS / f"{match.group(1)}.lock")
        try:
            if not lock.acquire(wait=False):
                continue  # being built right now
        except OSError:
            continue
        try:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        finally:
            lock.release()
    return removed


def _failed(error: str) -> StageOutcome:
    return StageOutcome(None, error, None, 0, None, 0.0, False)


def _says_no_space(error: str, staging: Path | None) -> bool:
    """The stage failed on a full disk: its error or the tail of a log it left in the staging
    directory says so, or the staging directory's file system is full right now (a tool whose
    log is on that disk could not even write why it failed: llama.cpp's converter)."""
    if staging is not None:
        try:
            if shutil.disk_usage(staging).free < _FULL_BELOW:
                return True
        except OSError:
            pass
    texts = [error]
    for log in sorted(staging.glob("*.log")) if staging is not None else ():
        try:
            with log.open("rb") as handle:
                handle.seek(max(0, log.stat().st_size - 8192))
                texts.append(handle.read().decode(errors="replace"))
        except OSError:
            continue
    return any(mark in text for text in texts for mark in _NO_SPACE)


def _no_space_reason(directory: Path, error: str) -> str:
    try:
        usage = shutil.disk_usage(directory)
        where = (
            f"{directory} (a {usage.total / 2**20:.0f} MiB file system, "
            f"{usage.free / 2**20:.0f} MiB free after the failed write)"
        )
    except OSError:
        where = str(directory)
    return f"no space left on device writing the artifact to {where}: {error}"


def _keep_logs(staging: Path, log_path: Path) -> list[tuple[Path, Path]]:
    """Copy the logs a failed build wrote into its staging directory beside the stage's log."""
    kept = []
    for log in sorted(staging.glob("*.log")):
        copy = log_path.with_name(f"{log_path.stem}-{log.name}")
        try:
            shutil.copyfile(log, copy)
            kept.append((log, copy))
        except OSError:
            pass
    return kept


def describe_scheme(directory: Path) -> str | None:
    """What the checkpoint itself says its quantization is (config.json quantization_config)."""
    if (directory / "model.gguf").is_file():
        return _describe_gguf(directory / "model.gguf")
    config = directory / "config.json"
    if not config.is_file():
        return None
    quant = json.loads(config.read_text()).get("quantization_config")
    if not quant:
        return None
    parts = []
    for name, group in sorted((quant.get("config_groups") or {}).items()):
        for role in ("weights", "input_activations"):
            args = group.get(role)
            if not args:
                continue
            text = f"{role.split('_')[0]} {args.get('type')}{args.get('num_bits')} {args.get('strategy')}"
            if args.get("group_size"):
                text += f" {args['group_size']}"
            text += " sym" if args.get("symmetric") else " asym"
            if args.get("dynamic"):
                text += " dynamic"
            parts.append(text)
    if quant.get("kv_cache_scheme"):
        parts.append(f"kv {quant['kv_cache_scheme'].get('type')}{quant['kv_cache_scheme'].get('num_bits')}")
    return f"{quant.get('format') or quant.get('quant_method')}: " + "; ".join(parts)


def _describe_gguf(path: Path) -> str:
    """The tensor types inside a GGUF file, most frequent first (K-quant fallbacks show here)."""
    from collections import Counter

    from gguf import GGUFReader

    counts = Counter(tensor.tensor_type.name for tensor in GGUFReader(path).tensors)
    return "gguf: " + ", ".join(f"{kind} x{n}" for kind, n in counts.most_common())
