"""Config validation: every mistake is one line naming the file and the key, exit status 2."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.config import load_config
from harness.errors import HarnessError

GOOD = """
name: t
model: {source: builtin:smollm2-135m}
formats:
  - bf16
  - {name: w4a16-gptq, group_size: 64}
calibration:
  - {name: code, source: builtin:code, samples: 4, seq_len: 32}
workload: {prompts: 2, input_len: 8, output_len: 8}
engine: {name: vllm, max_model_len: 64}
"""

# (description, yaml text, key expected in the message, words expected in the message)
MALFORMED = [
    ("empty file", "", "", "empty"),
    ("top level is a list", "- a\n- b\n", "", "mapping"),
    ("invalid yaml", "name: [unclosed\n", "line", "invalid YAML"),
    ("missing name", GOOD.replace("name: t\n", ""), "name", "required"),
    ("bad name characters", GOOD.replace("name: t", "name: 'a b/c'"), "name", "pattern"),
    ("missing model", GOOD.replace("model: {source: builtin:smollm2-135m}\n", ""), "model", "required"),
    ("unknown top-level key", GOOD + "colour: blue\n", "colour", "allowed keys here: name, model, formats"),
    (
        "unknown model key",
        GOOD.replace("{source: builtin:smollm2-135m}", "{source: builtin:smollm2-135m, size: 7b}"),
        "model.size",
        "unknown key",
    ),
    ("unknown builtin model", GOOD.replace("builtin:smollm2-135m", "builtin:gpt5"), "model.source", "smollm2-135m"),
    ("model path without config.json", GOOD.replace("builtin:smollm2-135m", "/tmp"), "model.source", "config.json"),
    ("model source nonsense", GOOD.replace("builtin:smollm2-135m", "'not a model id'"), "model.source", "hub id"),
    (
        "bad model dtype",
        GOOD.replace("{source: builtin:smollm2-135m}", "{source: builtin:smollm2-135m, dtype: float8}"),
        "model.dtype",
        "bfloat16",
    ),
    (
        "formats empty",
        GOOD.replace("formats:\n  - bf16\n  - {name: w4a16-gptq, group_size: 64}\n", "formats: []\n"),
        "formats",
        "at least 1",
    ),
    ("unknown format", GOOD.replace("  - bf16\n", "  - int3\n"), "formats[0].name", "fp8-dynamic"),
    ("format without name", GOOD.replace("  - bf16\n", "  - {group_size: 64}\n"), "formats[0].name", "required"),
    ("format is a number", GOOD.replace("  - bf16\n", "  - 7\n"), "formats[0]", "name or a mapping"),
    ("bad group size", GOOD.replace("group_size: 64", "group_size: 100"), "formats[1].group_size", "64"),
    (
        "unknown format parameter",
        GOOD.replace("group_size: 64", "group_size: 64, bitz: 3"),
        "formats[1].bitz",
        "group_size",
    ),
    ("duplicate format", GOOD.replace("  - bf16\n", "  - bf16\n  - bf16\n"), "formats[1]", "label"),
    (
        "calibration needed but missing",
        GOOD.replace("calibration:\n  - {name: code, source: builtin:code, samples: 4, seq_len: 32}\n", ""),
        "calibration",
        "w4a16-gptq",
    ),
    (
        "unknown builtin calibration",
        GOOD.replace("builtin:code", "builtin:poetry"),
        "calibration[0].source",
        "code, prose",
    ),
    (
        "calibration file missing",
        GOOD.replace("builtin:code", "/nonexistent/*.jsonl"),
        "calibration[0].source",
        "no file matches",
    ),
    ("bad hub dataset", GOOD.replace("builtin:code", "'hf:c4'"), "calibration[0].source", "hf:ORG/NAME"),
    (
        "negative samples",
        GOOD.replace("samples: 4", "samples: -4"),
        "calibration[0].samples",
        "greater than or equal to 1",
    ),
    ("seq_len a string", GOOD.replace("seq_len: 32", "seq_len: long"), "calibration[0].seq_len", "integer"),
    (
        "duplicate calibration names",
        GOOD.replace(
            "  - {name: code, source: builtin:code, samples: 4, seq_len: 32}\n",
            "  - {name: code, source: builtin:code}\n  - {name: code, source: builtin:prose}\n",
        ),
        "calibration[1].name",
        "unique",
    ),
    ("zero prompts", GOOD.replace("prompts: 2", "prompts: 0"), "workload.prompts", "greater than or equal to 1"),
    ("unknown engine", GOOD.replace("name: vllm", "name: tgi"), "engine.name", "vllm"),
    (
        "bad kv cache dtype",
        GOOD.replace("name: vllm,", "name: vllm, kv_cache_dtype: int4,"),
        "engine.kv_cache_dtype",
        "fp8",
    ),
    (
        "gpu memory utilisation above 1",
        GOOD.replace("name: vllm,", "name: vllm, gpu_memory_utilization: 1.5,"),
        "engine.gpu_memory_utilization",
        "less than or equal to 1",
    ),
    (
        "tensor parallel zero",
        GOOD.replace("name: vllm,", "name: vllm, tensor_parallel_size: 0,"),
        "engine.tensor_parallel_size",
        "greater than or equal to 1",
    ),
    (
        "workload longer than max_model_len",
        GOOD.replace("max_model_len: 64", "max_model_len: 16").replace("input_len: 8", "input_len: 12"),
        "workload",
        "max_model_len",
    ),
    (
        "bad kv cache dtype in a list",
        GOOD.replace("name: vllm,", "name: vllm, kv_cache_dtype: [auto, int4],"),
        "engine.kv_cache_dtype[1]",
        "fp8",
    ),
    (
        "unknown engine in a list",
        GOOD.replace("engine: {name: vllm, max_model_len: 64}", "engine: [{name: vllm}, {name: tgi}]"),
        "engine[1].name",
        "vllm",
    ),
    (
        "enforce_eager not a bool",
        GOOD.replace("name: vllm,", "name: vllm, enforce_eager: sometimes,"),
        "engine.enforce_eager",
        "boolean",
    ),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert [f.id for f in config.formats] == ["bf16", "w4a16-gptq"]
    assert config.formats[1].group_size == 64  # type: ignore[attr-defined]
    assert config.output == Path("results/t")


def test_output_override(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD), output=tmp_path / "elsewhere").output == tmp_path / "elsewhere"


@pytest.mark.parametrize("description,text,key,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_is_one_line_error(tmp_path: Path, description: str, text: str, key: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HarnessError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}"), message
    assert words in message, message


def test_missing_file() -> None:
    with pytest.raises(HarnessError, match="no such config file"):
        load_config("/nonexistent/config.yaml")


@pytest.mark.parametrize(
    "description,text,key,words", MALFORMED[:8] + MALFORMED[-8:], ids=[m[0] for m in MALFORMED[:8] + MALFORMED[-8:]]
)
def test_cli_validate_exit_2_without_traceback(
    tmp_path: Path, cli, description: str, text: str, key: str, words: str
) -> None:
    path = write(tmp_path, text)
    result = cli("validate", str(path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and words in lines[0]


def test_cli_run_bad_config_exit_2(tmp_path: Path, cli) -> None:
    result = cli("run", str(write(tmp_path, GOOD.replace("int", "int").replace("bf16", "bf17"))))
    assert result.returncode == 2
    assert "formats[0].name" in result.stderr and "Traceback" not in result.stderr


def test_cli_validate_good_config(tmp_path: Path, cli) -> None:
    result = cli("validate", str(write(tmp_path, GOOD)))
    assert result.returncode == 0, result.stderr
    assert "2 cells" in result.stdout


def test_shipped_configs_are_valid(cli) -> None:
    from tests.conftest import ROOT

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        result = cli("validate", str(path))
        assert result.returncode == 0, f"{path}: {result.stderr}"


def _host(monkeypatch: pytest.MonkeyPatch, device: str, flags: tuple[str, ...]) -> None:
    from harness import hardware

    found = hardware.Hardware(device, "test host", 2, 24 * 2**30, None, None, flags)
    monkeypatch.setattr(hardware, "detect", lambda: found)


@pytest.mark.parametrize(
    ("device", "flags", "dtype", "baseline"),
    [
        ("cpu", ("avx2",), "float32", "fp32"),  # bf16 emulated: 6x slower prefill measured on a Zen 1
        ("cpu", ("avx2", "avx512f", "avx512_bf16"), "bfloat16", "bf16"),
        ("cpu", ("avx2", "amx_bf16"), "bfloat16", "bf16"),
        ("cuda", (), "bfloat16", "bf16"),
    ],
)
def test_dtype_auto_is_the_hosts_and_baseline_is_the_unquantized_model_in_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, flags: tuple[str, ...], dtype: str, baseline: str
) -> None:
    _host(monkeypatch, device, flags)
    text = (
        GOOD.replace("{source: builtin:smollm2-135m}", "{source: builtin:smollm2-135m, dtype: auto}")
        .replace("  - bf16\n", "  - baseline\n")
        .replace(
            "engine: {name: vllm, max_model_len: 64}",
            "engine: {name: vllm, max_model_len: 64}\nserving: {concurrency: [1], formats: [baseline]}",
        )
    )
    config = load_config(write(tmp_path, text))
    assert config.model.dtype == dtype
    assert [f.id for f in config.formats] == [baseline, "w4a16-gptq"]
    assert config.serving is not None and config.serving.formats == [baseline]


def test_an_explicit_dtype_is_kept_on_any_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, "cpu", ("avx2",))
    text = GOOD.replace("{source: builtin:smollm2-135m}", "{source: builtin:smollm2-135m, dtype: bfloat16}")
    config = load_config(write(tmp_path, text.replace("  - bf16\n", "  - baseline\n")))
    assert config.model.dtype == "bfloat16" and config.formats[0].id == "bf16"


def test_an_unknown_format_lists_baseline_among_the_choices(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"formats\[0\]\.name.*unknown format 'bf17'; formats: baseline, bf16"):
        load_config(write(tmp_path, GOOD.replace("  - bf16\n", "  - bf17\n")))
