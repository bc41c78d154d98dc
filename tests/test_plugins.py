"""A new format is one module plus one registry line; so is a new engine. Here a dummy format
(3-bit weights, group-wise) and a dummy engine (no server, its own parameter model, its own
lm-eval model and log-probabilities) are added to temporary registries, and every part of the
harness takes them as they are: config, matrix, the memory planner, the roofline, the Ray
executor's device count, and a whole run (quantize, offline throughput, evaluate, compare pass).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from harness import engines, formats, matrix, pipeline
from harness.config import load_config
from harness.engines.base import Engine, EngineRequest, EngineSession, EvalModelRequest, Generation, Parallelism
from harness.errors import HarnessError
from harness.formats.base import Format, QuantizeRequest
from harness.formats.layout import Encoding
from harness.params import EngineParams, FormatParams
from harness.plan import memory, roofline
from harness.shapes import load_shape

NOISE_FILE = "dummy-noise.json"


class Int3Params(FormatParams):
    group_size: int = Field(64, description="values per scale")


class Int3(Format[Int3Params]):
    """The dummy format: what a format module declares, nothing else."""

    name = "w3a16-dummy"
    summary = "INT3 weights, group-wise (a test's format)"
    params_model = Int3Params
    weight_bits = 3
    activation_bits = 16
    hardware = "none: a test's"

    def group_size(self, params: FormatParams) -> int | None:
        return self.own(params).group_size

    def layout(self, params: FormatParams) -> Encoding:
        return Encoding("int3", 3, self.own(params).group_size, scale_bits=16)

    def quantize(self, request: QuantizeRequest) -> None:
        (request.out_dir / "config.json").write_text((request.model_dir / "config.json").read_text())
        (request.out_dir / "weights.bin").write_bytes(b"\0" * 4096)
        (request.out_dir / NOISE_FILE).write_text(json.dumps(0.5))


class DummyParams(EngineParams):
    name: Literal["dummyeng"] = "dummyeng"
    shards: int = Field(1, ge=1, description="devices one request spreads over")


def _noise(model_dir: Path) -> float:
    path = model_dir / NOISE_FILE
    return float(json.loads(path.read_text())) if path.is_file() else 0.0


class DummySession(EngineSession):
    def generate(self, prompts: list[list[int]], max_tokens: int) -> Generation:
        start = time.perf_counter()
        time.sleep(0.01)
        return Generation(
            len(prompts), sum(len(p) for p in prompts), len(prompts) * max_tokens, time.perf_counter() - start
        )


class DummyEngine(Engine[DummyParams]):
    name = "dummyeng"
    params_model = DummyParams
    kv_cache_dtypes = ("auto", "fp8")

    def parallelism(self, spec: EngineParams) -> Parallelism:
        return Parallelism(tensor=self.own(spec).shards)

    def version(self) -> str:
        return "dummyeng==1"

    def settings(self, request: EngineRequest) -> dict[str, Any]:
        return {"model": str(request.model_dir), "shards": self.own(request.spec).shards}

    @contextmanager
    def start(self, request: EngineRequest) -> Iterator[DummySession]:
        yield DummySession()

    def lm_eval_model(self, request: EvalModelRequest) -> Any:
        from lm_eval.api.model import LM

        class Scored(LM):  # type: ignore[misc]
            def __init__(self, noise: float) -> None:
                super().__init__()
                self.noise = noise

            def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
                return [-2.0 * (1 + self.noise) * len(r.args[0].split()) for r in requests]

            def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
                raise NotImplementedError

            def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
                raise NotImplementedError

        return Scored(_noise(request.engine_request.model_dir))

    def full_logprobs(self, model: Any, window: list[int]) -> np.ndarray:
        vocab = 64
        base = np.random.default_rng(len(window)).normal(size=(len(window) - 1, vocab)) * 3
        logits = base + model.noise * np.random.default_rng(1).normal(size=base.shape)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


@pytest.fixture
def plugged(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry lines a new format and a new engine add, in temporary registries."""
    monkeypatch.setitem(formats.REGISTRY, Int3.name, Int3())
    monkeypatch.setitem(engines.REGISTRY, DummyEngine.name, DummyEngine())


