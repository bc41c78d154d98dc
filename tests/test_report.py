"""The comparison report, built from real results tables (tests/data/report, copied from runs of
this harness: formats-cpu.parquet is configs/formats-cpu.yaml on a CPU, with its failed
fp8-static cells; quality.parquet is tests/integration/test_quality.py's run, with quality
figures; serving.parquet, when present, a run with the serving benchmark). Those tables predate
the serving, memory-split and roofline columns: the tests that draw those figures use
`synthetic_serving_table`, real rows with made-up serving figures added, which checks the
rendering and never a measurement; the regression test's input copies real rows and says so too."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import report
from harness.errors import HarnessError
from harness.report import figures as report_figures
from harness.report import rows as report_rows
from harness.results.read import load_results

DATA = Path(__file__).parent / "data" / "report"
FORMATS_CPU = DATA / "formats-cpu.parquet"
QUALITY = DATA / "quality.parquet"
SERVING = DATA / "serving.parquet"  # a real serving run's table; its tests skip until it is added
FIGURE_KEYS = ("quality", "memory", "calibration", "trend", "latency", "roofline")
GIB = 2**30
LEVELS = (1, 2, 4, 8, 16, 32, 64)


def _synthetic_point(level: int, k: int) -> dict:
    ttft, itl = 10.0 * k * level**0.6, 4.0 + k * level**0.4
    rps = level / (1 + 0.05 * level)
    return {
        "mode": "concurrency",
        "concurrency": level,
        "request_rate": None,
        "requests": 32,
        "completed": 32,
        "failed": 0,
        "duration_s": 32 / rps,
        "input_tokens": 2048,
        "output_tokens": 2048,
        "request_throughput": rps,
        "output_tok_s": 64 * rps / k,
        "total_tok_s": 128 * rps / k,
        **{
            f"{metric}_{stat}_ms": base * factor
            for metric, base in (("ttft", ttft), ("tpot", itl), ("itl", itl), ("e2el", ttft + 64 * itl))
            for stat, factor in (("mean", 1.1), ("p50", 1.0), ("p90", 1.8), ("p99", 2.6))
        },
        "goodput_rps": 0.9 * rps,
        "slo_attained_pct": 90.0,
        "error": None,
    }


def synthetic_serving_table(tmp_path: Path) -> Path:
    """SYNTHETIC, for rendering checks only: formats-cpu.parquet's real rows with made-up serving
    sweeps (concurrency 1..64 and two Poisson rates), engine memory splits, row plans and roofline
    fractions on the ok serving-engine cells, written through the results schema (so the `serving`
    column round-trips through parquet exactly as a run writes it)."""
    from harness.results.schema import SCHEMA

    frame = pd.read_parquet(FORMATS_CPU)
    rows = []
    for n, row in enumerate(frame.astype(object).where(frame.notna(), None).to_dict("records")):
        row = {key: value for key, value in row.items() if key in SCHEMA.names}
        if row["status"] == "ok" and row["engine"] != "transformers":
            k = 1 + n % 5
            points = [_synthetic_point(level, k) for level in LEVELS]
            points += [
                {
                    **points[2],
                    "mode": "rate",
                    "concurrency": None,
                    "request_rate": rate,
                    "ttft_p50_ms": 20.0 * k * rate,
                    "ttft_p99_ms": 50.0 * k * rate,
                }
                for rate in (0.5, 2.0)
            ]
            row.update(
                serving=points,
                serving_slo=json.dumps({"ttft_ms": 500, "tpot_ms": 50}),
                serving_startup_s=20.0 + n,
                engine_weights_bytes=int(row["artifact_bytes"] * 1.02),
                engine_kv_cache_bytes=4 * GIB,
                engine_kv_cache_tokens=180_000,
                roofline_fraction=0.05 * k,
                roofline_bound="memory" if k < 4 else "compute",
                roofline_tok_s=row["output_tok_s"] / (0.05 * k),
                hw_peak_source="measured on this host",
            )
            if row["cell_name"] == "bf16/vllm/kv-auto":  # a row plan: preferred to the report's own
                row.update(
                    planned_weights_bytes=GIB,
                    planned_kv_cache_bytes=GIB // 2,
                    planned_activation_bytes=GIB // 4,
                    planned_total_bytes=GIB + GIB // 2 + GIB // 4,
                    planned_capacity_bytes=6 * GIB,
                )
        elif row["status"] == "ok":
            row["roofline_note"] = "reference engine: no serving roofline"
        rows.append(row)
    path = tmp_path / "synthetic-serving.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> report.ReportFiles:
    return report.build_report([FORMATS_CPU, QUALITY], tmp_path_factory.mktemp("report"))


def _figures(page: str) -> dict[str, str]:
    return dict(re.findall(r'<figure id="([^"]+)" class="plot">(.*?)</figure>', page, flags=re.S))


def test_html_is_one_self_contained_file(built: report.ReportFiles) -> None:
    page = built.html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing is fetched: no external src/href, no scripts, no stylesheets, no URL at all
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "<img" not in page


def test_every_plot_is_embedded_or_a_labelled_placeholder(built: report.ReportFiles) -> None:
    page = built.html.read_text(encoding="utf-8")
    figures = _figures(page)
    sections = re.findall(r'<section id="([^"]+)">', page)
    assert len(sections) == 2  # formats-cpu and it-quality: different configs never share a comparison
    for section in sections:
        for key in FIGURE_KEYS:
            body = figures[f"{section}-{key}"]
            assert ("<svg" in body and "</svg>" in body) or 'class="placeholder"' in body, (section, key)
    # these tables predate the serving benchmark: a labelled placeholder, never a made-up figure
    assert page.count(html.escape(report_figures.LATENCY_PLACEHOLDER)) == 2
    assert page.count("no roofline fraction in these results") == 2
    # real plots where the rows support them; their SVG files are written beside the page
    quality = next(body for name, body in figures.items() if name.endswith("-quality") and "it-quality" in name)
    assert "<svg" in quality
    assert all(path.is_file() and path.suffix == ".svg" for path in built.plots)
    assert {p.name.rsplit("-", 1)[-1] for p in built.plots} >= {"quality.svg", "memory.svg"}


def test_quality_plot_has_serving_cells_only_and_the_pareto_front(built: report.ReportFiles) -> None:
    figures = _figures(built.html.read_text(encoding="utf-8"))
    quality = next(body for name, body in figures.items() if "it-quality" in name and name.endswith("-quality"))
    assert "bf16/vllm/kv-auto" in quality and "gguf-q8_0/llamacpp/kv-auto" in quality
    plot = quality[quality.index("<svg") : quality.index("</svg>")]
    assert "/transformers/" not in plot  # reference tok/s never beside serving ones
    # measured: bf16 on vLLM is both the fastest serving cell and the best (recovery 100 %)
    assert re.search(r"bf16/vllm/kv-auto: [^<]*\(Pareto front\)", plot)
    assert not re.search(r"fp8-dynamic/vllm/kv-auto: [^<]*\(Pareto front\)", plot)


def test_markdown_table_names_every_cell(built: report.ReportFiles) -> None:
    text = built.markdown.read_text(encoding="utf-8")
    assert "| cell | status | reason | format | calibration | KV | engine |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    names = set(pd.read_parquet(FORMATS_CPU)["cell_name"]) | set(pd.read_parquet(QUALITY)["cell_name"])
    for name in names:
        assert any(line.startswith(f"| {name} |") for line in rows), name
    assert report_figures.LATENCY_PLACEHOLDER in text
    assert "(reference)" in text and "(serving)" in text  # tok/s carry their speed class


def test_failed_cells_show_their_reason(built: report.ReportFiles) -> None:
    frame = pd.read_parquet(FORMATS_CPU)
    failed = frame[frame["status"].isin(["failed", "unsupported"])]
    assert not failed.empty
    text = built.markdown.read_text(encoding="utf-8")
    page = built.html.read_text(encoding="utf-8")
    for _, row in failed.iterrows():
        line = next(line for line in text.splitlines() if line.startswith(f"| {row['cell_name']} |"))
        assert row["reason"][:80] in line
        assert row["reason"][:60] in page


def test_planned_memory_for_a_known_shape(built: report.ReportFiles) -> None:
    text = built.markdown.read_text(encoding="utf-8")
    headers = text.split("| cell |", 1)[1].splitlines()[0]
    column = ["cell", *[h.strip() for h in headers.split("|")[1:-1]]].index("planned GiB")
    line = next(line for line in text.splitlines() if line.startswith("| w4a16-gptq/code/vllm/kv-auto |"))
    assert float(line.split(" | ")[column]) > 0  # SmolLM2 is a known shape: harness.memory plans it


def _two_runs(tmp_path: Path, scale: float) -> Path:
    """SYNTHETIC regression input for the flagging logic only: the real quality rows as run one,
    and a copy of them as run two (run_id and started_at changed, output_tok_s scaled)."""
    first = pd.read_parquet(QUALITY)
    second = first.copy()
    second["run_id"] = first["run_id"] + "-copy"
    second["started_at"] = first["started_at"] + pd.Timedelta(days=1)
    second["finished_at"] = first["finished_at"] + pd.Timedelta(days=1)
    second["output_tok_s"] = first["output_tok_s"] * scale
    path = tmp_path / "two-runs.parquet"
    pd.concat([first, second], ignore_index=True).to_parquet(path)
    return path


def test_a_slower_run_is_flagged(tmp_path: Path) -> None:
    files = report.build_report(_two_runs(tmp_path, 0.8), tmp_path / "out", threshold=5.0)
    flagged = {(r.cell_name, r.metric) for r in files.regressions}
    names = set(pd.read_parquet(QUALITY)["cell_name"])
    assert flagged == {(name, "output_tok_s") for name in names}
    assert all(r.change_pct == pytest.approx(-20.0) for r in files.regressions)
    text = files.markdown.read_text(encoding="utf-8")
    assert "**regression**" in text and "-20.0 %" in text
    trend = _figures(files.html.read_text(encoding="utf-8"))
    assert "<svg" in next(body for name, body in trend.items() if name.endswith("-trend"))


def test_a_change_within_the_threshold_is_not_flagged(tmp_path: Path) -> None:
    files = report.build_report(_two_runs(tmp_path, 0.97), tmp_path / "out", threshold=5.0)
    assert files.regressions == ()
    assert "none flagged" in files.markdown.read_text(encoding="utf-8")


def test_single_run_trend_is_a_placeholder(built: report.ReportFiles) -> None:
    figures = _figures(built.html.read_text(encoding="utf-8"))
    for name, body in figures.items():
        if name.endswith("-trend"):
            assert "one run in these results" in body and "<svg" not in body


def test_missing_or_unreadable_results_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="no such results file"):
        report.build_report(tmp_path / "nope.parquet", tmp_path / "out")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(HarnessError, match="not a readable parquet"):
        report.build_report(bad, tmp_path / "out")
    with pytest.raises(HarnessError, match="no results given"):
        report.build_report([], tmp_path / "out")


def test_a_results_directory_is_read_through_its_results_parquet(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.parquet").write_bytes(QUALITY.read_bytes())
    frame = load_results(tmp_path / "run")
    assert len(frame) == len(pd.read_parquet(QUALITY))


def test_cli_report_prints_the_paths_it_wrote(tmp_path: Path, cli) -> None:
    done = cli("report", str(QUALITY), str(FORMATS_CPU), "--out", str(tmp_path / "out"), "--threshold", "5")
    assert done.returncode == 0, done.stderr
    printed = done.stdout.split()
    assert str(tmp_path / "out" / "report.html") in printed and str(tmp_path / "out" / "report.md") in printed
    assert all(Path(p).is_file() for p in printed)


def test_cli_report_missing_file_is_one_line_exit_2(tmp_path: Path, cli) -> None:
    done = cli("report", str(tmp_path / "missing.parquet"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no such results file" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------
# Serving, memory split and roofline. SYNTHETIC figures (synthetic_serving_table): these check the
# rendering and the table's wording, not a measurement.


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> report.ReportFiles:
    tmp = tmp_path_factory.mktemp("synthetic")
    return report.build_report(synthetic_serving_table(tmp), tmp / "out")


def _table_column(text: str, cell: str, header: str) -> str:
    """One cell's value under `header` in the Markdown cell table."""
    headers = ["cell", *(h.strip() for h in text.split("\n| cell |", 1)[1].splitlines()[0].split("|")[:-1])]
    line = next(line for line in text.splitlines() if line.startswith(f"| {cell} |"))
    return [v.strip() for v in re.split(r"(?<!\\)\|", line)[1:-1]][headers.index(header)]


