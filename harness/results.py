"""The results table: one row per cell, in parquet.

On disk, in the output directory:
  rows/<cell_key>.parquet   one file per finished cell, written to a temporary file and
                            renamed: a killed run leaves whole rows or none, and two runs
                            on the same directory never write the same file half-way.
  results.parquet           every row merged, rewritten atomically after each cell (under
                            locks/merge.lock: two runs' merges never lose each other's rows).
  locks/<cell_key>.lock     held while a run computes the cell (harness.cell_lock).
  logs/<cell_key>/          each stage's log (engines say there which kernel they chose).

When a row cannot be written (a full disk, a read-only directory), the run stops with one
line (ResultsWriteError, exit status 74): every later row would be lost the same way, and
the rows already written are whole, so the next run resumes after the space is freed.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.cell_lock import LOCKS_DIR, held
from harness.errors import HarnessError

STATUSES = ("ok", "failed", "unsupported")
# Final statuses are not recomputed on a resume; "failed" cells are tried again.
FINAL_STATUSES = ("ok", "unsupported")

_LATENCY = [f"{metric}_{stat}_ms" for metric in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "p50", "p90", "p99")]
#: one point of a serving sweep: fixed concurrency (request_rate null) or Poisson arrivals
SERVING_POINT = pa.struct([
    ("mode", pa.string()),  # "concurrency" or "rate"
    ("concurrency", pa.int32()),  # in-flight limit (rate mode: null, unbounded)
    ("request_rate", pa.float64()),  # Poisson requests/s (concurrency mode: null)
    ("requests", pa.int32()),
    ("completed", pa.int32()),
    ("failed", pa.int32()),
    ("duration_s", pa.float64()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("request_throughput", pa.float64()),  # completed requests/s
    ("output_tok_s", pa.float64()),
    ("total_tok_s", pa.float64()),
    *[(name, pa.float64()) for name in _LATENCY],
    ("goodput_rps", pa.float64()),  # requests/s that met every SLO set
    ("slo_attained_pct", pa.float64()),
    ("error", pa.string()),  # the first request error, if any failed
])

SCHEMA = pa.schema([
    # identity
    ("run_id", pa.string()),
    ("config_name", pa.string()),
    ("config_path", pa.string()),
    ("config_hash", pa.string()),
    ("cell_key", pa.string()),
    ("cell_name", pa.string()),
    ("model_source", pa.string()),
    ("model_identity", pa.string()),
    ("model_note", pa.string()),
    ("model_synthetic", pa.bool_()),  # random weights in the model's exact shape: speed and memory only
    ("format", pa.string()),
    ("format_id", pa.string()),
    ("format_params", pa.string()),  # JSON
    ("weight_bits", pa.int32()),
    ("activation_bits", pa.int32()),
    ("group_size", pa.int32()),
    ("ignored_modules", pa.string()),  # JSON list
    ("scheme", pa.string()),  # from the artifact's quantization_config, e.g. "pack-quantized: weights int4 group 64 sym"
    ("calibration_name", pa.string()),
    ("calibration_domain", pa.string()),
    ("calibration_source", pa.string()),
    ("calibration_samples", pa.int32()),
    ("calibration_seq_len", pa.int32()),
    ("calibration_seed", pa.int32()),
    ("kv_cache_dtype", pa.string()),
    ("engine", pa.string()),
    ("engine_version", pa.string()),
    ("engine_speed_class", pa.string()),  # "serving" (vLLM, llama.cpp) or "reference" (transformers): never compare across
    ("engine_settings", pa.string()),  # JSON: the arguments the engine ran with
    ("engine_env", pa.string()),  # JSON: environment variables set for the engine
    ("kernels", pa.string()),  # "; "-joined "Kernel for Layer" lines from the engine log
    ("workload_prompts", pa.int32()),
    ("workload_input_len", pa.int32()),
    ("workload_output_len", pa.int32()),
    ("workload_seed", pa.int32()),
    # outcome
    ("status", pa.string()),
    ("reason", pa.string()),
    ("failed_stage", pa.string()),
    # artifact
    ("artifact_key", pa.string()),
    ("artifact_path", pa.string()),
    ("artifact_bytes", pa.int64()),
    ("parameters", pa.int64()),
    ("bits_per_weight", pa.float64()),  # 8 * checkpoint bytes / parameters (scales included)
    ("artifact_reused", pa.bool_()),
    ("quantize_s", pa.float64()),
    ("quantize_peak_rss_bytes", pa.int64()),
    ("quantize_peak_gpu_bytes", pa.int64()),
    # engine figures (offline throughput)
    ("load_s", pa.float64()),
    ("generate_s", pa.float64()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("output_tok_s", pa.float64()),
    ("total_tok_s", pa.float64()),
    ("requests_per_s", pa.float64()),
    ("engine_peak_rss_bytes", pa.int64()),
    ("engine_peak_gpu_bytes", pa.int64()),
    # the engine's own memory split (vLLM's log: weights loaded, KV cache allocated)
    ("engine_weights_bytes", pa.int64()),
    ("engine_kv_cache_bytes", pa.int64()),
    ("engine_kv_cache_tokens", pa.int64()),
    # planned memory (harness.memory) for the workload's batch and context, beside the measured
    ("planned_weights_bytes", pa.int64()),
    ("planned_kv_cache_bytes", pa.int64()),
    ("planned_activation_bytes", pa.int64()),
    ("planned_total_bytes", pa.int64()),
    ("planned_capacity_bytes", pa.int64()),  # what the engine may fill: GPU memory x utilization, or host memory
    ("planned_batch", pa.int32()),
    ("planned_context", pa.int32()),
    ("planned_note", pa.string()),  # why there is no plan (e.g. an architecture the planner does not know)
    # roofline: tok/s_max = min(B*BW / (W + B*L*KV_per_token), FLOPs / (2N + 4*layers*d*L))
    ("roofline_tok_s", pa.float64()),
    ("roofline_fraction", pa.float64()),  # output_tok_s / roofline_tok_s
    ("roofline_bound", pa.string()),  # "memory" or "compute"
    ("roofline_note", pa.string()),  # the reason a row has no roofline fraction
    ("hw_bandwidth_bytes_s", pa.float64()),
    ("hw_flops", pa.float64()),
    ("hw_peak_source", pa.string()),  # datasheet name, or "measured on this host"
    # serving under load: one entry per sweep point (HTTP streaming on 127.0.0.1)
    ("serving", pa.list_(SERVING_POINT)),
    ("serving_server", pa.string()),  # the server command line
    ("serving_startup_s", pa.float64()),
    ("serving_peak_rss_bytes", pa.int64()),  # the server's process tree during the sweep
    ("serving_peak_gpu_bytes", pa.int64()),
    ("serving_note", pa.string()),  # why a cell has no serving figures (e.g. a reference engine has no server)
    ("serving_slo", pa.string()),  # JSON {ttft_ms, tpot_ms, e2el_ms}
    # quality (lm-eval; KLD against the baseline cell on the same held-out tokens)
    ("pass_at_1", pa.float64()),  # HumanEval, greedy, n=1, temperature 0
    ("math_exact_match", pa.float64()),
    ("gsm8k_strict_match", pa.float64()),
    ("gsm8k_flexible_match", pa.float64()),
    ("perplexity", pa.float64()),  # word perplexity on held-out prose
    ("bits_per_byte", pa.float64()),
    ("kld_mean", pa.float64()),
    ("kld_p99", pa.float64()),
    ("top1_agreement", pa.float64()),
    ("kld_positions", pa.int64()),
    ("kld_reference", pa.string()),  # the baseline cell the KLD is against
    ("pass_at_1_recovery_pct", pa.float64()),  # % of the baseline's value (perplexity: baseline / cell)
    ("math_exact_match_recovery_pct", pa.float64()),
    ("gsm8k_strict_match_recovery_pct", pa.float64()),
    ("perplexity_recovery_pct", pa.float64()),
    ("recovery_reference", pa.string()),
    ("eval_limit", pa.int32()),
    ("eval_samples", pa.string()),  # JSON {task: documents scored}
    ("eval_task_versions", pa.string()),  # JSON {task: version}
    ("eval_settings", pa.string()),  # JSON: generation settings (greedy, n=1, temperature 0, max_gen_toks)
    ("lm_eval_version", pa.string()),
    ("eval_note", pa.string()),  # e.g. why HumanEval was skipped
    ("eval_s", pa.float64()),
    # environment
    ("harness_git_sha", pa.string()),
    ("harness_version", pa.string()),
    ("packages", pa.string()),  # JSON {distribution: version}
    ("hw_device", pa.string()),
    ("hw_name", pa.string()),
    ("hw_count", pa.int32()),
    ("hw_memory_bytes", pa.int64()),
    ("hw_compute_capability", pa.string()),
    ("hw_driver", pa.string()),
    ("hw_cpu_flags", pa.string()),
    ("hostname", pa.string()),
    ("python", pa.string()),
    ("started_at", pa.timestamp("ms", tz="UTC")),
    ("finished_at", pa.timestamp("ms", tz="UTC")),
    ("wall_s", pa.float64()),
])
COLUMNS = tuple(SCHEMA.names)


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def row_table(row: dict[str, Any]) -> pa.Table:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"columns not in the results schema: {sorted(unknown)}")
    if row.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {row.get('status')!r}")
    return pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS}], schema=SCHEMA)


class ResultsWriteError(HarnessError):
    """The results directory cannot be written (full disk, read-only): the run stops."""

    exit_code = 74  # EX_IOERR


def write_row(out_dir: Path, row: dict[str, Any]) -> Path:
    """Write one cell's row atomically, then refresh the merged table. Raises ResultsWriteError
    when either cannot be written; a row file is then whole or absent, never half-written."""
    path = out_dir / "rows" / f"{row['cell_key']}.parquet"
    table = row_table(row)
    cell = row.get("cell_name") or row["cell_key"]
    try:
        _atomic_write_table(table, path)
    except OSError as exc:
        raise ResultsWriteError(
            f"cannot write the row of cell {cell} ({row.get('status')}) to {path.parent}: {_why(exc)}; "
            "the run stops (the rows written before are intact: free the space and run again to resume)"
        ) from exc
    try:
        merge(out_dir)
    except OSError as exc:
        raise ResultsWriteError(
            f"the row of cell {cell} is saved in {path.parent}, but {out_dir / 'results.parquet'} cannot be rewritten: "
            f"{_why(exc)}; the run stops (run again once there is space: the merge is redone)"
        ) from exc
    return path


def merge_if_stale(out_dir: Path) -> None:
    """Redo the merge when a row file is newer than results.parquet (a run stopped between the
    two, e.g. on a full disk). Raises ResultsWriteError when it still cannot be written."""
    rows = list((out_dir / "rows").glob("*.parquet"))
    merged = out_dir / "results.parquet"
    if not rows or (merged.is_file() and merged.stat().st_mtime_ns >= max(r.stat().st_mtime_ns for r in rows)):
        return
    try:
        merge(out_dir)
    except OSError as exc:
        raise ResultsWriteError(f"{merged} cannot be rewritten: {_why(exc)}") from exc


def _why(exc: OSError) -> str:
    """[Errno 28] No space left on device (pyarrow words its strerror its own way)."""
    return f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else str(exc)


def read_rows(out_dir: Path) -> pd.DataFrame:
    files = sorted((out_dir / "rows").glob("*.parquet"))
    if not files:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})
    tables = [pq.read_table(f, schema=SCHEMA) for f in files]
    frame = pa.concat_tables(tables).to_pandas()
    return frame.sort_values("finished_at").drop_duplicates("cell_key", keep="last").reset_index(drop=True)


def merge(out_dir: Path) -> Path:
    """Rewrite results.parquet from rows/. Serialized across runs: the last merge to finish
    started after every row file written before it, so it holds them all."""
    path = out_dir / "results.parquet"
    with held(out_dir / LOCKS_DIR / "merge.lock"):
        frame = read_rows(out_dir)
        _atomic_write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), path)
    return path


def row_status(out_dir: Path, key: str, since: datetime | None = None) -> str | None:
    """The status of a cell's row when it needs no computing now: a final status, or any
    status written at or after `since` (by a concurrent run: its failure is not retried by
    this run; the next run retries it). None: compute the cell."""
    path = out_dir / "rows" / f"{key}.parquet"
    if not path.is_file():
        return None
    row = pq.read_table(path, columns=["status", "finished_at"]).to_pylist()[0]
    if row["status"] in FINAL_STATUSES:
        return str(row["status"])
    if since is not None and row["finished_at"] is not None and row["finished_at"] >= since.replace(microsecond=since.microsecond // 1000 * 1000):  # stored in ms
        return str(row["status"])
    return None


def finished(out_dir: Path) -> dict[str, str]:
    """cell_key → status, for rows that need no recomputation."""
    frame = read_rows(out_dir)
    done = frame[frame["status"].isin(FINAL_STATUSES)]
    return dict(zip(done["cell_key"], done["status"]))