CONFIG = """
name: plug-in
model: {source: builtin:smollm2-135m}
formats: [bf16, {name: w3a16-dummy, group_size: 64}]
engine: {name: dummyeng, shards: SHARDS, kv_cache_dtype: [auto, fp8]}
workload: {prompts: 2, input_len: 8, output_len: 4}
"""


def test_config_and_matrix_take_them_from_the_registries(plugged: None, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("SHARDS", "2"))
    config = load_config(path)
    assert [type(spec) for spec in config.engines] == [DummyParams, DummyParams] and config.engines[0].shards == 2
    assert [c.name for c in matrix.expand(config)] == [
        "bf16/dummyeng/kv-auto",
        "bf16/dummyeng/kv-fp8",
        "w3a16-dummy/dummyeng/kv-auto",
        "w3a16-dummy/dummyeng/kv-fp8",
    ]
    path.write_text(CONFIG.replace("SHARDS", "2, threads: 4"))
    with pytest.raises(HarnessError, match=r"engine\.threads: unknown key; allowed keys here: name, .*shards"):
        load_config(path)  # the engine's own parameter model decides its keys


def test_the_planner_and_the_roofline_count_the_format_by_its_layout(plugged: None) -> None:
    shape = load_shape("llama-3.1-8b")
    weights = memory.weights(shape, "w3a16-dummy")
    per_layer = sum(3 * lin.params + 16 * lin.out_features * (lin.in_features // 64) for lin in shape.block_linears())
    assert weights.linear_bytes == shape.layers * per_layer // 8
    assert memory.bits_per_weight("w3a16-dummy") == pytest.approx(3 + 16 / 64)
    plan = memory.plan(shape, "w3a16-dummy", "fp8", 8, 1024, "h100-80gb")
    assert plan.weights_bytes == weights.per_gpu(1) and plan.kv_dtype == "fp8"
    result = roofline.cell_roofline(shape, "w3a16-dummy", "auto", 1, 512, 128, roofline.Peak(1e12, 1e15, "test"))
    bf16 = roofline.cell_roofline(shape, "bf16", "auto", 1, 512, 128, roofline.Peak(1e12, 1e15, "test"))
    assert result.tok_s > 3 * bf16.tok_s  # memory-bound at batch 1: fewer bytes per step, more tokens


def test_the_ray_executor_counts_the_engines_devices(plugged: None) -> None:
    from harness.config import RaySpec
    from harness.executors.ray import resources

    gpu_node = [{"CPU": 32.0, "GPU": 8.0}]
    assert resources(RaySpec(), DummyParams(shards=4), gpu_node) == (16.0, 4.0)


def test_a_whole_run_with_them(plugged: None, tmp_path: Path, smollm2_dir: Path) -> None:
    """Quantize (in an isolated child), offline throughput, evaluate (lm-eval with the engine's
    own model; its log-probabilities) and the compare pass, through the pipeline, no other code."""
    path = tmp_path / "c.yaml"
    path.write_text(
        CONFIG.replace("SHARDS", "1").replace("[auto, fp8]", "auto")
        + "evals: {tasks: [perplexity], limit: 1, kld: {windows: 2, seq_len: 16, top_k: 4}}\n"
    )
    pipeline.run(load_config(path, output=tmp_path / "out"))
    rows = pd.read_parquet(tmp_path / "out" / "results.parquet").set_index("format")
    assert list(rows["status"]) == ["ok", "ok"], list(rows["reason"])
    dummy, base = rows.loc["w3a16-dummy"], rows.loc["bf16"]
    assert dummy["engine_version"] == "dummyeng==1" and dummy["artifact_bytes"] == 4096
    assert dummy["output_tokens"] == 2 * 4 and dummy["planned_weights_bytes"] < base["planned_weights_bytes"]
    assert dummy["roofline_tok_s"] > 0 and dummy["weight_bits"] == 3 and dummy["group_size"] == 64
    assert (
        dummy["reference_cell_key"] == base["cell_key"]
        and dummy["kld_mean"] > 0
        and base["kld_mean"] == pytest.approx(0)
    )
    assert dummy["perplexity"] > base["perplexity"] and 0 < dummy["perplexity_recovery_pct"] < 100
    assert pd.isna(dummy["serving_note"]) and json.loads(dummy["engine_settings"])["shards"] == 1