def test_serving_percentiles_per_concurrency_in_the_table(synthetic: report.ReportFiles) -> None:
    text = synthetic.markdown.read_text(encoding="utf-8")
    point = _synthetic_point(8, 1)  # bf16/vllm/kv-auto is the first row: k = 1
    ttft = _table_column(text, "bf16/vllm/kv-auto", "TTFT p50/p99")
    assert ttft.startswith("c1 10/26 · c2 15/39 · ") and ttft.endswith(" ms")
    assert f"c8 {point['ttft_p50_ms']:.0f}/{point['ttft_p99_ms']:.0f}" in ttft
    assert "r0.5 10/25 · r2 40/100" in ttft  # rate-mode points, labelled apart from concurrency ones
    assert _table_column(text, "bf16/vllm/kv-auto", "ITL p50/p99").startswith("c1 5.0/13 · c2 5.3/14")
    assert _table_column(text, "bf16/vllm/kv-auto", "best goodput req/s (SLO met)") == "13.71 @c64 (90 %)"
    assert _table_column(text, "bf16/vllm/kv-auto", "roofline %") == "5.0 (memory)"
    assert _table_column(text, "bf16/transformers/kv-auto", "roofline %") == "reference engine: no serving roofline"
    assert _table_column(text, "bf16/vllm/kv-auto", "engine GiB (w + KV)") == "w 0.26 + KV 4.00 (180.0k tok)"
    # the row's own plan wins over the report's; rows without one keep the report's
    assert _table_column(text, "bf16/vllm/kv-auto", "planned GiB") == "1.75"
    assert float(_table_column(text, "bf16/vllm/kv-fp8", "planned GiB")) > 0
    # every sweep point in the per-point table, with the SLO it was held to
    assert "### Serving under load, per sweep point" in text and "TTFT ≤ 500 ms, TPOT ≤ 50 ms" in text
    assert "| bf16/vllm/kv-auto | c64 | 32 | 0 |" in text and "| bf16/vllm/kv-auto | r2 |" in text


