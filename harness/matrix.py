"""Expand a config into Cells; a Cell's key (a hash) names its artifact and its row."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from harness import formats, provenance
from harness.config import CalibrationSpec, Config, EvalSpec, ServingSpec, SloSpec, WorkloadSpec
from harness.fingerprint import content_identity
from harness.params import EngineParams, FormatParams

# Bump when a change to the harness changes what a cell measures.
SCHEMA_VERSION = 2


def _hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    format: FormatParams
    calibration: CalibrationSpec | None  # None for baselines and data-free formats
    engine: EngineParams  # one engine's own parameters, with a single KV-cache dtype
    workload: WorkloadSpec
    evals: EvalSpec | None = None
    serving: ServingSpec | None = None

    @property
    def name(self) -> str:
        parts = [self.format.id]
        if self.calibration is not None:
            parts.append(self.calibration.name)
        parts.append(self.engine.name)
        parts.append(f"kv-{self.engine.kv_dtype}")
        return "/".join(parts)

    def artifact_key(self, model_identity: str, package_versions: dict[str, str]) -> str:
        calib = None
        if self.calibration is not None:
            # revision: absent unless set (hub sources: pinned to a commit by the pipeline)
            calib = self.calibration.model_dump(exclude={"name", "domain", "revision"})
            if self.calibration.revision is not None:
                calib["revision"] = self.calibration.revision
            calib["source"] = content_identity(self.calibration.source) or self.calibration.source
        return _hash(
            {
                "schema": SCHEMA_VERSION,
                "model": model_identity,
                "format": self.format.model_dump(exclude={"label"}),
                **self._checkpoint(),
                "calibration": calib,
                "packages": {k: v for k, v in package_versions.items() if k in self._artifact_packages()},
            }
        )

    def _checkpoint(self) -> dict[str, str]:
        """A checkpoint the format serves as it is (prequantized) is keyed by what is in it."""
        identity = formats.get(self.format.name).checkpoint_identity(self.format)
        return {"checkpoint": identity} if identity is not None else {}

    def _artifact_packages(self) -> set[str]:
        return {*provenance.QUANTIZE_PACKAGES, *formats.get(self.format.name).artifact_packages}

    def key(
        self,
        model_identity: str,
        quantize_versions: dict[str, str],
        engine_version: str,
        eval_inputs: str | None = None,
        compute_dtype: str = "bfloat16",
    ) -> str:
        """eval_inputs: harness.stages.evaluate.inputs.identity(), for cells with evals;
        compute_dtype: what the engine computes in (harness.cell.compute_dtype)."""
        payload = {
            "artifact": self.artifact_key(model_identity, quantize_versions),
            "engine": engine_key_fields(self.engine),
            "engine_version": engine_version,
            "workload": self.workload.model_dump(exclude={"repeats"} if self.workload.repeats == 1 else None),
        }
        if compute_dtype != "bfloat16":  # absent for bf16, so cells from before this field keep their keys
            payload["compute_dtype"] = compute_dtype
        if self.evals is not None:  # absent, not None: configs without evals keep their keys
            # settings added later enter only where they apply, so finished cells keep their keys
            evals = self.evals.model_dump(exclude={"timeout_s": True, "passkey": True, "kld": {"full_vocabulary"}})
            passkey = self.evals.passkey_spec()
            if passkey is not None:
                evals["passkey"] = passkey.model_dump()
            if eval_inputs is not None:
                evals["inputs"] = eval_inputs
            payload["evals"] = evals
        if self.serving is not None:
            serving = self.serving.model_dump(
                exclude={
                    "startup_timeout_s": True,
                    "request_timeout_s": True,
                    "port": True,
                    "formats": True,
                    "capacity": {"usd_per_hour", "price_source"},  # a price changes the cost, not what ran
                }
            )
            serving["slo"] = SloSpec().model_dump()  # judged after the fact (stages/serving/slo.py)
            if self.serving.prompts_file is not None:
                serving["prompts_file"] = content_identity(self.serving.prompts_file) or self.serving.prompts_file
            payload["serving"] = serving
        return _hash(payload)


#: The engine fields of cell keys, as one flat EngineSpec had them before each engine got its own
#: parameter model (schema 2): every key still holds every one of them, at its default where the
#: cell's engine has no such field, so finished rows keep their keys.
_KEY_ENGINE_FIELDS: dict[str, Any] = {
    "name": "vllm",
    "max_model_len": None,
    "gpu_memory_utilization": 0.9,
    "tensor_parallel_size": 1,
    "kv_cache_dtype": "auto",
    "enforce_eager": None,
    "cpu_kvcache_space_gib": 1,
    "seed": 0,
    "batch_size": 16,
    "threads": None,
}
#: engine fields added after keys existed → their default: in the key only when set to another value
_LATER_ENGINE_FIELDS: dict[str, Any] = {"pipeline_parallel_size": 1}
#: limits change whether a cell finishes, not what it measures
_NOT_IN_KEY = ("timeout_s", "memory_limit_gib")


def engine_key_fields(spec: EngineParams) -> dict[str, Any]:
    own = spec.model_dump(exclude=set(_NOT_IN_KEY))
    fields = {**_KEY_ENGINE_FIELDS, **own}
    for name, default in _LATER_ENGINE_FIELDS.items():
        if fields.get(name, default) == default:
            fields.pop(name, None)
    return fields


def _serving_of(config: Config, params: FormatParams) -> ServingSpec | None:
    spec = config.serving
    if spec is None or (spec.formats is not None and params.id not in spec.formats):
        return None
    return spec


def expand(config: Config) -> list[Cell]:
    """formats × calibration sets (only for formats that use data) × engines that serve
    the format × KV-cache dtypes, in the config's order. No cell needs another first: relative
    figures are derived after the cells (harness.results.compare)."""
    cells: list[Cell] = []
    for params in config.formats:
        fmt = formats.get(params.name)
        calibrations: tuple[CalibrationSpec | None, ...] = (
            config.calibration if fmt.needs_calibration(params) else (None,)
        )
        for calib in calibrations:
            for engine in config.engines:
                if engine.name in fmt.serving_engines():
                    cells.append(
                        Cell(params, calib, engine, config.workload, config.evals, _serving_of(config, params))
                    )
    return cells
