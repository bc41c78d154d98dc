"""The results table's columns: one row per cell, in parquet (the store writes it)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from harness.results.metrics import METRICS

STATUSES = ("ok", "failed", "unsupported")
# Final statuses are not recomputed on a resume; "failed" cells are tried again.
FINAL_STATUSES = ("ok", "unsupported")

_LATENCY = [
    f"{metric}_{stat}_ms" for metric in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "p50", "p90", "p99")
]
#: one point of a serving sweep: fixed concurrency (request_rate null) or Poisson arrivals
SERVING_POINT = pa.struct(
    [
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
        ("energy_j", pa.float64()),  # GPU boards' energy over the point (NVML; null on CPU)
        ("j_per_output_token", pa.float64()),
        ("goodput_rps", pa.float64()),  # requests/s that met every SLO set
        ("slo_attained_pct", pa.float64()),
        ("error", pa.string()),  # the first request error, if any failed
        # the point's first requests against the offline engine's greedy answers (serving.output_check)
        (
            "output_check",
            pa.struct(
                [
                    ("checked", pa.int32()),
                    ("exact", pa.int32()),
                    ("agree", pa.int32()),
                    ("first_divergence", pa.list_(pa.int32())),
                    ("degenerate", pa.int32()),
                    ("reference_degenerate", pa.int32()),
                ]
            ),
        ),
        # each request's SLO inputs (loadgen.request_record): goodput is re-derived from them
        # when the config's SLO changes, which is not part of the key
        (
            "per_request",
            pa.list_(
                pa.struct(
                    [
                        ("ok", pa.bool_()),
                        ("ttft_ms", pa.float64()),
                        ("tpot_ms", pa.float64()),
                        ("e2el_ms", pa.float64()),
                    ]
                )
            ),
        ),
    ]
)

SCHEMA = pa.schema(
    [
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
        (
            "scheme",
            pa.string(),
        ),  # from the artifact's quantization_config, e.g. "pack-quantized: weights int4 group 64 sym"
        ("calibration_name", pa.string()),
        ("calibration_domain", pa.string()),
        ("calibration_source", pa.string()),
        ("calibration_samples", pa.int32()),
        ("calibration_seq_len", pa.int32()),
        ("calibration_seed", pa.int32()),
        ("kv_cache_dtype", pa.string()),
        ("compute_dtype", pa.string()),  # what the engine computed in (model.dtype, or the format's own)
        ("engine", pa.string()),
        ("engine_version", pa.string()),
        (
            "engine_speed_class",
            pa.string(),
        ),  # "serving" (vLLM, llama.cpp) or "reference" (transformers): never compare across
        ("engine_settings", pa.string()),  # JSON: the arguments the engine ran with
        ("engine_env", pa.string()),  # JSON: environment variables set for the engine
        ("kernels", pa.string()),  # "; "-joined "Kernel for Layer" lines from the engine log
        ("kernel_expected", pa.bool_()),  # ran on a kernel its format is made for (None: no expectation)
        ("kernels_expected", pa.string()),  # "; "-joined: the kernels the format expects on this engine/device
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
        ("output_check_reference_s", pa.float64()),  # the offline greedy answers the output checks compare with
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
        ("output_tok_s_repeats", pa.string()),  # JSON [tok/s of each repeat] (workload.repeats > 1)
        ("roofline_tok_s", pa.float64()),  # the ceiling with prefill: what output_tok_s is compared with
        ("roofline_decode_tok_s", pa.float64()),  # decode alone
        ("roofline_compute_precision", pa.string()),  # the compute peak used: bf16, fp8, int8, fp4; fp32 (CPU)
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
        ("serving_warmup_s", pa.float64()),  # the warm-up requests before the sweep (not measured)
        ("serving_peak_rss_bytes", pa.int64()),  # the server's process tree during the sweep
        ("serving_peak_gpu_bytes", pa.int64()),
        ("serving_note", pa.string()),  # why a cell has no serving figures (e.g. a reference engine has no server)
        # capacity at the SLO (serving.capacity): the highest Poisson rate whose p99s met it
        ("capacity_rps", pa.float64()),
        ("capacity_output_tok_s", pa.float64()),
        ("capacity_probes", pa.string()),  # JSON: every probe's point, with meets_slo
        ("capacity_note", pa.string()),
        ("usd_per_million_output_tokens", pa.float64()),  # usd_per_hour over the output tokens/hour at capacity
        ("usd_per_hour", pa.float64()),  # the price behind it: the config's, or harness.plan.prices' reference
        ("price_source", pa.string()),
        ("serving_slo", pa.string()),  # JSON {ttft_ms, tpot_ms, e2el_ms}
        ("serving_prompts", pa.string()),  # whether each sweep point had prompts of its own (prefix caching)
        # greedy answers under load against the offline engine's (serving.output_check): ok, and why
        ("serving_energy_note", pa.string()),  # where no energy was measured, why
        ("output_check_ok", pa.bool_()),
        ("output_check_note", pa.string()),
        # quality: what the cell measured about itself (lm-eval metrics, harness.results.metrics)
        *[(m.column, pa.float64()) for m in METRICS],
        ("eval_items", pa.string()),  # JSON {task: {doc_id: score}}: per-item outcomes, for paired statistics
        ("passkey_by_length", pa.string()),  # JSON {length in tokens: pass-key accuracy}
        ("kld_logprobs", pa.string()),  # its top log-probabilities on the held-out windows, relative to the output dir
        # relative figures: filled by the compare pass after the cells (harness.results.compare)
        ("reference_cell_key", pa.string()),  # the cell every quality figure of this row is relative to
        ("reference_rule", pa.string()),  # which rule chose it, or why there is none
        ("kld_mean", pa.float64()),
        ("kld_median", pa.float64()),
        ("kld_p99", pa.float64()),
        ("top1_agreement", pa.float64()),
        ("kld_positions", pa.int64()),
        ("kld_reference", pa.string()),  # the reference cell's name
        ("kld_method", pa.string()),  # exact (full vocabulary), top-<k> bound or top-<k> estimate (divergence.py)
        *[(m.recovery_column, pa.float64()) for m in METRICS if m.recovered],  # % of the reference's value
        ("recovery_reference", pa.string()),  # the reference cell's name
        # JSON {metric: paired statistics against the reference (harness.results.paired),
        #       "kld": {windows, ci95: {kld_mean, kld_median, kld_p99, top1_agreement: [low, high]}}}
        ("paired_stats", pa.string()),
        ("speedup", pa.float64()),  # output tok/s over the speed reference's
        ("speed_reference_key", pa.string()),  # the same engine's baseline on the same host and workload
        ("eval_limit", pa.int32()),
        ("eval_samples", pa.string()),  # JSON {task: documents scored}
        ("eval_task_versions", pa.string()),  # JSON {task: version}
        ("eval_settings", pa.string()),  # JSON: generation settings (greedy, n=1, temperature 0, max_gen_toks)
        ("lm_eval_version", pa.string()),
        ("eval_note", pa.string()),  # e.g. why HumanEval was skipped
        ("eval_s", pa.float64()),
        ("eval_load_s", pa.float64()),  # loading the engine for lm-eval
        ("engine_loads", pa.string()),  # JSON {offline, server, evaluate: seconds}: each time the cell loaded its model
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
    ]
)
COLUMNS = tuple(SCHEMA.names)


def row_table(row: dict[str, Any]) -> pa.Table:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"columns not in the results schema: {sorted(unknown)}")
    if row.get("status") not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {row.get('status')!r}")
    return pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS}], schema=SCHEMA)
