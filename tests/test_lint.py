"""The Python code's own checks: ruff (format and lint, line length 120) over the harness, its
tests and scripts, and mypy over harness/ (settings in pyproject.toml, pins in requirements/lint.txt)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
PATHS = ("harness", "tests", "scripts")


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_format_leaves_the_code_as_it_is() -> None:
    done = _run(str(BIN / "ruff"), "format", "--check", *PATHS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_ruff_lint_passes() -> None:
    done = _run(str(BIN / "ruff"), "check", *PATHS)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def test_mypy_passes_on_the_harness() -> None:
    done = _run(str(BIN / "mypy"))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
