"""The installed stack is the one requirements/ pins (setup installs it in a fixed order)."""

from __future__ import annotations

from importlib import metadata

from tests.conftest import ROOT


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            package, version = line.split("==")
            pins[package.split("[")[0]] = version
    return pins


def test_quantize_overrides_are_installed() -> None:
    for package, version in _pins("quantize-nodeps.txt").items():
        assert metadata.version(package) == version, package


def test_cpu_stack_is_installed() -> None:
    for package, version in _pins("stack-cpu.txt").items():
        assert metadata.version(package) == version, package


def test_the_cuda_builds_of_torchvision_are_gone() -> None:
    for package in ("torchvision", "torchaudio", "torchcodec"):
        try:
            metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
        raise AssertionError(f"{package} is installed beside torch+cpu: `from vllm import LLM` breaks")
