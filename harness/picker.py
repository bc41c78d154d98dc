"""The format picker: hardware, model, workload and quality tolerance in; a format, an engine, a
KV-cache dtype, the reasons, and the validation to run before shipping it out.

Why rules first: before anything is measured, the field's guide is the best prior (CPU/edge →
GGUF via llama.cpp, multi-LoRA on vLLM → GPTQ, a datacenter GPU → AWQ on Marlin, strict quality →
8-bit, Blackwell + aggressive → FP4). Why the memory planner next: a format that does not fit
with its KV cache at the asked concurrency × context is no answer, whatever the guide says; an
FP8 KV cache is tried before a format is vetoed. Why measured rows last: with `results`, what
was measured on this model and this hardware overrides the rules (a format below the
tolerance's recovery floor is out; the fastest serving cell left that fits wins), and the answer
names the rows that decided it. docs/picker.md states every rule and floor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from harness import formats as format_registry
from harness.errors import HarnessError
from harness.formats.base import working_group_size
from harness.gpus import GPUS, Gpu
from harness.plan import memory
from harness.results.decide import judge
from harness.results.read import format_entry, load_results
from harness.shapes import HUB_IDS, KNOWN_SHAPES, ModelShape, known_shape, load_shape

WORKLOADS = ("chat", "code", "reasoning", "math", "medical", "long-context")
#: workloads where a few points of recovery are wrong answers, not slightly worse prose
SENSITIVE_WORKLOADS = ("code", "reasoning", "math", "medical")
#: recovery floors in % of the bf16 baseline (docs/picker.md says why these three)
FLOORS: dict[str, float] = {"strict": 99.0, "balanced": 97.0, "aggressive": 94.0}
CPU_NAMES = ("cpu", "edge", "laptop")
TENSOR_PARALLEL_TRIES = (2, 4, 8)
GIB = 2**30


# ---------------------------------------------------------------------------------------------
# What the answer holds


@dataclass(frozen=True)
class CalibrationPlan:
    """The calibration set a data-using format is built with (a config `calibration` entry)."""

    name: str
    source: str
    domain: str
    samples: int
    seq_len: int
    note: str
    extra: tuple[tuple[str, str], ...] = ()  # hf: sets' subset/split/column

    def as_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "domain": self.domain,
            "samples": self.samples,
            "seq_len": self.seq_len,
            **dict(self.extra),
        }


@dataclass(frozen=True)
class EvalGate:
    """An eval that must reach `floor_pct` % of the bf16 baseline (column: the row's recovery)."""

    task: str  # a harness evals task name
    column: str  # the results column holding its recovery %
    floor_pct: float | None  # None: reported, no gate


@dataclass(frozen=True)
class ValidationPlan:
    calibration: CalibrationPlan | None
    calibration_note: str  # why there is (no) calibration
    evals: tuple[EvalGate, ...]
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        out = [f"calibration: {self.calibration_note}"]
        if self.calibration is not None:
            c = self.calibration
            out.append(f"  {c.source} (domain {c.domain}): {c.samples} samples x {c.seq_len} tokens; {c.note}")
        for gate in self.evals:
            floor = (
                f">= {gate.floor_pct:g} % of bf16 ({gate.column})"
                if gate.floor_pct is not None
                else "reported, no floor"
            )
            out.append(f"eval {gate.task}: {floor}")
        out.extend(self.notes)
        return out


@dataclass
class Recommendation:
    hardware: str
    model: str  # the known shape (or directory name) planned for
    model_source: str  # what a config serves: a hub id, builtin:NAME or a directory
    workload: str
    tolerance: str
    multi_lora: bool
    concurrency: int
    context: int
    format: str
    engine: str
    kv_cache_dtype: str
    tensor_parallel: int
    fits: bool | None  # None on CPU: no planner for host memory
    max_batch: int | None  # sequences of `context` tokens that fit (GPU)
    reasons: list[str]
    plan: ValidationPlan
    decided_by_rows: list[str] = field(default_factory=list)
    memory: memory.MemoryPlan | None = None
    format_entry: dict[str, Any] = field(default_factory=dict)  # the config's formats[] entry
    floor: float | None = None  # a recovery floor of the team's own, instead of the tolerance's

    @property
    def floor_pct(self) -> float:
        return self.floor if self.floor is not None else FLOORS[self.tolerance]

    def config_yaml(self) -> str:
        """A `harness run` config that validates this answer: the bf16 baseline beside the format
        (recovery and KLD need it), the plan's calibration set and evals, the asked workload."""
        return _config_yaml(self)


# ---------------------------------------------------------------------------------------------
# Inputs


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bm])$")