def test_latency_plots_a_line_per_cell_against_concurrency(synthetic: report.ReportFiles) -> None:
    figures = _figures(synthetic.html.read_text(encoding="utf-8"))
    latency = next(body for name, body in figures.items() if name.endswith("-latency"))
    svgs = re.findall(r"<svg .*?</svg>", latency, flags=re.S)
    titles = [re.search(r'aria-label="([^"]+)"', svg).group(1) for svg in svgs]
    assert titles == [
        "TTFT p50 (solid) and p99 (dashed) against concurrency",
        "ITL p50 (solid) and p99 (dashed) against concurrency",
        "Serving output tok/s against concurrency",
        "TTFT p50 (solid) and p99 (dashed) against request rate",
        "ITL p50 (solid) and p99 (dashed) against request rate",
        "Serving output tok/s against request rate",
    ]
    served = [
        r
        for r in pd.read_parquet(FORMATS_CPU).to_dict("records")
        if r["status"] == "ok" and r["engine"] != "transformers"
    ]
    ttft = svgs[0]
    assert "concurrency (in-flight requests) (log scale)" in ttft  # 1 ... 64 spans decades
    for r in served:  # a p50 and a p99 line per cell, a dot per level each
        assert (
            ttft.count(f"<title>{r['cell_name']}: TTFT p50</title>") == 1
            and ttft.count(f"<title>{r['cell_name']}: TTFT p99</title>") == 1
        )
        assert len(re.findall(rf"<title>{re.escape(r['cell_name'])} c\d+: TTFT p99 ", ttft)) == len(LEVELS)
    assert (
        ">request rate (req/s, Poisson arrivals)</text>" in svgs[3]
    )  # 0.5 ... 2 req/s: a linear axis, no "(log scale)"
    assert "r0.5: TTFT p50" in svgs[3] and "r2: TTFT p99" in svgs[3]
    text = synthetic.markdown.read_text(encoding="utf-8")
    assert text.count("-latency-") == 6 and report_figures.LATENCY_PLACEHOLDER not in text
    assert all((synthetic.html.parent / "plots" / f"{p.name}").is_file() for p in synthetic.plots)


