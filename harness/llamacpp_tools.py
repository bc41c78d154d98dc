"""llama.cpp's own tools, as the harness gets them: the llama-cpp-python package (built from
source by scripts/setup: the PyPI release ships only an sdist) gives the bindings and
`llama_model_quantize`; the HF → GGUF converter is `convert_hf_to_gguf.py` from the same
sdist's vendored llama.cpp, unpacked by scripts/setup into the harness's tools directory, and
the programs the bindings lack (`llama-imatrix`; `llama-quantize`, the one that takes an
importance matrix) are built by scripts/setup from that same llama.cpp into its `bin/`.
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


def program(name: str) -> Path:
    """A llama.cpp program scripts/setup built into the tools directory's bin/."""
    path = tools_dir() / "bin" / name
    if not os.access(path, os.X_OK):
        raise HarnessError(f"llama.cpp's {name} is not in {path.parent}; run: HARNESS_GGUF=1 ./scripts/setup")
    return path


def run_program(argv: list[str], log: Path, timeout_s: float = 3600) -> None:
    """Run one llama.cpp program, its output appended to log; a RuntimeError with its last line."""
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(argv)}\n")
        sink.flush()
        done = subprocess.run(
            argv, stdout=sink, stderr=subprocess.STDOUT, timeout=timeout_s, preexec_fn=dies_with_this_process()
        )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} failed (exit {done.returncode}){_last_line(log)}; see {log}")


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.is_file() else []
    return f": {lines[-1].strip()[:500]}" if lines else ""


def importance_matrix(model: Path, text: Path, out_file: Path, ctx: int, chunks: int, threads: int, log: Path) -> None:
    """llama-imatrix over text in chunks of ctx tokens: the mean squared activation entering
    each weight matrix, the importance llama-quantize weighs its rounding error by."""
    run_program(
        [
            str(program("llama-imatrix")),
            *("-m", str(model), "-f", str(text), "-o", str(out_file)),
            *("-c", str(ctx), "--chunks", str(chunks), "-t", str(threads), "-b", str(ctx)),
            "--no-ppl",
            "--no-escape",  # the text as it is: code's literal "\\n" stays two characters
        ],
        log,
    )
    if not out_file.is_file():
        raise RuntimeError(f"llama-imatrix wrote no {out_file.name}{_last_line(log)}; see {log}")


def quantize_with_imatrix(
    in_file: Path, out_file: Path, quant_type: str, imatrix: Path, threads: int, log: Path
) -> None:
    """llama-quantize --imatrix (the bindings' llama_model_quantize takes the matrix only as a
    C++ map, which Python cannot build)."""
    run_program(
        [
            str(program("llama-quantize")),
            "--imatrix",
            str(imatrix),
            str(in_file),
            str(out_file),
            quant_type,
            str(threads),
        ],
        log,
    )
    if not out_file.is_file():
        raise RuntimeError(f"llama-quantize wrote no {out_file.name}{_last_line(log)}; see {log}")


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
        # its own error in the message: the log may go with a staging directory
        raise RuntimeError(f"convert_hf_to_gguf.py failed (exit {done.returncode}){_last_line(log)}; see {log}")


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
