"""llama.cpp's own tools, as the harness gets them: the llama-cpp-python package (built from
source by scripts/setup: the PyPI release ships only an sdist) gives the bindings and
`llama_model_quantize`; the HF → GGUF converter is `convert_hf_to_gguf.py` from the same
sdist's vendored llama.cpp, unpacked by scripts/setup into the harness's tools directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from harness.errors import HarnessError
from harness.isolation import dies_with_this_process

LLAMA_CPP_PYTHON = "llama-cpp-python"


def tools_dir() -> Path:
    """Where scripts/setup unpacked llama.cpp's converter (override: HARNESS_LLAMACPP_DIR)."""
    default = Path(sys.prefix) / "share" / "harness" / "llama.cpp"
    return Path(os.environ.get("HARNESS_LLAMACPP_DIR", default))


def bindings_version() -> str | None:
    try:
        return metadata.version(LLAMA_CPP_PYTHON)
    except metadata.PackageNotFoundError:
        return None


def require_bindings() -> None:
    if bindings_version() is None:
        raise HarnessError(f"GGUF formats need {LLAMA_CPP_PYTHON} (llama.cpp); run: HARNESS_GGUF=1 ./scripts/setup")


def converter() -> Path:
    script = tools_dir() / "convert_hf_to_gguf.py"
    if not script.is_file():
        raise HarnessError(
            f"llama.cpp's convert_hf_to_gguf.py is not in {tools_dir()}; run: HARNESS_GGUF=1 ./scripts/setup"
        )
    return script


def convert_hf_to_gguf(model_dir: Path, out_file: Path, outtype: str, log: Path) -> None:
    """Run llama.cpp's converter with its own gguf-py (newer than PyPI's gguf)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tools_dir() / "gguf-py"), os.environ.get("PYTHONPATH", "")]),
    }
    with log.open("a") as sink:
        done = subprocess.run(
            [sys.executable, str(converter()), str(model_dir), "--outfile", str(out_file), "--outtype", outtype],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=3600,
            # a killed quantize stage must not leave it writing into the staging directory
            preexec_fn=dies_with_this_process(),
        )
    if done.returncode != 0 or not out_file.is_file():
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
        last = (
            f": {lines[-1].strip()[:500]}" if lines else ""
        )  # its own error (the log may go with a staging directory)
        raise RuntimeError(f"convert_hf_to_gguf.py failed (exit {done.returncode}){last}; see {log}")


def quantize(in_file: Path, out_file: Path, ftype: int, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(in_file).encode(), str(out_file).encode(), params)
    if status != 0 or not out_file.is_file():
        raise RuntimeError(f"llama_model_quantize returned {status}")


def ftype(name: str) -> int:
    """LLAMA_FTYPE_MOSTLY_<NAME> from the bindings, e.g. Q4_K_M → 15."""
    import llama_cpp

    value = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{name.upper()}", None)
    if value is None:
        raise HarnessError(f"llama.cpp has no quantization type {name!r}")
    return int(value)
