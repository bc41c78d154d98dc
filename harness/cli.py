"""Command line: python -m harness {run, fetch, validate, formats, memory, report, gate, pick}."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.table import Table

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness import pipeline

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Quantize, serve and benchmark LLMs from one YAML config."
)
# off a terminal (a pipe, a CI log) rich would squeeze tables to 80 columns
out = Console() if Console().is_terminal else Console(width=200)
err = Console(stderr=True)


@app.command()
def validate(config: Path = typer.Argument(..., help="the YAML config")) -> None:
    """Check a config without running it (exit 0 when valid, 2 when not)."""
    from harness import matrix
    from harness.config import load_config

    cfg = load_config(config)
    cells = matrix.expand(cfg)
    out.print(f"{config}: valid; {len(cells)} cells: " + ", ".join(c.name for c in cells))


@app.command()
def fetch(config: Path = typer.Argument(..., help="the YAML config")) -> None:
    """Download what a run of the config reads from the hub (model, hub calibration sets, eval
    datasets), so the run needs no network or token."""
    from harness.config import load_config
    from harness.stages.fetch import fetch as fetch_inputs

    fetch_inputs(load_config(config), lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True))


@app.command()
def run(
    config: Path = typer.Argument(..., help="the YAML config"),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="results directory (default: the config's output)"
    ),
    allow_code_execution: bool = typer.Option(
        False,
        "--allow-code-execution",
        help="run HumanEval's model-generated code (in the sandbox), as evals.allow_code_execution: true",
    ),
    executor: Optional[str] = typer.Option(
        None,
        "--executor",
        help="local or ray: where cells run (default: the config's executor); not part of any cell key",
    ),
) -> None:
    """Run every cell of a config; finished cells are skipped (resume)."""
    from harness import pipeline
    from harness.config import load_config

    cfg = load_config(config, output=output)
    if executor is not None:
        from harness import executors

        if executor not in executors.REGISTRY:
            raise HarnessError(f"--executor: one of {', '.join(executors.REGISTRY)} (got {executor!r})")
        cfg = cfg.model_copy(update={"executor": executor})
    if allow_code_execution and cfg.evals is not None:
        cfg = cfg.model_copy(update={"evals": cfg.evals.model_copy(update={"allow_code_execution": True})})
    summary = pipeline.run(cfg, err)
    _print_summary(summary)


def _print_summary(summary: "pipeline.RunSummary") -> None:
    from harness.results.metrics import BY_COLUMN
    from harness.results.read import load_results, number, records

    path = summary.out_dir / "results.parquet"
    if not path.is_file():
        return
    shown = ("pass_at_1", "math_exact_match", "perplexity")
    table = Table(title=f"results: {path}")
    for column in (
        "cell",
        "status",
        "kernel",
        "out tok/s",
        "peak RSS GiB",
        "size MiB",
        *(BY_COLUMN[m].label for m in shown),
        "KLD",
        "reason",
    ):
        table.add_column(column, overflow="fold")

    def num(value: object, fmt: str, scale: float = 1.0) -> str:
        figure = number(value)
        return "" if figure is None else format(figure / scale, fmt)

    for row in records(load_results(path)):
        table.add_row(
            row["cell_name"],
            row["status"],
            ", ".join(k.split(" for ")[0] for k in (row["kernels"] or "-").split("; ")),
            num(row["output_tok_s"], ".1f"),
            num(row["engine_peak_rss_bytes"], ".2f", 2**30),
            num(row["artifact_bytes"], ".0f", 2**20),
            *(num(row[m], BY_COLUMN[m].number_format) for m in shown),
            num(row["kld_mean"], ".4f"),
            (row["reason"] or row["eval_note"] or "")[:200],
        )
    out.print(table)
    if summary.skipped:
        out.print(f"{len(summary.skipped)} cells were already finished and skipped.")


@app.command("formats")
def list_formats() -> None:
    """List the formats, what each needs, and which engines serve them."""
    from harness import formats

    table = Table(title="formats")
    for column in ("name", "W/A bits", "calibration", "group size", "hardware", "engines", "summary"):
        table.add_column(column, overflow="fold")
    for name, fmt in formats.REGISTRY.items():
        params = fmt.default_params()  # defaults, no validation (some need a path)
        group = fmt.group_size(params)
        group_text = f"{group} (default; input dims must divide by it)" if group else "-"
        table.add_row(
            name,
            f"W{fmt.weight_bits}A{fmt.activation_bits}",
            "data" if fmt.needs_calibration(params) else "none",
            group_text,
            fmt.hardware,
            ", ".join(fmt.serving_engines()),
            fmt.summary,
        )
    out.print(table)


@app.command()
def memory(
    model: str = typer.Option(
        ...,
        "--model",
        help="a known shape (llama-3.1-70b, qwen2.5-7b, smollm2-135m, ...), a config.json or a model directory",
    ),
    batch: int = typer.Option(128, "--batch", min=1, help="concurrent sequences"),
    context: int = typer.Option(2048, "--context", min=1, help="tokens per sequence (prompt + output)"),
    gpu: str = typer.Option("h100-80gb", "--gpu", help="a GPU from harness/gpus.py"),
    utilization: float = typer.Option(0.9, "--utilization", min=0.05, max=1.0, help="vLLM gpu_memory_utilization"),
    tensor_parallel: int = typer.Option(1, "--tensor-parallel", min=1),
    kv: list[str] = typer.Option(["auto", "fp8"], "--kv", help="KV-cache dtypes (repeatable)"),
    format_names: Optional[list[str]] = typer.Option(
        None, "--format", help="formats (repeatable; default: the main families)"
    ),
    max_num_batched_tokens: Optional[int] = typer.Option(None, "--max-num-batched-tokens", min=1),
) -> None:
    """Planned GPU memory (weights + KV cache + activations) per format and KV dtype: what fits."""
    from harness.plan import memory as planner

    rows = planner.plan_all(
        model,
        batch,
        context,
        gpu,
        kv_dtypes=kv,
        formats=format_names or planner.DEFAULT_FORMATS,
        utilization=utilization,
        tensor_parallel=tensor_parallel,
        max_num_batched_tokens=max_num_batched_tokens,
    )
    first = rows[0]
    table = Table(
        title=f"{first.model} on {gpu} x{tensor_parallel}: {batch} sequences x {context} tokens, capacity "
        f"{first.capacity_bytes / 2**30:.2f} GiB per GPU"
    )
    for column in (
        "format",
        "KV",
        "bits/weight",
        "weights GiB",
        "KV GiB",
        "activations GiB",
        "total GiB",
        "fits",
        "max batch",
        "note",
    ):
        table.add_column(column, overflow="fold")
    for plan in rows:
        row = plan.as_row()
        table.add_row(
            plan.format,
            plan.kv_dtype,
            f"{plan.bits_per_weight:.2f}",
            f"{row['weights_gib']:.2f}",
            f"{row['kv_gib']:.2f}",
            f"{row['activations_gib']:.2f}",
            f"{row['total_gib']:.2f}",
            "[green]yes[/]" if plan.fits else "[red]no[/]",
            str(plan.max_batch),
            plan.note or "",
        )
    out.print(table)


@app.command()
def report(
    results: list[Path] = typer.Argument(..., help="results.parquet files, or the directories holding them"),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="where report.html, report.md and plots/ go (default: report/ beside the first table)"
    ),
    threshold: float = typer.Option(
        5.0,
        "--threshold",
        help="flag a regression: output tok/s down or perplexity up by more than this % between runs",
    ),
) -> None:
    """Build the comparison report (self-contained HTML + Markdown) from results tables (docs/report.md)."""
    from harness.report import build_report

    first = results[0]
    files = build_report(results, out_dir or (first if first.is_dir() else first.parent) / "report", threshold)
    for path in (files.html, files.markdown, *files.plots):
        out.print(str(path), markup=False, highlight=False, soft_wrap=True)
    for regression in files.regressions:
        out.print(f"regression: {regression.line()}", markup=False, highlight=False, soft_wrap=True, style="red")


@app.command()
def gate(
    results: list[Path] = typer.Argument(..., help="this run's results.parquet files, or the directories holding them"),
    config: Optional[list[Path]] = typer.Option(
        None, "--config", "-c", help="a config whose gate: section sets the recovery floors of its rows (repeatable)"
    ),
    baseline: Optional[list[Path]] = typer.Option(
        None,
        "--baseline",
        help="the previous run's results (file or directory, repeatable): tok/s are compared with them",
    ),
    max_throughput_regression_pct: Optional[float] = typer.Option(
        None,
        "--max-throughput-regression-pct",
        help="largest output tok/s drop (%) against the baseline (default: the config's gate setting, else 10)",
    ),
    summary: Optional[Path] = typer.Option(
        None, "--summary", help="append the verdict as Markdown to this file (e.g. $GITHUB_STEP_SUMMARY)"
    ),
) -> None:
    """Fail (exit 1) on failed cells, recovery below the config's floor, or a tok/s drop against the baseline
    (docs/production.md)."""
    from harness import gate as gating
    from harness.config import load_config

    configs = [load_config(path) for path in config or []]
    verdict = gating.evaluate(results, configs, baseline or None, max_throughput_regression_pct)
    for line in verdict.lines():
        style = "red" if line.startswith("FAIL") or not verdict.passed and line == verdict.verdict() else None
        out.print(line, markup=False, highlight=False, soft_wrap=True, style=style)
    if summary is not None:
        with summary.open("a", encoding="utf-8") as handle:
            handle.write(verdict.markdown())
    if not verdict.passed:
        raise SystemExit(
            1
        )  # not typer.Exit: main() runs the app with standalone_mode=False, where click returns its code


@app.command()
def pick(
    hardware: str = typer.Option(
        ..., "--hardware", help="cpu, or a GPU of harness/gpus.py (h100-80gb, h200, b200, l40s, ...)"
    ),
    model: str = typer.Option(
        ...,
        "--model",
        help="a known shape (llama-3.1-70b, qwen2.5-coder-7b, ...), a size (70b, 7b) or a model directory",
    ),
    workload: str = typer.Option(..., "--workload", help="chat, code, reasoning, math, medical, long-context"),
    tolerance: str = typer.Option(..., "--tolerance", help="strict (99 % recovery), balanced (97), aggressive (94)"),
    multi_lora: bool = typer.Option(False, "--multi-lora", help="serve many LoRA adapters on one base (vLLM)"),
    concurrency: int = typer.Option(128, "--concurrency", min=1, help="concurrent sequences"),
    context: int = typer.Option(2048, "--context", min=16, help="tokens per sequence (prompt + output)"),
    results: Optional[Path] = typer.Option(
        None, "--results", help="a results.parquet whose measured rows override the rules"
    ),
    write_config: Optional[Path] = typer.Option(
        None, "--write-config", help="write the validation config for harness run here"
    ),
    floor: Optional[float] = typer.Option(
        None, "--floor", help="a recovery floor in % of bf16 of your own, instead of the tolerance's"
    ),
    validate: bool = typer.Option(
        False,
        "--validate",
        help="run the validation config and walk the fallback chain (next candidate, 8-bit, more memory) until a "
        "format passes its gate",
    ),
    validate_dir: Optional[Path] = typer.Option(
        None, "--validate-dir", help="where --validate runs its steps (default: results/pick-MODEL-validate)"
    ),
) -> None:
    """Pick a format, engine and KV-cache dtype, with the reasons and a validation plan (docs/picker.md)."""
    from rich.markup import escape

    from harness import picker

    rec = picker.pick(hardware, model, workload, tolerance, multi_lora, concurrency, context, results, floor)
    table = Table(
        title=f"{rec.model} on {rec.hardware}: {rec.workload}, {rec.tolerance} (floor {rec.floor_pct:g} %), "
        f"{concurrency} x {context}"
    )
    for column in ("format", "engine", "KV cache", "fits", "max batch", "decided by rows"):
        table.add_column(column, overflow="fold")
    fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "not planned (CPU)"}[rec.fits]
    table.add_row(
        rec.format,
        rec.engine,
        rec.kv_cache_dtype,
        fits,
        "" if rec.max_batch is None else str(rec.max_batch),
        escape(", ".join(rec.decided_by_rows)),
    )
    out.print(table)
    out.print("[bold]why[/]")
    for reason in rec.reasons:
        out.print(f"  - {escape(reason)}")
    out.print("[bold]validation plan[/]")
    for line in rec.plan.lines():
        out.print(f"  {escape(line)}")
    if write_config is not None:
        write_config.write_text(rec.config_yaml(), encoding="utf-8")
        out.print(f"config written: {escape(str(write_config))} (python -m harness run {escape(str(write_config))})")
    if validate:
        from harness.plan import fallback

        where = validate_dir or Path("results") / f"pick-{rec.model}-validate"
        outcome = fallback.validate(rec, where, err)
        out.print(f"[bold]validation[/] ({escape(str(where))}, validation.json)")
        for line in outcome.lines():
            out.print(f"  {escape(line)}")


def _interrupt_on_sigterm() -> None:
    """SIGTERM (a scheduler's stop, `kill`, a CI timeout) is handled as Ctrl-C: the finally blocks
    run, so every server, engine and quantizer child is stopped and the run's finished cells are
    kept. Python's default for SIGTERM ends the process at once: children that left its session
    (vLLM's EngineCore) lived on."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


INTERRUPTED = 130  # what typer returns for a KeyboardInterrupt (Ctrl-C, and SIGTERM here)


def main() -> None:
    _interrupt_on_sigterm()
    try:
        code = app(standalone_mode=False)
    except HarnessError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    # Without standalone mode typer returns an exit code instead of exiting: a KeyboardInterrupt
    # comes back as 130 (the run then exited 0, its stop unreported), an explicit Exit as its code.
    if code == INTERRUPTED:
        err.print("interrupted; finished cells are saved, run again to resume")
        sys.exit(INTERRUPTED)  # SIGTERM too: the caller asked for a stop, and got one
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