def resolve_model(spec: str, workload: str) -> tuple[str, str, ModelShape, list[str]]:
    """(name, config source, shape, reasons) for a known shape, a hub id of one, a size such as
    `70b`/`7b` (the nearest known shape by parameter count), or a local model directory."""
    reasons: list[str] = []
    name = known_shape(spec)
    if name is None:
        match = _SIZE.match(spec.strip().lower())
        if match:
            target = float(match.group(1)) * (1e9 if match.group(2) == "b" else 1e6)
            if target <= 0:
                raise HarnessError(f"model size {spec!r} must be positive")
            sizes = {n: load_shape(n).parameter_count for n in KNOWN_SHAPES if n != "qwen2.5-coder-7b"}
            name = min(sizes, key=lambda n: abs(math.log(sizes[n] / target)))
            if name == "qwen2.5-7b" and workload == "code":
                name = "qwen2.5-coder-7b"  # the same shape; a code workload serves the coder model
            reasons.append(
                f"model {spec}: planned as {name} ({load_shape(name).parameter_count / 1e9:.2f}B parameters), the "
                "nearest known shape"
            )
    if name is not None:
        source = spec if "/" in spec and known_shape(spec) == name else HUB_IDS[name]
        return name, source, load_shape(name), reasons
    path = Path(spec).expanduser()
    if (path / "config.json").is_file():
        shape = load_shape(path)
        return shape.name, str(path), shape, reasons
    raise HarnessError(
        f"unknown model {spec!r}: give a known shape ({', '.join(KNOWN_SHAPES)}), a size such as 70b or 7b, or a "
        "local model directory"
    )


def resolve_hardware(hardware: str) -> Gpu | None:
    """None for a CPU (`cpu`, `edge`, `laptop`), else the GPU of harness.gpus."""
    name = hardware.strip().lower()
    if name in CPU_NAMES:
        return None
    if name not in GPUS:
        raise HarnessError(f"unknown hardware {hardware!r} (known: cpu, {', '.join(GPUS)})")
    return GPUS[name]


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise HarnessError(f"unknown {what} {value!r} (known: {', '.join(allowed)})")
    return value


def _group_size(shape: ModelShape) -> int:
    """The largest usual INT4 group size that divides every Linear input (128, else 64, 32)."""
    return working_group_size({lin.in_features for lin in shape.block_linears()}, (128, 64, 32)) or 128


def _default_entry(fmt: str, shape: ModelShape) -> dict[str, Any]:
    if fmt in ("w4a16-gptq", "w4a16-awq"):
        return {"name": fmt, "group_size": _group_size(shape)}
    return {"name": fmt}


# ---------------------------------------------------------------------------------------------
# Rules


def eight_bit_format(gpu: Gpu) -> str:
    """The 8-bit format of a GPU: FP8 where it has FP8 tensor cores, else W8A8 INT8 (its INT8 ones)."""
    return "fp8-dynamic" if "fp8" in gpu.native else "w8a8-int8"


