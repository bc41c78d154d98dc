"""The YAML config: pydantic models, and the only place a config is parsed and validated.

Every mistake becomes one `HarnessError` line: `FILE: KEY: what is wrong (allowed ...)`.
"""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from harness import engines, executors, formats, hardware
from harness.errors import HarnessError, config_error
from harness.formats.baseline import BASELINE_FOR_DTYPE
from harness.params import HUB_ID, NAME_PATTERN, EngineParams, FormatParams, StrictModel
from harness.results.metrics import RECOVERY_METRICS
from harness.shapes import KNOWN_SHAPES

BUILTIN_MODELS = ("smollm2-135m",)
#: a format entry naming the unquantized model in model.dtype (bf16, fp16 or fp32)
BASELINE = "baseline"
BUILTIN_CALIBRATION = ("code", "prose")


class ModelSpec(StrictModel):
    source: str = Field(min_length=1, description="builtin:NAME, a hub id (org/name) or a local directory")
    revision: str | None = None
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "bfloat16",
        description="what the engine computes in; auto: bfloat16 on GPUs and CPUs with bf16 instructions, float32 on "
        "CPUs without (bf16 is emulated there). A `baseline` format entry is the unquantized model in this dtype",
    )


class CalibrationSpec(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    source: str = Field(min_length=1, description="builtin:code, builtin:prose, hf:ORG/NAME, a file or a glob")
    domain: str | None = None
    samples: int = Field(16, ge=1, le=100_000)
    seq_len: int = Field(128, ge=8, le=131_072)
    seed: int = Field(0, ge=0)
    column: str = "text"
    split: str = "train"
    subset: str | None = None
    revision: str | None = Field(
        None, description="hf: sources: a branch, tag or commit (default main), resolved to its commit at run start"
    )

    @property
    def resolved_domain(self) -> str:
        if self.domain:
            return self.domain
        if self.source.startswith("builtin:"):
            return self.source.split(":", 1)[1]
        return "custom"


class WorkloadSpec(StrictModel):
    prompts: int = Field(16, ge=1, le=1_000_000)
    input_len: int = Field(64, ge=1, le=1_000_000)
    output_len: int = Field(64, ge=1, le=1_000_000)
    seed: int = Field(0, ge=0)
    repeats: int = Field(
        1, ge=1, le=100, description="offline throughput measured this many times on one load: a mean and its noise"
    )


class SloSpec(StrictModel):
    """Service-level objective of one request; goodput counts the requests that meet every one set."""

    ttft_ms: float | None = Field(None, gt=0, description="time to first token")
    tpot_ms: float | None = Field(None, gt=0, description="time per output token after the first")
    e2el_ms: float | None = Field(None, gt=0, description="end-to-end latency")


class CapacitySpec(StrictModel):
    """Capacity at the SLO (harness.stages.serving.capacity): the highest Poisson rate whose p99s
    meet these thresholds, bracketed from start_rate by doubling or halving, then bisected."""

    ttft_ms_p99: float | None = Field(None, gt=0, description="p99 time to first token, ms")
    tpot_ms_p99: float | None = Field(None, gt=0, description="p99 time per output token, ms")
    start_rate: float = Field(1.0, gt=0, description="requests/s of the first probe")
    max_probes: int = Field(8, ge=2, le=30, description="load points the search may run")
    tolerance: float = Field(
        0.1, gt=0, lt=1, description="stop when the highest miss is within this fraction of the best met rate"
    )
    usd_per_hour: float | None = Field(
        None,
        gt=0,
        description="what the machine costs per hour (your price: cloud list prices move): gives "
        "usd_per_million_output_tokens at capacity. Not part of any key",
    )
    price_source: str | None = Field(None, description="where usd_per_hour comes from, and its date")

    @model_validator(mode="after")
    def _one_threshold(self) -> CapacitySpec:
        if self.ttft_ms_p99 is None and self.tpot_ms_p99 is None:
            raise ValueError("set ttft_ms_p99 or tpot_ms_p99: capacity is the highest rate meeting them")
        return self


#: requests per load point checked against the offline engine's greedy answers, by default
OUTPUT_CHECKS = 4


class ServingSpec(StrictModel):
    """The online benchmark: the cell's model behind an OpenAI-compatible server on 127.0.0.1,
    driven by a streaming client. Prompts and lengths come from `workload` unless
    `prompts_file` is set (one prompt per line, or JSONL with a "prompt" field)."""

    concurrency: list[int] = Field(
        default_factory=lambda: [1, 8], description="in-flight request limits, one sweep point each"
    )
    request_rates: list[float] = Field(
        default_factory=list, description="Poisson arrival rates (requests/s), one sweep point each"
    )
    requests: int = Field(16, ge=1, le=100_000, description="requests per sweep point")
    prompts_file: str | None = Field(None, description="local prompts (text lines, or JSONL with a prompt field)")
    output_len_jitter: float = Field(
        0.0, ge=0.0, lt=1.0, description="output lengths drawn uniformly from output_len x [1-j, 1+j]"
    )
    slo: SloSpec = SloSpec()
    seed: int = Field(0, ge=0)
    startup_timeout_s: int = Field(900, ge=10, description="from the server's start to its /health answering")
    request_timeout_s: int = Field(600, ge=1)
    warmup_requests: int = Field(1, ge=0, le=64, description="requests sent before the sweep, not measured")
    output_checks: int = Field(
        OUTPUT_CHECKS,
        ge=0,
        le=64,
        description="the first N requests of each load point are checked against the offline engine's greedy answers "
        "(0: none)",
        # the default leaves the keys of cells from before this setting as they were: a check adds
        # columns, it changes no figure the row already has
        exclude_if=lambda value: value == OUTPUT_CHECKS,
    )
    port: int | None = Field(None, ge=1, le=65535, description="the server's port on 127.0.0.1 (None: a free one)")
    formats: list[str] | None = Field(
        None, description="format ids (names or labels) to serve under load (None: every cell)"
    )
    capacity: CapacitySpec | None = Field(
        None,
        description="after the sweep, search the highest request rate meeting a p99 SLO (None: no search)",
        exclude_if=lambda value: value is None,  # unset: the keys of cells from before this setting
    )


class RaySpec(StrictModel):
    """Where `executor: ray` runs cells (docs/production.md, "Scale past one GPU"). Not part of any
    cell key: where a cell ran never changes what it measures."""

    address: str | None = Field(
        None,
        description='None: a local cluster started for the run; "auto": the cluster `ray start` runs on this machine; '
        '"HOST:PORT" or "ray://HOST:10001"',
    )
    num_gpus_per_cell: float | None = Field(
        None,
        gt=0,
        description="GPUs a cell holds (None: tensor_parallel_size x pipeline_parallel_size on a GPU cluster, none on "
        "CPU)",
    )
    num_cpus_per_cell: float | None = Field(
        None,
        gt=0,
        description="CPUs a cell holds (None: 1 beside GPUs; on a CPU cluster every CPU of its smallest node, so CPU "
        "cells never share cores)",
    )
    max_retries: int = Field(
        1,
        ge=0,
        le=10,
        description="times a cell whose worker process or node died is run again elsewhere; then it is a failed row",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None or value == "auto" or re.match(r"^(ray://)?[A-Za-z0-9.\-\[\]:]+:\d+$", value):
            return value
        raise PydanticCustomError(
            "ray_address",
            'a Ray address is "auto", HOST:PORT (the GCS of a cluster) or ray://HOST:PORT (Ray Client); leave it out '
            "to start a local cluster",
        )


class QuantizeSpec(StrictModel):
    timeout_s: int = Field(7200, ge=10, description="wall-clock limit of one quantization")
    memory_limit_gib: float | None = Field(
        None,
        gt=0,
        description="host RSS limit of the quantization's process tree: over it, the tree is killed and the cell "
        "fails as out of memory; None: no limit",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"


class KldSpec(StrictModel):
    windows: int = Field(4, ge=1, le=10_000, description="held-out prose windows scored by the baseline and every cell")
    seq_len: int = Field(256, ge=16, le=32_768)
    top_k: int = Field(32, ge=1, le=1000, description="tokens per position kept from the baseline's distribution")
    full_vocabulary: bool = Field(
        True,
        description="keep the whole next-token distribution where the engine returns full logits (transformers, "
        "llama.cpp): the KL divergence is then exact against a reference that kept it too; positions x vocabulary "
        "x 4 bytes per cell on disk. Not part of a cell's key or eval settings",
    )


class PasskeySpec(StrictModel):
    """The long-context retrieval task (`passkey` in evals.tasks): a number hidden at a random
    depth in filler text of each length, asked for at the end, exact match (the KV-cache trap
    at long context: run it per KV dtype)."""

    lengths: list[int] = Field(
        default_factory=lambda: [512, 1024, 2048], min_length=1, description="prompt lengths in the model's tokens"
    )
    items: int = Field(4, ge=1, le=1000, description="prompts per length (each with its own key and depth)")
    seed: int = Field(0, ge=0)


class EvalSpec(StrictModel):
    tasks: list[str] = Field(
        default_factory=list, description="humaneval, math500, perplexity (offline), or any lm-eval task name"
    )
    limit: int | None = Field(20, ge=1, description="documents per task (None: all)")
    max_gen_toks: int = Field(256, ge=1, le=32_768)
    max_model_len: int = Field(2048, ge=64, description="context for evaluation (few-shot prompts are long)")
    batch_size: int = Field(8, ge=1, le=1024)
    allow_code_execution: bool = Field(
        False,
        description="run model-generated code (HumanEval) in the sandbox; off: HumanEval is skipped and the row says "
        "why",
    )
    add_bos_token: bool | None = Field(
        None,
        description="lm-eval's add_bos_token (llm-compressor's examples set true for Llama-3-style models); None: the "
        "tokenizer's default",
    )
    kld: KldSpec | None = KldSpec()
    passkey: PasskeySpec | None = Field(None, description="settings of the passkey task (None: its defaults)")
    timeout_s: int = Field(3600, ge=10)

    def passkey_spec(self) -> PasskeySpec | None:
        """The passkey task's settings when it is one of the tasks."""
        return (self.passkey or PasskeySpec()) if "passkey" in self.tasks else None


class GateSpec(StrictModel):
    """What `harness gate` fails on (docs/production.md). Not part of any cell's key: it judges
    rows, it never changes what a cell measures."""

    recovery_floor_pct: float | dict[str, float] | None = Field(
        None, description="lowest recovery % a cell may have: one number for every recovery metric, or per metric"
    )
    max_throughput_regression_pct: float | None = Field(
        None,
        gt=0,
        lt=100,
        description="largest output tok/s drop (%) against the stored previous run; None: harness gate's default",
    )
    inconclusive: Literal["report", "fail"] = Field(
        "report",
        description="a cell whose paired interval straddles the floor: report it (not gated) or fail the gate",
    )
    unexpected_kernel: Literal["report", "fail"] = Field(
        "report",
        description="a cell that ran on none of the kernels its format is made for (kernel_expected false): report "
        "it or fail the gate",
    )

    @field_validator("recovery_floor_pct", mode="before")
    @classmethod
    def _floor(cls, value: Any) -> Any:
        def percent(number: Any, where: str) -> float:
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 < number <= 100:
                got = f" (got {number!r})" if where else ""  # the top-level value is shown by _first_error
                raise PydanticCustomError(
                    "gate_floor", f"{where}a floor is a recovery percent, above 0 and at most 100{got}"
                )
            return float(number)

        if value is None:
            return None
        if isinstance(value, dict):
            for metric in value:
                if metric not in RECOVERY_METRICS:
                    raise PydanticCustomError(
                        "gate_floor", f"unknown metric {metric!r}; recovery metrics: {', '.join(RECOVERY_METRICS)}"
                    )
            return {metric: percent(number, f"{metric}: ") for metric, number in value.items()}
        return percent(value, "")

    def floors(self) -> dict[str, float]:
        """metric → floor %, for the metrics this gate sets one for."""
        floor = self.recovery_floor_pct
        if floor is None:
            return {}
        return dict(floor) if isinstance(floor, dict) else dict.fromkeys(RECOVERY_METRICS, floor)


class RawConfig(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    model: ModelSpec
    formats: list[Any] = Field(min_length=1)
    calibration: list[CalibrationSpec] = Field(default_factory=list)
    workload: WorkloadSpec = WorkloadSpec()
    engine: dict[str, Any] | list[dict[str, Any]] = Field(
        default_factory=lambda: {"name": "vllm"},
        description="an engine's settings (name: vllm, transformers, llamacpp), or a list: the engine axis",
    )
    quantize: QuantizeSpec = QuantizeSpec()
    evals: EvalSpec | None = None
    serving: ServingSpec | None = None
    gate: GateSpec | None = None
    executor: str = Field(
        "local",
        description="where cells run (harness.executors): local, one after another here; ray, fanned out over a Ray "
        "cluster",
    )
    ray: RaySpec | None = None
    output: str | None = None
    cache_dir: str | None = None


class Config(StrictModel):
    """A validated config: formats are typed parameter objects from the format registry."""

    path: Path
    name: str
    model: ModelSpec
    formats: tuple[FormatParams, ...]
    calibration: tuple[CalibrationSpec, ...]
    workload: WorkloadSpec
    engines: tuple[EngineParams, ...]  # one per engine × KV-cache dtype, each with a single kv_cache_dtype
    quantize: QuantizeSpec
    evals: EvalSpec | None
    serving: ServingSpec | None
    gate: GateSpec | None
    executor: str = "local"
    ray: RaySpec = RaySpec()
    output: Path
    cache_dir: Path | None

    def calibration_set(self, name: str) -> CalibrationSpec:
        return next(c for c in self.calibration if c.name == name)


def load_config(path: str | Path, output: str | Path | None = None) -> Config:
    path = Path(path)
    data = _read_yaml(path)
    try:
        raw = RawConfig.model_validate(data)
    except ValidationError as exc:
        raise _first_error(path, exc, RawConfig) from None
    model = _resolve_dtype(raw.model)
    baseline = BASELINE_FOR_DTYPE[model.dtype]
    formats = tuple(_parse_format(path, i, entry, baseline) for i, entry in enumerate(raw.formats))
    serving = raw.serving
    if serving is not None and serving.formats:
        serving = serving.model_copy(
            update={"formats": [baseline if fid == BASELINE else fid for fid in serving.formats]}
        )
    specs = _parse_engines(path, raw)
    config = Config(
        path=path,
        name=raw.name,
        model=model,
        formats=formats,
        calibration=tuple(raw.calibration),
        workload=raw.workload,
        engines=_expand_engines(specs),
        quantize=raw.quantize,
        evals=raw.evals,
        serving=serving,
        gate=raw.gate,
        executor=raw.executor,
        ray=raw.ray or RaySpec(),
        output=Path(output) if output else Path(raw.output or f"results/{raw.name}"),
        cache_dir=Path(raw.cache_dir).expanduser() if raw.cache_dir else None,
    )
    _check_semantics(config)
    return config


def _resolve_dtype(model: ModelSpec) -> ModelSpec:
    """model.dtype: auto made this host's (harness.hardware.compute_dtype): rows, cell keys and
    the engines see the dtype that ran."""
    if model.dtype != "auto":
        return model
    return model.model_copy(update={"dtype": hardware.compute_dtype(hardware.detect())})


def _expand_engines(specs: list[EngineParams]) -> tuple[EngineParams, ...]:
    expanded: list[EngineParams] = []
    for spec in specs:
        kv_dtypes = spec.kv_cache_dtype if isinstance(spec.kv_cache_dtype, list) else [spec.kv_cache_dtype]
        expanded.extend(spec.model_copy(update={"kv_cache_dtype": kv}) for kv in dict.fromkeys(kv_dtypes))
    return tuple(expanded)


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise config_error(path, "", "no such config file (give the path of a YAML file, e.g. configs/smoke.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise config_error(path, "", "not a UTF-8 text file; a config is YAML text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise config_error(path, where, f"invalid YAML: {problem}") from None
    if data is None:
        raise config_error(path, "", "the file is empty; a config needs at least name, model and formats")
    if not isinstance(data, dict):
        raise config_error(path, "", f"the top level must be a mapping of keys (got a {type(data).__name__})")
    return data


def _key(loc: tuple[Any, ...], prefix: str = "") -> str:
    key = prefix
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
    return key


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Walk the pydantic model along loc (minus the unknown key itself) to list its fields."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the union member it tried into loc: 'EngineSpec', 'list[...]', 'literal[...]'."""
    return isinstance(part, str) and ("[" in part or part[:1].isupper())


def _first_error(path: Path, exc: ValidationError, model: type[BaseModel], prefix: str = "") -> HarnessError:
    # Of a union's alternatives, report the one that got deepest into the user's input.
    located = [(tuple(p for p in e["loc"] if not _is_union_tag(p)), e) for e in exc.errors()]
    loc, err = max(located, key=lambda item: len(item[0]))
    key = _key(loc, prefix)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        return config_error(path, key, f"unknown key; allowed keys here: {', '.join(allowed)}")
    if err["type"] == "missing":
        return config_error(path, key, "required key is missing")
    got = err.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return config_error(path, key, f"{err['msg']} (got {shown})")


def _parse_format(path: Path, index: int, entry: Any, baseline: str) -> FormatParams:
    """One `formats:` entry; `baseline` names the baseline format of model.dtype (what an entry
    named `baseline` becomes)."""
    REGISTRY = formats.REGISTRY
    known = ", ".join([BASELINE, *REGISTRY])
    key = f"formats[{index}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict):
        raise config_error(path, key, f"a format is a name or a mapping with a name (got {type(entry).__name__})")
    name = entry.get("name")
    if name is None:
        raise config_error(path, f"{key}.name", "required key is missing; formats: " + known)
    if name == BASELINE:
        entry, name = {**entry, "name": baseline}, baseline
    if name not in REGISTRY:
        raise config_error(path, f"{key}.name", f"unknown format {name!r}; formats: {known}")
    params_model = REGISTRY[name].params_model
    try:
        return params_model.model_validate(entry)
    except ValidationError as exc:
        raise _first_error(path, exc, params_model, prefix=key) from None


def _first_repeat(items: list[str]) -> tuple[int, int] | None:
    """(i, j): the first entry equal to an earlier one, and that earlier one; None: all differ."""
    for i, item in enumerate(items):
        if item in items[:i]:
            return i, items.index(item)
    return None


def _check_semantics(config: Config) -> None:
    REGISTRY = formats.REGISTRY
    path = config.path
    _check_model_source(path, config.model.source)
    if config.executor not in executors.REGISTRY:
        raise config_error(
            path, "executor", f"unknown executor {config.executor!r}; executors: {', '.join(executors.REGISTRY)}"
        )

    ids = [f.id for f in config.formats]
    if (twice := _first_repeat(ids)) is not None:
        i, _ = twice
        raise config_error(
            path, f"formats[{i}]", f"format {ids[i]!r} is listed twice; give one of them a distinct 'label'"
        )
    # A label or a set's name does not change what runs: two entries that differ only there are
    # one cell key, and the second would silently be "already ok".
    work = [json.dumps(f.model_dump(exclude={"label"}), sort_keys=True, default=str) for f in config.formats]
    if (twice := _first_repeat(work)) is not None:
        i, j = twice
        raise config_error(
            path,
            f"formats[{i}]",
            f"the same format and parameters as formats[{j}] ({ids[j]}): one cell, whatever the label; remove one "
            "or change a parameter",
        )
    sets = [json.dumps(c.model_dump(exclude={"name", "domain"}), sort_keys=True) for c in config.calibration]
    if (twice := _first_repeat(sets)) is not None:
        i, j = twice
        raise config_error(
            path,
            f"calibration[{i}]",
            f"the same data as calibration[{j}] ({config.calibration[j].name}): one artifact, whatever the name; "
            "remove one or change its source, samples, seq_len or seed",
        )
    names = [c.name for c in config.calibration]
    for i, calib in enumerate(config.calibration):
        if calib.name in names[:i]:
            raise config_error(
                path,
                f"calibration[{i}].name",
                f"calibration set name {calib.name!r} is used twice; names must be unique",
            )
        _check_calibration_source(path, f"calibration[{i}].source", calib.source)

    needing = [f.id for f in config.formats if REGISTRY[f.name].needs_calibration(f)]
    if needing and not config.calibration:
        raise config_error(
            path,
            "calibration",
            f"format(s) {', '.join(needing)} need calibration data; add a set, e.g. calibration: "
            f"[{{name: code, source: builtin:code}}]",
        )

    engine_names = {spec.name for spec in config.engines}
    for i, fmt in enumerate(config.formats):
        served_by = REGISTRY[fmt.name].serving_engines()
        if not engine_names & set(served_by):
            raise config_error(
                path,
                f"formats[{i}].name",
                f"format {fmt.name!r} is served by {', '.join(served_by)}, none of which the config's engine lists",
            )
    if config.serving is not None:
        _check_serving(path, config.serving, config.formats)
    if config.evals is not None:
        passkey = config.evals.passkey_spec()
        for i, length in enumerate(passkey.lengths if passkey else []):
            if not 64 <= length <= config.evals.max_model_len - 16:
                raise config_error(
                    path,
                    f"evals.passkey.lengths[{i}]",
                    f"a passkey prompt length is 64 to evals.max_model_len - 16 = {config.evals.max_model_len - 16} "
                    f"tokens (got {length}); raise evals.max_model_len or shorten it",
                )


def _check_serving(path: Path, serving: ServingSpec, formats: tuple[FormatParams, ...]) -> None:
    if not serving.concurrency and not serving.request_rates:
        raise config_error(
            path, "serving", "neither concurrency nor request_rates lists a sweep point; give e.g. concurrency: [1, 8]"
        )
    for i, level in enumerate(serving.concurrency):
        if level < 1:
            raise config_error(
                path,
                f"serving.concurrency[{i}]",
                f"a concurrency is a number of in-flight requests, at least 1 (got {level})",
            )
    for i, rate in enumerate(serving.request_rates):
        if not rate > 0:
            raise config_error(
                path, f"serving.request_rates[{i}]", f"a Poisson rate is requests per second, above 0 (got {rate})"
            )
    ids = [f.id for f in formats]
    for i, fid in enumerate(serving.formats or []):
        if fid not in ids:
            raise config_error(
                path, f"serving.formats[{i}]", f"{fid!r} is not one of the config's formats ({', '.join(ids)})"
            )
    if serving.prompts_file is not None:
        prompts = Path(serving.prompts_file).expanduser()
        if not prompts.is_file():
            raise config_error(
                path,
                "serving.prompts_file",
                f"no such file {serving.prompts_file!r}; give a text file (a prompt per line) or JSONL with a prompt "
                "field",
            )


def _parse_engines(path: Path, raw: RawConfig) -> list[EngineParams]:
    """Each `engine:` entry through its engine's own parameter model (harness.engines)."""
    entries = raw.engine if isinstance(raw.engine, list) else [raw.engine]
    specs: list[EngineParams] = []
    for i, entry in enumerate(entries):
        key = f"engine[{i}]" if isinstance(raw.engine, list) else "engine"
        if not isinstance(entry, dict):
            raise config_error(path, key, f"an engine is a mapping with a name (got {type(entry).__name__})")
        name = entry.get("name", "vllm")
        if name not in engines.REGISTRY:
            raise config_error(path, f"{key}.name", f"unknown engine {name!r}; engines: {', '.join(engines.REGISTRY)}")
        engine = engines.REGISTRY[name]
        try:
            spec = engine.params_model.model_validate({**entry, "name": name})
        except ValidationError as exc:
            raise _first_error(path, exc, engine.params_model, prefix=key) from None
        for kv in spec.kv_cache_dtype if isinstance(spec.kv_cache_dtype, list) else [spec.kv_cache_dtype]:
            if kv not in engine.kv_cache_dtypes:
                raise config_error(
                    path,
                    f"{key}.kv_cache_dtype",
                    f"engine {name} supports KV-cache dtypes {', '.join(engine.kv_cache_dtypes)} (got {kv!r})",
                )
        need = raw.workload.input_len + raw.workload.output_len
        if spec.max_model_len is not None and need > spec.max_model_len:
            raise config_error(
                path,
                "workload",
                f"input_len + output_len = {need} exceeds {key}.max_model_len = {spec.max_model_len}; shorten the "
                "workload or raise max_model_len",
            )
        specs.append(spec)
    return specs


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


def _check_model_source(path: Path, source: str) -> None:
    key = "model.source"
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            raise config_error(path, key, f"unknown builtin model {name!r}; builtins: {', '.join(BUILTIN_MODELS)}")
        return
    if source.startswith("synthetic:"):  # an architecture with random weights (docs/synthetic.md)
        spec = source.split(":", 1)[1].strip()
        if spec.removeprefix("builtin:").lower() in KNOWN_SHAPES:
            return
        local = Path(spec).expanduser()
        if _looks_like_path(spec):
            if not (local.is_file() or (local / "config.json").is_file()):
                raise config_error(
                    path, key, f"synthetic:{spec}: neither a config.json file nor a directory holding one"
                )
            return
        if not HUB_ID.match(spec):
            raise config_error(
                path,
                key,
                f"synthetic:{spec!r}: give a known architecture ({', '.join(KNOWN_SHAPES)}), a local config.json "
                "(or a directory holding one), or a hub id like meta-llama/Llama-3.1-70B (only its config.json is "
                "downloaded)",
            )
        return
    if _looks_like_path(source):
        local = Path(source).expanduser()
        if not (local / "config.json").is_file():
            raise config_error(
                path,
                key,
                f"{source} is not a model directory (no config.json in it); give a local HF model directory, a hub id "
                "or builtin:smollm2-135m",
            )
        return
    if not HUB_ID.match(source):
        raise config_error(
            path,
            key,
            f"{source!r} is neither builtin:NAME, a hub id like Qwen/Qwen2.5-7B-Instruct, nor an existing directory",
        )


def _check_calibration_source(path: Path, key: str, source: str) -> None:
    if source.startswith("builtin:"):
        name = source.split(":", 1)[1]
        if name not in BUILTIN_CALIBRATION:
            raise config_error(
                path, key, f"unknown builtin calibration set {name!r}; builtins: {', '.join(BUILTIN_CALIBRATION)}"
            )
        return
    if source.startswith("hf:"):
        if not HUB_ID.match(source[3:]):
            raise config_error(path, key, f"{source!r}: a hub dataset is hf:ORG/NAME, e.g. hf:allenai/c4")
        return
    matches = glob.glob(str(Path(source).expanduser()), recursive=True)
    files = [m for m in matches if Path(m).is_file()]
    if not files:
        raise config_error(
            path,
            key,
            f"no file matches {source!r}; give builtin:code, builtin:prose, hf:ORG/NAME, or existing .txt/.jsonl files",
        )
    bad = [f for f in files if Path(f).suffix not in (".txt", ".md", ".rst", ".py", ".jsonl", ".json")]
    if bad:
        raise config_error(
            path,
            key,
            f"{bad[0]}: unsupported file type; calibration files are .txt/.md/.rst/.py (text) or .jsonl/.json (a text "
            "column)",
        )