def test_memory_plot_puts_the_measured_split_beside_the_plan(synthetic: report.ReportFiles) -> None:
    figures = _figures(synthetic.html.read_text(encoding="utf-8"))
    memory_svg = next(body for name, body in figures.items() if name.endswith("-memory"))
    assert (
        "bf16 kv-auto: weights (measured) 0.256 GiB" in memory_svg
        and "bf16 kv-auto: KV cache (allocated) 4.000 GiB" in memory_svg
    )
    assert (
        "bf16 kv-auto: weights 1.000 GiB" in memory_svg and "bf16 kv-auto: KV cache (plan) 0.500 GiB" in memory_svg
    )  # the row's plan
    assert "left: plan, right: measured" in memory_svg
    assert "bf16 kv-auto: capacity 6.00 GiB" in memory_svg  # only that row has a capacity: a tick over its own bars


def test_roofline_fraction_is_a_bar_per_cell(synthetic: report.ReportFiles) -> None:
    figures = _figures(synthetic.html.read_text(encoding="utf-8"))
    roofline = next(body for name, body in figures.items() if name.endswith("-roofline"))
    served = [
        r
        for r in pd.read_parquet(FORMATS_CPU).to_dict("records")
        if r["status"] == "ok" and r["engine"] != "transformers"
    ]
    assert roofline.count("% of the roofline (") == len(served)
    assert "bf16/vllm/kv-auto: 5.0 % of the roofline (memory-bound; measured on this host)" in roofline


