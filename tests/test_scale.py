"""Scale past one GPU, the parts that need no cluster: pipeline_parallel_size reaches vLLM without
changing existing cell keys, `executor`/`ray` in the config, how many CPUs and GPUs a Ray cell
holds, and llm-compressor loading a model into host memory for sequential onloading.
The Ray executor itself runs for real in tests/integration/test_ray_executor.py."""

from __future__ import annotations

import dataclasses
import re
from importlib import metadata
from pathlib import Path

import pytest

from harness import engines, matrix
from harness.config import RaySpec, load_config
from harness.engines.base import EngineRequest
from harness.engines.vllm import VllmParams
from harness.errors import HarnessError
from harness.executors.ray import fits, resources
from tests.conftest import ROOT

BASE = """
name: scale
model: {source: builtin:smollm2-135m}
formats: [bf16, fp8-dynamic, gguf-q8_0]
engine: [{name: vllm, tensor_parallel_size: 2ENGINE_EXTRA}, {name: llamacpp}]
TOP_EXTRA
"""


def _config(tmp_path: Path, engine_extra: str = "", top_extra: str = "", name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(BASE.replace("ENGINE_EXTRA", engine_extra).replace("TOP_EXTRA", top_extra))
    return load_config(path)


def _keys(config) -> dict[str, str]:
    return {cell.name: cell.key("model@1", {"torch": "2.13.0"}, "vllm==0.32.0") for cell in matrix.expand(config)}


#: the keys of BASE's cells computed by the harness at commit 8f14423, before EngineSpec had
#: pipeline_parallel_size (or any later field): a config that doesn't set new fields keeps them
KEYS_BEFORE = {
    "bf16/vllm/kv-auto": "6494a170fd4d7c4e",
    "fp8-dynamic/vllm/kv-auto": "98817586238832ae",
    "gguf-q8_0/llamacpp/kv-auto": "f1d32d8c7505c9b9",
}


def test_a_config_without_pipeline_parallel_keeps_its_keys(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert all(getattr(spec, "pipeline_parallel_size", 1) == 1 for spec in config.engines)
    keys = _keys(config)
    assert keys == KEYS_BEFORE
    # the same keys when the default is written out
    assert _keys(_config(tmp_path, ", pipeline_parallel_size: 1", name="d.yaml")) == keys


def test_pipeline_parallel_changes_only_the_cells_of_that_engine(tmp_path: Path) -> None:
    before = _keys(_config(tmp_path))
    after = _keys(_config(tmp_path, ", pipeline_parallel_size: 2", name="p.yaml"))
    assert after["gguf-q8_0/llamacpp/kv-auto"] == before["gguf-q8_0/llamacpp/kv-auto"]
    assert after["bf16/vllm/kv-auto"] != before["bf16/vllm/kv-auto"]


def test_executor_and_ray_are_in_no_cell_key(tmp_path: Path) -> None:
    local = _keys(_config(tmp_path))
    on_ray = _config(
        tmp_path, top_extra="executor: ray\nray: {address: auto, num_gpus_per_cell: 2, max_retries: 3}", name="r.yaml"
    )
    assert on_ray.executor == "ray" and on_ray.ray.address == "auto" and on_ray.ray.num_gpus_per_cell == 2
    assert _keys(on_ray) == local


def test_executor_defaults_to_local(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.executor == "local" and config.ray == RaySpec() and config.ray.max_retries == 1


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("executor: slurm", "executor: unknown executor 'slurm'; executors: local, ray"),
        ("executor: ray\nray: {address: my-cluster}", 'ray.address: a Ray address is "auto", HOST:PORT'),
        ("executor: ray\nray: {num_gpus_per_cell: 0}", "ray.num_gpus_per_cell"),
        (
            "executor: ray\nray: {workers: 4}",
            "ray.workers: unknown key; allowed keys here: address, num_gpus_per_cell, num_cpus_per_cell, max_retries",
        ),
    ],
)
def test_bad_executor_settings_are_one_line(tmp_path: Path, extra: str, words: str) -> None:
    with pytest.raises(HarnessError) as caught:
        _config(tmp_path, top_extra=extra)
    assert words in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "ray://head.example:10001", "[::1]:6379"])
