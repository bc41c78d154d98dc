"""The comparison report, built from real results tables (tests/data/report, copied from runs of
this harness: formats-cpu.parquet is configs/formats-cpu.yaml on a CPU, with its failed
fp8-static cells; quality.parquet is tests/integration/test_quality.py's run, with quality
figures). No figure here is made up: the one synthetic input (the regression test) copies real
rows and says so."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd
import pytest

from harness import report
from harness.errors import HarnessError

DATA = Path(__file__).parent / "data" / "report"
FORMATS_CPU = DATA / "formats-cpu.parquet"
QUALITY = DATA / "quality.parquet"
FIGURE_KEYS = ("quality", "memory", "calibration", "trend", "latency")


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
    # the latency plot waits for serving-benchmark columns: a labelled placeholder, never a made-up figure
    assert page.count(html.escape(report.LATENCY_PLACEHOLDER)) == 2
    # real plots where the rows support them; their SVG files are written beside the page
    quality = next(body for name, body in figures.items() if name.endswith("-quality") and "it-quality" in name)
    assert "<svg" in quality
    assert all(path.is_file() and path.suffix == ".svg" for path in built.plots)
    assert {p.name.rsplit("-", 1)[-1] for p in built.plots} >= {"quality.svg", "memory.svg"}


def test_quality_plot_has_serving_cells_only_and_the_pareto_front(built: report.ReportFiles) -> None:
    figures = _figures(built.html.read_text(encoding="utf-8"))
    quality = next(body for name, body in figures.items() if "it-quality" in name and name.endswith("-quality"))
    assert "bf16/vllm/kv-auto" in quality and "gguf-q8_0/llamacpp/kv-auto" in quality
    plot = quality[quality.index("<svg"):quality.index("</svg>")]
    assert "/transformers/" not in plot  # reference tok/s never beside serving ones
    # measured: bf16 on vLLM is both the fastest serving cell and the best (recovery 100 %)
    assert re.search(r"bf16/vllm/kv-auto: [^<]*\(Pareto front\)", plot)
    assert not re.search(r"fp8-dynamic/vllm/kv-auto: [^<]*\(Pareto front\)", plot)


def test_markdown_table_names_every_cell(built: report.ReportFiles) -> None:
    text = built.markdown.read_text(encoding="utf-8")
    assert "| cell | format | calibration | KV | engine |" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    names = set(pd.read_parquet(FORMATS_CPU)["cell_name"]) | set(pd.read_parquet(QUALITY)["cell_name"])
    for name in names:
        assert any(line.startswith(f"| {name} |") for line in rows), name
    assert report.LATENCY_PLACEHOLDER in text
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
    frame = report.load_results(tmp_path / "run")
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