def test_serving_points_read_from_numpy_arrays_lists_or_nothing() -> None:
    point = _synthetic_point(4, 1)
    rate = {**point, "mode": "rate", "concurrency": None, "request_rate": float("inf")}
    assert [
        report_rows.point_label(p) for p in report_rows.sweep_points({"serving": np.array([rate, point], dtype=object)})
    ] == ["c4", "r∞"]
    assert report_rows.sweep_points({"serving": [point]})[0]["ttft_p50_ms"] == point["ttft_p50_ms"]
    assert (
        report_rows.sweep_points({"serving": None})
        == report_rows.sweep_points({})
        == report_rows.sweep_points({"serving": float("nan")})
        == []
    )
    assert report_rows.latency_text([{**point, "ttft_p50_ms": None, "ttft_p99_ms": None}], "ttft") == ""
    assert report_rows.goodput_text([{**point, "goodput_rps": None, "failed": 3}]) == "3 failed"


def test_a_real_serving_run_is_reported(tmp_path: Path) -> None:
    """The real serving run's table (tests/data/report/serving.parquet), when it has been added:
    its measured percentiles reach the table and the latency plot."""
    if not SERVING.is_file():
        pytest.skip(f"{SERVING} is not there yet (a table from a real run with `serving:` in its config)")
    files = report.build_report(SERVING, tmp_path / "out")
    text = files.markdown.read_text(encoding="utf-8")
    rows = load_results(SERVING).to_dict("records")
    served = [r for r in rows if report_rows.sweep_points(r)]
    assert served, "serving.parquet has no row with serving sweep points"
    for r in served:
        for p in report_rows.sweep_points(r):
            if p.get("ttft_p50_ms") is not None:
                assert f"{report_rows.point_label(p)} {report_rows.ms_text(p['ttft_p50_ms'])}/" in text, (
                    r["cell_name"],
                    p,
                )
    figures = _figures(files.html.read_text(encoding="utf-8"))
    assert any(name.endswith("-latency") and "<svg" in body for name, body in figures.items())