def test_ray_addresses(address: str) -> None:
    assert RaySpec(address=address).address == address


# --- vLLM ----------------------------------------------------------------------------------


def _settings(device: str, **spec: int) -> dict:
    request = EngineRequest(Path("/m"), "bfloat16", VllmParams(name="vllm", **spec), device, 128)
    return engines.get("vllm").settings(request)


def test_pipeline_parallel_reaches_vllm_only_when_set() -> None:
    assert "pipeline_parallel_size" not in _settings("cuda")  # rows of earlier runs: same settings JSON
    settings = _settings("cuda", tensor_parallel_size=4, pipeline_parallel_size=2)
    assert settings["tensor_parallel_size"] == 4 and settings["pipeline_parallel_size"] == 2
    argv = (
        engines.get("vllm")
        .server(
            EngineRequest(Path("/m"), "bfloat16", VllmParams(name="vllm", pipeline_parallel_size=2), "cuda", 128), 8000
        )
        .argv
    )
    assert argv[argv.index("--pipeline-parallel-size") + 1] == "2"


def test_cpu_keeps_one_process_only_without_parallelism() -> None:
    assert _settings("cpu")["distributed_executor_backend"] == "uni"
    assert "distributed_executor_backend" not in _settings(
        "cpu", pipeline_parallel_size=2
    )  # vLLM's own multiprocessing
    assert "distributed_executor_backend" not in _settings("cpu", tensor_parallel_size=2)


def test_planned_memory_per_gpu_splits_over_pipeline_stages() -> None:
    from harness import hardware
    from harness.engines.base import Parallelism
    from harness.params import FormatParams
    from harness.plan import cell_plan
    from harness.shapes import load_shape

    shape = load_shape("llama-3.1-70b")
    hw = hardware.Hardware("cuda", "NVIDIA H100 80GB HBM3", 8, 80 * 2**30, "9.0", None, ())
    params = FormatParams(name="bf16")
    one = cell_plan.planned_columns(shape, params, "auto", 8, 1024, hw, Parallelism(2, 1), {"tensor_parallel_size": 2})
    two = cell_plan.planned_columns(
        shape, params, "auto", 8, 1024, hw, Parallelism(2, 2), {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}
    )
    assert two["planned_weights_bytes"] == pytest.approx(one["planned_weights_bytes"] / 2, abs=1)
    assert two["planned_kv_cache_bytes"] == pytest.approx(one["planned_kv_cache_bytes"] / 2, abs=1)


# --- how much of a Ray cluster a cell holds ------------------------------------------------


CPU_NODES = [{"CPU": 2.0, "memory": 1e10}, {"CPU": 16.0}]
GPU_NODES = [{"CPU": 64.0, "GPU": 8.0}, {"CPU": 8.0}]


def test_a_cpu_cell_holds_a_whole_node_of_the_smallest_size() -> None:
    assert resources(RaySpec(), VllmParams(name="vllm"), CPU_NODES) == (2.0, 0.0)
    assert resources(RaySpec(num_cpus_per_cell=1), VllmParams(name="vllm"), CPU_NODES) == (1.0, 0.0)


def test_a_gpu_cell_holds_tensor_x_pipeline_gpus_and_their_share_of_cpus() -> None:
    assert resources(RaySpec(), VllmParams(name="vllm"), GPU_NODES) == (8.0, 1.0)
    assert resources(
        RaySpec(), VllmParams(name="vllm", tensor_parallel_size=2, pipeline_parallel_size=2), GPU_NODES
    ) == (32.0, 4.0)
    assert resources(
        RaySpec(num_gpus_per_cell=0.5, num_cpus_per_cell=2), VllmParams(name="vllm", tensor_parallel_size=2), GPU_NODES
    ) == (2.0, 0.5)


