"""The comparison report: parquet rows in; one self-contained HTML page and a Markdown summary out.

Why from the parquet alone: the table is the record (harness/results.py); a report that needs the
artifacts, the logs or the machine could not be rebuilt in CI or on a laptop. The charts are
hand-made SVG (harness/report/svg.py says why): inline in the HTML (it opens offline, no scripts) and
written beside it as files for the Markdown. This module decides what each figure and table shows
(from the columns that exist, a labelled placeholder otherwise); what each shows, and how a
regression is flagged: docs/report.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.report.render import html_page, markdown_page
from harness.report.sections import build_sections
from harness.results.read import Results, load_results, result_paths
from harness.results.trend import Regression


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    plots: tuple[Path, ...]
    regressions: tuple[Regression, ...] = ()


def build_report(results: Results, out_dir: Path, threshold: float = 5.0) -> ReportFiles:
    """Write OUT/report.html (self-contained), OUT/report.md and OUT/plots/*.svg from the tables."""
    if not threshold > 0:
        raise HarnessError(f"threshold must be a positive percentage (got {threshold})")
    sources = [str(p) for p in result_paths(results)]
    frame = load_results(results)
    sections = build_sections(frame, threshold)
    regressions = [r for s in sections for r in s.regressions]
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plot_files: dict[tuple[str, str], list[str]] = {}
    written: list[Path] = []
    for s in sections:
        for fig in s.figures:
            for i, svg in enumerate(fig.svgs):
                path = plots_dir / f"{s.slug}-{fig.key}{'-' + str(i + 1) if len(fig.svgs) > 1 else ''}.svg"
                path.write_text(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1), encoding="utf-8")
                written.append(path)
                plot_files.setdefault((s.slug, fig.key), []).append(f"plots/{path.name}")
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    html_path.write_text(html_page(sections, sources, threshold, regressions), encoding="utf-8")
    md_path.write_text(markdown_page(sections, sources, threshold, regressions, plot_files), encoding="utf-8")
    return ReportFiles(html_path, md_path, tuple(written), tuple(regressions))