def test_the_cpu_config_gets_every_plot(tmp_path: Path) -> None:
    """configs/formats-cpu.yaml run twice for real (the second run with perplexity, KLD and a
    serving sweep: formats-cpu-serving.parquet): every plot of the report is drawn, none is a
    placeholder, and the HTML and Markdown both name them."""
    files = report.build_report([FORMATS_CPU, DATA / "formats-cpu-serving.parquet"], tmp_path)
    kinds = {
        re.sub(r"^.*-(quality|memory|calibration|trend|latency|roofline)(-\d+)?\.svg$", r"\1", p.name)
        for p in files.plots
    }
    assert kinds == {"quality", "memory", "calibration", "trend", "latency", "roofline"}
    assert len([p for p in files.plots if "-latency" in p.name]) == 6  # TTFT, ITL, tok/s x (concurrency, Poisson rate)
    markdown = files.markdown.read_text()
    placeholders = [line for line in markdown.splitlines() if line.startswith("> **")]
    # the one figure these runs have no data for: the passkey task came later (long-context.parquet)
    assert all(line.startswith("> **Long-context retrieval") for line in placeholders), placeholders
    for plot in files.plots:
        assert f"plots/{plot.name}" in markdown
    page = files.html.read_text()
    assert page.count("<svg") == len(files.plots)  # inline, one per plot: the page opens offline
    assert "gguf-q4_k_m/llamacpp/kv-auto" in page and "w8a8-int8/code/vllm/kv-auto" in page


def test_the_long_context_run_gets_its_plot(tmp_path: Path) -> None:
    """tests/integration/test_long_context.py's config run for real (long-context.parquet: the
    passkey task at 256, 1024 and 2048 tokens with KV auto and FP8): accuracy by length, a line per
    cell, the quantized KV cache dashed."""
    files = report.build_report([DATA / "long-context.parquet"], tmp_path)
    (plot,) = [p for p in files.plots if p.name.endswith("-long-context.svg")]
    svg = plot.read_text()
    assert "bf16/vllm/kv-fp8: 100 % at 2048 tokens" in svg and "bf16/vllm/kv-auto: 100 % at 256 tokens" in svg
    assert 'stroke-dasharray="6,4"' in svg  # the FP8 KV line


def test_the_kv_cache_trap_is_a_table_of_its_own(tmp_path: Path) -> None:
    """formats-cpu-serving.parquet (a real CPU run): bf16 with an FP8 KV cache once showed KLD 0
    against itself; against bf16 + KV auto its perplexity recovery is below 100 %: the KV-only
    effect, beside the weights-only (fp8-dynamic, KV auto) and both (fp8-dynamic, KV fp8)."""
    from harness.report.sections import build_sections
    from harness.results.read import load_results

    (section,) = build_sections(load_results(DATA / "formats-cpu-serving.parquet"), 5.0)
    assert section.kv_headers == ["engine", "format", "calibration", "KV auto", "KV fp8"]
    lines = {(row[0], row[1]): row for row in section.kv_trap}
    assert {engine for engine, _ in lines} == {"vllm"}  # the only engine run with two KV dtypes
    kv_only = float(lines[("vllm", "bf16")][4].split()[1])
    weights_only = float(lines[("vllm", "fp8-dynamic")][3].split()[1])
    both = float(lines[("vllm", "fp8-dynamic")][4].split()[1])
    assert lines[("vllm", "bf16")][3].startswith("ppl 100.0 %")
    assert kv_only < 99 and both < weights_only < 99
    page = report.build_report([DATA / "formats-cpu-serving.parquet"], tmp_path).markdown.read_text()
    assert "### KV cache and weights, each against the baseline + KV auto" in page


def test_point_labels_never_overlap_and_the_first_given_are_kept() -> None:
    from harness.report.svg import Chart

    chart = Chart("t", "x", "y", (0.0, 10.0), xlim=(0.0, 10.0))
    # eight cells within a hair of each other: not every label fits, none may overlap
    items = [(5.0 + 0.01 * i, 5.0 + 0.01 * i, f"cell-{i}/vllm/kv-auto") for i in range(8)]
    left_out = chart.point_labels(items)
    placed = [part for part in chart.parts if part.startswith("<text") and "cell-" in part]
    assert len(placed) + len(left_out) == 8 and left_out and "cell-0/vllm/kv-auto" not in left_out
    boxes = []
    for part in placed:
        x, y = (float(re.search(rf'{k}="([\d.]+)"', part).group(1)) for k in ("x", "y"))
        words = re.search(r">([^<]+)</text>", part).group(1)
        anchor = re.search(r'text-anchor="(\w+)"', part).group(1)
        w = len(words) * 0.6 * 9
        left = {"start": x, "end": x - w, "middle": x - w / 2}[anchor]
        boxes.append((left, y - 9, left + w, y + 2))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