def test_a_cell_fits_one_node_or_none() -> None:
    assert fits(32.0, 4.0, GPU_NODES)
    assert not fits(8.0, 16.0, GPU_NODES)  # 16 GPUs exist nowhere on one node: never spans nodes
    assert not fits(4.0, 0.0, [{"CPU": 2.0}, {"CPU": 2.0}])


# --- llm-compressor: host memory, then sequential onloading --------------------------------


class _Loaded(Exception):
    pass


def test_quantization_loads_the_model_into_host_memory_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """device_map=None on every device: llm-compressor's sequential pipeline then onloads one
    layer at a time to the GPU, so a model larger than one GPU quantizes (docs/production.md)."""
    from transformers import AutoModelForCausalLM

    from harness import formats
    from harness.formats.base import QuantizeRequest

    seen: dict = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise _Loaded

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", capture)
    fmt = formats.get("fp8-dynamic")
    for device in ("cuda", "cpu"):
        seen.clear()
        with pytest.raises(_Loaded):
            fmt.quantize(QuantizeRequest(Path("/m"), fmt.params_model(name="fp8-dynamic"), None, 0, Path("/o"), device))
        assert "device_map" in seen and seen["device_map"] is None, (device, seen)


# --- packaging ------------------------------------------------------------------------------


def _ray_pin() -> str:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements" / "ray.txt").read_text().splitlines()]
    (pin,) = [line for line in lines if line]
    return pin


def test_ray_is_installed_at_its_pin_and_in_the_image() -> None:
    pin = _ray_pin()
    assert re.fullmatch(r"ray==[\d.]+", pin)
    assert metadata.version("ray") == pin.split("==")[1]  # scripts/setup installs it (HARNESS_RAY=1, the default)
    from tests.test_production_files import dockerfile_facts

    assert "requirements/ray.txt" in dockerfile_facts((ROOT / "Dockerfile").read_text())["files"]
    setup = (ROOT / "scripts" / "setup").read_text()
    assert "requirements/ray.txt" in setup and "HARNESS_RAY" in setup


# --- the order in which the Ray executor starts cells --------------------------------------


def _jobs(tmp_path: Path, top_extra: str, built: set[str]):
    from harness import formats
    from harness.executors.ray import Order, _Job

    config = _config(tmp_path, top_extra=top_extra)
    jobs = []
    for cell in matrix.expand(config):
        fmt = formats.get(cell.format.name)
        artifact_key = "model" if fmt.is_baseline else cell.format.id  # one artifact per format, as artifact_key gives
        jobs.append(_Job(cell, cell.name, artifact_key, not fmt.is_baseline and artifact_key not in built, 1.0, 0.0))
    return jobs, Order(jobs, lambda key: key not in built)


def test_with_evals_no_cell_waits_for_the_baselines(tmp_path: Path) -> None:
    """Relative figures are the compare pass's, after the cells: a quantized cell starts at once."""
    jobs, order = _jobs(tmp_path, "evals: {tasks: [perplexity]}", set())
    assert [job.cell.name for job in jobs if order.ready(job)] == [job.cell.name for job in jobs]


def test_without_evals_every_cell_may_start_at_once(tmp_path: Path) -> None:
    jobs, order = _jobs(tmp_path, "", set())
    assert all(order.ready(job) for job in jobs)


def test_cells_of_one_unbuilt_artifact_start_one_at_a_time(tmp_path: Path) -> None:
    built: set[str] = set()
    jobs, order = _jobs(tmp_path, "", built)
    twin = dataclasses.replace(
        next(job for job in jobs if job.cell.format.id == "fp8-dynamic"), key="twin"
    )  # e.g. another KV dtype
    jobs.append(twin)
    first = next(job for job in jobs if job.cell.format.id == "fp8-dynamic" and job is not twin)
    jobs.remove(first)
    order.started(first)
    assert not order.ready(twin)  # the artifact is being built by `first`
    built.add("fp8-dynamic")
    order.finished(first)
    assert order.ready(twin) and not twin.builds  # built once: the twin reuses it