def _gpu_rules(gpu: Gpu, workload: str, tolerance: str, multi_lora: bool) -> tuple[list[str], list[str]]:
    """Candidate formats in order of preference, and why."""
    sensitive = workload in SENSITIVE_WORKLOADS
    if tolerance == "strict":
        what = f"a {workload} workload" + (" (wrong answers, not worse prose, when quality slips)" if sensitive else "")
        if eight_bit_format(gpu) == "fp8-dynamic":
            reasons = [
                f"rule: strict quality (floor {FLOORS['strict']:g} %) for {what} → 8-bit weights: FP8 (fp8-dynamic), "
                f"native on {gpu.name} (SM {gpu.compute_capability}), no calibration data"
            ]
            candidates = ["fp8-dynamic"]
        else:
            reasons = [
                f"rule: strict quality (floor {FLOORS['strict']:g} %) for {what} → 8-bit weights; {gpu.name} has no "
                "FP8 tensor cores, so W8A8 INT8 (its INT8 tensor cores) rather than weight-only FP8"
            ]
            candidates = ["w8a8-int8"]
        reasons.append(
            "4-bit formats are not considered under the strict floor; if 8-bit does not fit, the answer is more "
            "memory, not fewer bits"
        )
        if multi_lora:
            reasons.append(
                "multi-LoRA asked: the strict floor outranks the multi-LoRA → GPTQ rule; the validation config does "
                "not exercise LoRA adapters, check them on the 8-bit base"
            )
        return candidates, reasons
    if multi_lora:
        return ["w4a16-gptq", "w4a16-awq"], [
            "rule: multi-LoRA on vLLM → GPTQ INT4 (Marlin kernels): the 4-bit base leaves memory for adapters and KV "
            "cache; adapter memory itself is not planned here"
        ]
    if tolerance == "aggressive" and "fp4" in gpu.native:
        return ["nvfp4", "mxfp4"], [
            f"rule: Blackwell ({gpu.name}, FP4 tensor cores) + aggressive → NVFP4 (W4A4, FP8 scale per 16 values); "
            "MXFP4 is the fallback. Validate per block: KLD tail and top-1 agreement against bf16, not only the "
            "averages"
        ]
    return ["w4a16-awq", "w4a16-gptq"], [
        f"rule: datacenter GPU, {tolerance} quality → AWQ INT4 (AWQ-Marlin kernels on SM80+): a quarter of bf16's "
        "weight memory, activation-aware scales"
    ]


def _kv_order(workload: str, tolerance: str) -> tuple[str, ...]:
    if workload == "long-context" and tolerance != "strict":
        return ("fp8", "auto")  # KV dominates a long context: halve it first
    return ("auto", "fp8")


def _gib(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def _plan(
    shape: ModelShape | str, entry: dict[str, Any], kv: str, batch: int, context: int, gpu: Gpu | str, tp: int = 1
) -> memory.MemoryPlan | None:
    try:
        return memory.plan(shape, format_registry.params_from_entry(entry), kv, batch, context, gpu, tensor_parallel=tp)
    except HarnessError:
        return None


def _fit_line(p: memory.MemoryPlan) -> str:
    verdict = "fits" if p.fits else f"does not fit (short by {_gib(-p.headroom_bytes)})"
    return (
        f"{p.format} + {'bf16' if p.kv_dtype == 'auto' else p.kv_dtype} KV at {p.batch} x {p.context} on {p.gpu}"
        f"{' x' + str(p.tensor_parallel) if p.tensor_parallel > 1 else ''}: weights {_gib(p.weights_bytes)} + KV "
        f"{_gib(p.kv_bytes)}"
        f" + activations {_gib(p.activation_bytes)} = {_gib(p.total_bytes)} of {_gib(p.capacity_bytes)} per GPU: "
        f"{verdict}"
    )


def _kv_words(kv: str) -> str:
    return "a bf16 KV cache" if kv == "auto" else f"an {kv.upper()} KV cache"


def _where_it_fits(shape: ModelShape, entry: dict[str, Any], gpu: Gpu, batch: int, context: int) -> list[str]:
    """Where `entry` serves batch × context (either KV dtype): the smallest tensor-parallel degree
    of this GPU, and the smallest larger GPU on its own."""
    lines = []
    for tp in TENSOR_PARALLEL_TRIES:
        fitting = [p for kv in ("auto", "fp8") if (p := _plan(shape, entry, kv, batch, context, gpu, tp)) and p.fits]
        if fitting:
            lines.append(f"option: tensor_parallel {tp} ({tp} x {gpu.name}): " + _fit_line(fitting[0]))
            break
    else:
        lines.append(
            f"option: none with up to tensor_parallel {TENSOR_PARALLEL_TRIES[-1]}: {entry['name']} does not fit "
            f"{TENSOR_PARALLEL_TRIES[-1]} x {gpu.name}"
        )
    for other in sorted(GPUS.values(), key=lambda g: g.visible_bytes):
        if other.visible_bytes <= gpu.visible_bytes:
            continue
        fitting = [
            p
            for kv in ("auto", "fp8")
            if (p := _plan(shape, entry, kv, batch, context, other)) and p.fits and not p.note
        ]
        if fitting:
            lines.append(f"option: one {other.name}: " + _fit_line(fitting[0]))
            break
    else:
        lines.append(f"option: no single GPU in harness/gpus.py holds {entry['name']} at {batch} x {context}")
    return lines


@dataclass
class _Choice:
    entry: dict[str, Any]
    kv: str
    plan: memory.MemoryPlan | None
    fits: bool | None
    tensor_parallel: int = 1


def _choose_gpu(
    shape: ModelShape,
    gpu: Gpu,
    candidates: list[str],
    kv_order: tuple[str, ...],
    batch: int,
    context: int,
    reasons: list[str],
) -> _Choice:
    """The first candidate that fits with a KV dtype (preferred dtype first); if none does, the
    candidate and KV dtype that serve the most sequences, with where the full load would fit."""
    tried: list[memory.MemoryPlan] = []
    for fmt in candidates:
        entry = _default_entry(fmt, shape)
        plans = [p for kv in kv_order if (p := _plan(shape, entry, kv, batch, context, gpu)) is not None]
        usable = [p for p in plans if not p.note]
        for p in plans:
            if p.note:
                reasons.append(f"veto {fmt} on {gpu.name}: {p.note}")
        for i, p in enumerate(usable):
            if p.fits:
                if i > 0:
                    reasons.append(
                        "memory: "
                        + _fit_line(usable[0])
                        + f"; with an FP8 KV cache instead: {_gib(p.total_bytes)} fits"
                    )
                reasons.append("memory: " + _fit_line(p))
                return _Choice(entry, p.kv_dtype, p, True)
        if usable:
            tried.extend(usable)
            reasons.append(f"veto {fmt}: " + "; ".join(_fit_line(p) for p in usable))
    if not tried:
        raise HarnessError(f"none of {', '.join(candidates)} can be served on {gpu.name}")
    best = max(tried, key=lambda p: (p.max_batch, -candidates.index(p.format) if p.format in candidates else 0))
    entry = _default_entry(best.format, shape)
    reasons.append(
        f"nothing fits one {gpu.name} at {batch} x {context}: the best option is {best.format} with "
        f"{_kv_words(best.kv_dtype)}, "
        f"{_gib(best.total_bytes)} against {_gib(best.capacity_bytes)}; it serves at most {best.max_batch} concurrent "
        f"{context}-token sequence(s) on one {gpu.name}"
    )
    reasons.extend(_where_it_fits(shape, entry, gpu, batch, context))
    if entry["name"] in ("fp8-dynamic", "w8a8-int8"):  # strict: bf16 needs more still
        reasons.extend(
            line.replace("option:", "bf16 (unquantized) needs:", 1)
            for line in _where_it_fits(shape, {"name": "bf16"}, gpu, batch, context)
        )
    return _Choice(entry, best.kv_dtype, best, False)


def _cpu_rule(
    shape: ModelShape, tolerance: str, multi_lora: bool, batch: int, context: int, reasons: list[str]
) -> _Choice:
    fmt = "gguf-q5_k_m" if tolerance == "strict" else "gguf-q4_k_m"
    reasons.append(
        "rule: CPU/edge → GGUF via llama.cpp (K-quant kernels for AVX2/AVX-512/NEON/Metal): "
        + (
            "Q5_K_M under the strict floor (5.5 bits in its base type)"
            if tolerance == "strict"
            else f"Q4_K_M for {tolerance} quality"
        )
    )
    w = memory.weights(shape, fmt).total
    kv = memory.kv_bytes(shape, "auto", batch, context)
    reasons.append(
        f"memory (host RAM, not planned against a capacity): weights {_gib(w)} (llama.cpp's per-tensor types) + "
        f"f16 KV cache {_gib(kv)} at {batch} x {context} = {_gib(w + kv)}; llama.cpp has no FP8 KV cache"
    )
    if multi_lora:
        reasons.append(
            "multi-LoRA asked: llama.cpp applies LoRA adapters per context; vLLM's batched multi-LoRA serving needs a "
            "GPU"
        )
    return _Choice({"name": fmt}, "auto", None, None)


# ---------------------------------------------------------------------------------------------
# Validation plan


def _calibration(workload: str, model: str, context: int) -> CalibrationPlan:
    seq_len = min(2048, context)
    if model == "smollm2-135m" or workload == "code":
        domain = "code" if workload == "code" else "prose"
        return CalibrationPlan(
            domain,
            f"builtin:{domain}",
            domain,
            512,
            seq_len,
            "builtin text (offline); in-domain data of your own (a .jsonl with a text column) is better still",
        )
    if workload in ("reasoning", "math"):
        return CalibrationPlan(
            "math",
            "hf:openai/gsm8k",
            "math",
            512,
            seq_len,
            "in-domain: grade-school math questions; add your own reasoning traces when you have them",
            (("subset", "main"), ("split", "train"), ("column", "question")),
        )
    note = "generic chat prompts" + (
        "; replace with your own medical text (no medical set ships with the harness)" if workload == "medical" else ""
    )
    return CalibrationPlan(
        "chat",
        "hf:HuggingFaceH4/ultrachat_200k",
        "chat",
        512,
        seq_len,
        note,
        (("split", "train_sft"), ("column", "prompt")),
    )


def _validation(
    fmt: str, workload: str, tolerance: str, model: str, context: int, floor: float | None = None
) -> ValidationPlan:
    floor = FLOORS[tolerance] if floor is None else floor
    spec = format_registry.REGISTRY[fmt]
    needs = spec.needs_calibration(format_registry.params_from_entry({"name": fmt}))
    if needs:
        calib: CalibrationPlan | None = _calibration(workload, model, context)
        note = f"{fmt} is built from calibration data: in-domain for a {workload} workload"
    else:
        calib = None
        note = (
            f"none: {fmt} needs no data"
            + (
                " (llama.cpp's quantize without an importance matrix, as the harness builds it)"
                if fmt.startswith("gguf-")
                else ""
            )
            + (" (scales from the weights; activations scaled per token at run time)" if fmt == "fp8-dynamic" else "")
        )
    gates = [EvalGate("perplexity", "perplexity_recovery_pct", floor)]
    if workload == "code":
        gates.insert(0, EvalGate("humaneval", "pass_at_1_recovery_pct", floor))
    elif workload in ("reasoning", "math"):
        gates[:0] = [
            EvalGate("math500", "math_exact_match_recovery_pct", floor),
            EvalGate("gsm8k", "gsm8k_strict_match_recovery_pct", floor),
        ]
    gates.append(EvalGate("kld", "kld_mean", None))
    notes = [f"ship only if every gated eval recovers at least {floor:g} % of the bf16 baseline ({tolerance})"]
    if floor != FLOORS[tolerance]:
        notes[0] = f"ship only if every gated eval recovers at least {floor:g} % of the bf16 baseline (the asked floor)"
    if fmt in ("nvfp4", "mxfp4", "nvfp4a16", "mxfp4a16"):
        notes.append(
            "per-block validation: FP4 scales each 16 (NVFP4) or 32 (MXFP4) values; read kld_p99 and top1_agreement, "
            "not only means, and compare calibration sets"
        )
    if workload == "medical":
        notes.append("no medical eval ships with the harness: add an lm-eval task by name to evals.tasks")
    if workload == "long-context":
        notes.append(
            "no long-context eval ships with the harness (perplexity is on short windows): add an lm-eval "
            "long-context task by name"
        )
    return ValidationPlan(calib, note, tuple(gates), tuple(notes))


# ---------------------------------------------------------------------------------------------
# Measured rows


def _isnan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return True


def _measured(
    rows: Any, name: str, model_source: str, gpu: Gpu | None, shape: ModelShape, rec: Recommendation, floor: float
) -> tuple[_Choice, str, list[str]] | None:
    """The fastest serving row of this model on this hardware that meets the floor (and fits),
    or None; appends why to rec.reasons."""
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    same_model = [
        r
        for r in records
        if known_shape(str(r.get("model_source") or "")) == name or r.get("model_source") == model_source
    ]
    if not same_model:
        rec.reasons.append(f"results: no row measures {name}; the rules stand")
        return None
    if gpu is None:
        here = [r for r in same_model if r.get("hw_device") == "cpu"]
    else:
        here = [r for r in same_model if r.get("hw_name") == gpu.product]
    if len(here) < len(same_model):
        rec.reasons.append(
            f"results: {len(same_model) - len(here)} rows of {name} were measured on other hardware and are left out"
        )
    if not here:
        rec.reasons.append(f"results: no row of {name} was measured on {rec.hardware}; the rules stand")
        return None
    serving = [
        r
        for r in here
        if r.get("status") == "ok" and r.get("engine_speed_class") == "serving" and not _isnan(r.get("output_tok_s"))
    ]
    passing, out, unknown = [], [], []
    for r in serving:
        judged = judge(r, floor)  # the report's rule: the paired verdict, else the point recovery
        if judged.label == "no quality":
            unknown.append(r["cell_name"])
        elif judged.label in ("worse", "inconclusive"):
            out.append((r, judged.detail))
        else:
            passing.append((r, judged.detail))
    for r, why in out:
        rec.reasons.append(f"measured: {r['cell_name']} does not pass the {floor:g} % floor: {why}: out")
    if unknown:
        rec.reasons.append(
            f"measured: {len(unknown)} serving rows have no recovery figure and cannot show they meet the floor "
            f"({', '.join(unknown[:4])}{', ...' if len(unknown) > 4 else ''})"
        )
    passing.sort(key=lambda item: -float(item[0]["output_tok_s"]))
    for r, value in passing:
        entry = format_entry(r)
        plan = None
        if gpu is not None:
            plan = _plan(shape, entry, r["kv_cache_dtype"], rec.concurrency, rec.context, gpu)
            if plan is None or not plan.fits or plan.note:
                rec.reasons.append(
                    f"measured: {r['cell_name']} ({float(r['output_tok_s']):.1f} tok/s) does not fit "
                    f"{rec.concurrency} x {rec.context} on {gpu.name}: skipped"
                )
                continue
        faster_out = [o["cell_name"] for o, _ in out if float(o["output_tok_s"]) > float(r["output_tok_s"])]
        rec.reasons.append(
            f"measured: {r['cell_name']} is the fastest serving cell that meets the floor: "
            f"{float(r['output_tok_s']):.1f} output tok/s, "
            f"{value} (run {r.get('run_id')}, {r.get('workload_prompts')} prompts of "
            f"{r.get('workload_input_len')} + {r.get('workload_output_len')} tokens)"
        )
        return (
            _Choice(entry, str(r["kv_cache_dtype"]), plan, True if plan else None),
            str(r["engine"]),
            [r["cell_name"], *faster_out],
        )
    rec.reasons.append(
        f"results: no measured serving row of {name} on this hardware meets the {floor:g} % floor; the rules stand"
    )
    return None


# ---------------------------------------------------------------------------------------------
# The picker


def pick(
    hardware: str,
    model: str,
    workload: str,
    tolerance: str,
    multi_lora: bool = False,
    concurrency: int = 128,
    context: int = 2048,
    results: Path | None = None,
    floor: float | None = None,
) -> Recommendation:
    """A format, engine and KV-cache dtype for serving `model` on `hardware`, with the reasons and
    the validation plan; measured rows in `results` override the rules (docs/picker.md)."""
    _check_choice("workload", workload, WORKLOADS)
    _check_choice("tolerance", tolerance, tuple(FLOORS))
    if concurrency < 1 or context < 16:
        raise HarnessError(f"concurrency must be at least 1 and context at least 16 (got {concurrency}, {context})")
    if floor is not None and not 0 < floor <= 100:
        raise HarnessError(f"floor must be a recovery percentage in (0, 100] (got {floor})")
    gpu = resolve_hardware(hardware)
    name, source, shape, reasons = resolve_model(model, workload)
    asked_floor, floor = floor, FLOORS[tolerance] if floor is None else floor
    if gpu is None:
        choice = _cpu_rule(shape, tolerance, multi_lora, concurrency, context, reasons)
        engine = "llamacpp"
    else:
        candidates, why = _gpu_rules(gpu, workload, tolerance, multi_lora)
        reasons.extend(why)
        kv_order = _kv_order(workload, tolerance)
        if kv_order[0] == "fp8":
            reasons.append("long context: the KV cache dominates, an FP8 KV cache (half of bf16's) is tried first")
        choice = _choose_gpu(shape, gpu, candidates, kv_order, concurrency, context, reasons)
        engine = "vllm"
    rec = Recommendation(
        hardware=hardware.strip().lower(),
        model=name,
        model_source=source,
        workload=workload,
        tolerance=tolerance,
        multi_lora=multi_lora,
        concurrency=concurrency,
        context=context,
        format=choice.entry["name"],
        engine=engine,
        kv_cache_dtype=choice.kv,
        tensor_parallel=1,
        fits=choice.fits,
        max_batch=choice.plan.max_batch if choice.plan else None,
        reasons=reasons,
        plan=_validation(choice.entry["name"], workload, tolerance, name, context, asked_floor),
        memory=choice.plan,
        format_entry=choice.entry,
        floor=asked_floor,
    )
    if results is not None:
        measured = _measured(load_results(results), name, source, gpu, shape, rec, floor)
        if measured is not None:
            won, won_engine, rows = measured
            if (won.entry["name"], won_engine, won.kv) != (rec.format, rec.engine, rec.kv_cache_dtype):
                rec.reasons.append(
                    f"measured rows override the rules: {rec.format}/{rec.engine}/kv-{rec.kv_cache_dtype} → "
                    f"{won.entry['name']}/{won_engine}/kv-{won.kv}"
                )
            else:
                rec.reasons.append("measured rows agree with the rules")
            rec.format, rec.engine, rec.kv_cache_dtype, rec.format_entry = (
                won.entry["name"],
                won_engine,
                won.kv,
                won.entry,
            )
            rec.fits, rec.memory = won.fits, won.plan
            rec.max_batch = won.plan.max_batch if won.plan else None
            rec.decided_by_rows = rows
            rec.plan = _validation(rec.format, workload, tolerance, name, context, asked_floor)
    return rec


# ---------------------------------------------------------------------------------------------
# The validation config


def baseline_format(engine: str) -> str:
    """The unquantized format a validation config measures beside the candidate: the reference
    its recovery and KLD are computed against (harness.results.compare). llama.cpp's own BF16
    GGUF for a GGUF answer: a GGUF cell is judged against a baseline of its engine, never against
    another engine's numerics."""
    return "gguf-bf16" if engine == "llamacpp" else "bf16"


def _config_yaml(rec: Recommendation) -> str:
    fmt = format_registry.REGISTRY[rec.format]
    reference = baseline_format(rec.engine)
    baseline = fmt.is_baseline or rec.format == reference
    formats: list[Any] = [reference] if baseline else [reference, rec.format_entry or {"name": rec.format}]
    output_len = max(1, min(256, rec.context // 4))
    if rec.engine == "vllm":
        engines: list[dict[str, Any]] = [
            {
                "name": "vllm",
                "max_model_len": rec.context,
                "kv_cache_dtype": rec.kv_cache_dtype,
                "tensor_parallel_size": rec.tensor_parallel,
                "gpu_memory_utilization": 0.9,
            }
        ]
    else:  # llama.cpp: its own unquantized GGUF is the reference its cells are judged against
        engines = [{"name": rec.engine, "max_model_len": rec.context}]
    tasks = [g.task for g in rec.plan.evals if g.task != "kld"]
    data: dict[str, Any] = {
        "name": re.sub(r"[^A-Za-z0-9_.-]", "-", f"pick-{rec.model}-{rec.format}")[:64],
        "model": {"source": rec.model_source},
        "formats": formats,
    }
    if rec.plan.calibration is not None:
        data["calibration"] = [rec.plan.calibration.as_config()]
    data["workload"] = {"prompts": rec.concurrency, "input_len": rec.context - output_len, "output_len": output_len}
    data["engine"] = engines if len(engines) > 1 else engines[0]
    data["evals"] = {
        "tasks": tasks,
        "limit": None,
        "max_model_len": max(2048, rec.context),
        "allow_code_execution": "humaneval" in tasks,
    }
    data["output"] = f"results/{data['name']}"
    header = [
        f"# harness pick: {rec.format} on {rec.engine} (KV {rec.kv_cache_dtype}) for {rec.model} on {rec.hardware}, "
        f"{rec.workload}, {rec.tolerance} ({rec.concurrency} x {rec.context})",
        f"# Gates (compare each cell's recovery columns with the {reference} row before shipping):",
        *[f"#   {line}" for line in rec.plan.lines()],
    ]
    if rec.fits is False:
        header.append(
            f"# Memory: the asked load does not fit one {rec.hardware}; vLLM will run at most {rec.max_batch} "
            "sequences at once (see the reasons)"
        )
    if rec.memory is not None and not baseline:
        bf16 = _plan(
            load_shape(rec.model) if rec.model in KNOWN_SHAPES else rec.model_source,
            {"name": "bf16"},
            "auto",
            1,
            rec.context,
            rec.memory.gpu,
        )
        if bf16 is not None and not bf16.fits:
            header.append(
                f"# The bf16 baseline does not fit one {rec.memory.gpu} ({_gib(bf16.total_bytes)} for one sequence): "
                "run it with tensor_parallel_size > 1 or on a larger GPU"
            )
    return "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# The fallback chain's steps (harness.plan.fallback walks them)


def rule_candidates(rec: Recommendation) -> list[str]:
    """The formats the rules would try for this question, in order (a CPU: the GGUF rule's one)."""
    gpu = resolve_hardware(rec.hardware)
    if gpu is None:
        return [rec.format]
    return _gpu_rules(gpu, rec.workload, rec.tolerance, rec.multi_lora)[0]


def fits_on(rec: Recommendation, fmt: str, tensor_parallel: int) -> bool:
    """Whether `fmt` with the answer's KV-cache dtype serves the asked load on `tensor_parallel`
    of the asked GPU (a CPU: always; host memory is not planned)."""
    gpu = resolve_hardware(rec.hardware)
    if gpu is None:
        return True
    shape = resolve_model(rec.model_source, rec.workload)[2]
    plan = _plan(
        shape, _default_entry(fmt, shape), rec.kv_cache_dtype, rec.concurrency, rec.context, gpu, tensor_parallel
    )
    return plan is not None and plan.fits and not plan.note


def variant(rec: Recommendation, fmt: str, tensor_parallel: int = 1) -> Recommendation:
    """The same question answered with `fmt` (a step of the fallback chain): its validation plan
    and config, on `tensor_parallel` devices."""
    if fmt == rec.format and tensor_parallel == rec.tensor_parallel:
        return rec
    gpu = resolve_hardware(rec.hardware)
    shape = resolve_model(rec.model_source, rec.workload)[2]
    entry = _default_entry(fmt, shape)
    plan = (
        None
        if gpu is None
        else _plan(shape, entry, rec.kv_cache_dtype, rec.concurrency, rec.context, gpu, tensor_parallel)
    )
    return replace(
        rec,
        format=fmt,
        format_entry=entry,
        engine="llamacpp" if fmt.startswith("gguf-") else "vllm",
        tensor_parallel=tensor_parallel,
        fits=None if plan is None else plan.fits,
        max_batch=None if plan is None else plan.max_batch,
        memory=plan,
        reasons=[
            *rec.reasons,
            f"fallback: {fmt}" + (f" on tensor parallel {tensor_parallel}" if tensor_parallel > 1 else ""),
        ],
        plan=_validation(fmt, rec.workload, rec.tolerance, rec.model, rec.context, rec.floor),
        decided_by_rows=[],
    )
