"""The report as a self-contained HTML page and as Markdown."""

from __future__ import annotations

import html

from harness.report.sections import Section
from harness.report.tables import SERVING_HEADERS, TABLE_HEADERS
from harness.results.decide import Decision
from harness.results.trend import Regression

#: table columns whose text wraps (the others keep to one line; the table scrolls sideways, its first column stays)
WRAPPED = {
    "kernel": "kernel",
    "planned GiB": "note",
    "roofline %": "note",
    "TTFT p50/p99": "sweep",
    "ITL p50/p99": "sweep",
    "reason": "reason",
}


CSS = """body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 6px;vertical-align:top}th{background:#eee;position:sticky;top:0}
td{white-space:nowrap}
td.failed{background:#fde0e0}td.unsupported{background:#fff3cd}td.reason{white-space:pre-wrap;min-width:260px;max-width:420px}
td.kernel{white-space:normal;overflow-wrap:anywhere;min-width:120px;max-width:200px}td.sweep{white-space:normal;min-width:170px;max-width:260px}
td.note{white-space:normal;min-width:110px;max-width:220px}summary{cursor:pointer;font-weight:bold;margin:12px 0}
tr>:first-child{position:sticky;left:0;background:#fff;z-index:1}tr>th:first-child{background:#eee;z-index:2}
figure{margin:18px 0}figcaption{font-size:12px;color:#555;max-width:760px}
.placeholder{border:1px dashed #999;padding:12px;
color:#555;max-width:740px;background:#f7f7f7}.regression{color:#b00}svg{max-width:100%;height:auto;display:block}
div.wide{overflow-x:auto;max-width:100%}.answer .ship{font-size:1.1em;color:#14532d}
.answer .no-answer{font-size:1.1em;color:#7c2d12}.note{color:#555;font-size:.9em}"""


#: lines of reasons shown per section before the details (the Markdown's lead must fit a PR comment)
LOST_LINES = 6


def answer_lines(decision: Decision) -> tuple[str, list[str], list[str]]:
    """The headline, the runner-up line, and why the others lost (at most LOST_LINES, then a count)."""
    runner = (
        [f"runner-up: {decision.runner_up.row.get('format')} ({decision.runner_up.name}), {decision.runner_up.detail}"]
        if decision.runner_up is not None
        else []
    )
    lost = [f"{name}: {why}" for name, why in decision.lost[:LOST_LINES]]
    if len(decision.lost) > LOST_LINES:
        lost.append(f"… and {len(decision.lost) - LOST_LINES} more cells (the table below has each reason)")
    return decision.headline(), runner, lost


KV_TRAP_TITLE = "KV cache and weights, each against the baseline + KV auto"
KV_TRAP_NOTE = (
    "The baseline (bf16, or fp32 where a CPU emulates bf16) under a quantized KV cache is the KV-only effect; "
    "a format under KV auto the weights-only effect; "
    "a format under a quantized KV cache both. Perplexity recovery and mean KLD with 95 % intervals."
)


def html_page(sections: list[Section], sources: list[str], threshold: float, regressions: list[Regression]) -> str:
    e = html.escape
    out = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>harness report</title>',
        f"<style>{CSS}</style></head><body>",
        "<h1>Quantization report</h1>",
        "<p>From " + ", ".join(f"<code>{e(s)}</code>" for s in sources) + ". Tok/s are labelled by the engine's "
        "speed class: <em>serving</em> (vLLM, llama.cpp) or <em>reference</em> (transformers); the two are never "
        "compared.</p>",
    ]
    out.append('<h2 id="answer">The answer</h2>')
    for s in sections:
        if s.decision is None:
            continue
        headline, runner, lost = answer_lines(s.decision)
        shipped = "ship" if s.decision.choice is not None else "no-answer"
        out.append(f'<div class="answer"><h3>{e(s.title)}</h3><p class="{shipped}"><strong>{e(headline)}</strong></p>')
        out.extend(f"<p>{e(line)}</p>" for line in runner)
        if lost:
            out.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in lost) + "</ul>")
        out.append(
            f"<p class=\"note\">Decided at {s.decision.floor_pct:g} % of each cell's reference (the picker's balanced "
            "floor): by paired verdicts where per-document outcomes exist, else point recoveries; fastest offline "
            "output tok/s among those that pass.</p></div>"
        )
    out.append(f'<h2 id="regressions">Regressions (threshold {threshold:g} %)</h2>')
    if regressions:
        out.append("<ul>" + "".join(f'<li class="regression">{e(r.line())}</li>' for r in regressions) + "</ul>")
    else:
        out.append(
            "<p>none flagged"
            + (" (a single run per section: nothing to compare)" if all(len(s.runs) < 2 for s in sections) else "")
            + "</p>"
        )
    for s in sections:
        out.append(
            f'<section id="{s.slug}"><h2>{e(s.title)}</h2><p>runs: {e(", ".join(s.runs))}; the table holds the latest '
            "row of each cell.</p>"
        )
        out.append(
            '<div class="wide"><table class="cells"><thead><tr>'
            + "".join(f"<th>{e(h)}</th>" for h in TABLE_HEADERS)
            + "</tr></thead><tbody>"
        )
        for row in s.table:
            status = row[TABLE_HEADERS.index("status")]
            cells = []
            for header, value in zip(TABLE_HEADERS, row):
                cls = status if header == "status" and status != "ok" else (WRAPPED.get(header, "") if value else "")
                cells.append(f'<td class="{cls}">{e(value)}</td>' if cls else f"<td>{e(value)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
        if s.kv_trap:
            out.append(f'<h3 id="{s.slug}-kv">{e(KV_TRAP_TITLE)}</h3><p>{e(KV_TRAP_NOTE)}</p>')
            out.append(
                '<div class="wide"><table class="kv"><thead><tr>'
                + "".join(f"<th>{e(h)}</th>" for h in s.kv_headers)
                + "</tr></thead><tbody>"
            )
            out.extend("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in s.kv_trap)
            out.append("</tbody></table></div>")
        if s.serving:
            opened = " open" if len(s.serving) <= 40 else ""  # a long sweep stays folded; <details> needs no script
            out.append(
                f'<details id="{s.slug}-serving"{opened}><summary>Serving under load, per sweep point '
                f"({len(s.serving)} points)</summary>"
            )
            out.append("<p>" + "<br>".join(e(n) for n in s.serving_notes) + "</p>")
            out.append(
                '<div class="wide"><table class="serving"><thead><tr>'
                + "".join(f"<th>{e(h)}</th>" for h in SERVING_HEADERS)
                + "</tr></thead><tbody>"
            )
            for row in s.serving:  # the last column is the sweep point's first request error
                out.append(
                    "<tr>"
                    + "".join(f"<td>{e(v)}</td>" for v in row[:-1])
                    + f'<td class="reason">{e(row[-1])}</td></tr>'
                )
            out.append("</tbody></table></div></details>")
        for fig in s.figures:
            out.append(f'<figure id="{s.slug}-{fig.key}" class="plot"><h3>{e(fig.title)}</h3>')
            out.extend(fig.svgs)
            if fig.placeholder:
                out.append(f'<p class="placeholder">{e(fig.placeholder)}</p>')
            out.append(f"<figcaption>{e(fig.caption)}</figcaption></figure>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


def md_cell(value: str, limit: int = 300) -> str:
    value = value if len(value) <= limit else value[: limit - 1] + "…"
    return value.replace("|", "\\|").replace("\n", " ")


def markdown_page(
    sections: list[Section],
    sources: list[str],
    threshold: float,
    regressions: list[Regression],
    plot_files: dict[tuple[str, str], list[str]],
) -> str:
    out = [
        "# Quantization report",
        "",
        "From " + ", ".join(f"`{s}`" for s in sources) + ".",
        "",
        "Tok/s are labelled by speed class (serving: vLLM, llama.cpp; reference: transformers), never compared across "
        "classes.",
        "",
        "## The answer",
        "",
    ]
    for s in sections:
        if s.decision is None:
            continue
        headline, runner, lost = answer_lines(s.decision)
        out += [f"**{s.title}**: {headline}", ""]
        out += [f"- {line}" for line in runner + lost]
        out.append("")
    out += [
        f"_Decided at {sections[0].decision.floor_pct if sections and sections[0].decision else 97:g} % of each cell's "
        "reference: paired verdicts where per-document outcomes exist, else point recoveries; fastest offline output "
        "tok/s among those that pass._",
        "",
        f"## Regressions (threshold {threshold:g} %)",
        "",
    ]
    out.extend([f"- **regression**: {r.line()}" for r in regressions] or ["none flagged"])
    for s in sections:
        out += ["", f"## {s.title}", "", f"Runs: {', '.join(s.runs)}; the latest row of each cell.", ""]
        out.append("| " + " | ".join(TABLE_HEADERS) + " |")
        out.append("|" + "---|" * len(TABLE_HEADERS))
        out.extend("| " + " | ".join(md_cell(v) for v in row) + " |" for row in s.table)
        if s.kv_trap:
            out += ["", f"### {KV_TRAP_TITLE}", "", KV_TRAP_NOTE, ""]
            out += ["| " + " | ".join(s.kv_headers) + " |", "|" + "---|" * len(s.kv_headers)]
            out.extend("| " + " | ".join(md_cell(v) for v in row) + " |" for row in s.kv_trap)
        if s.serving:
            out += ["", "### Serving under load, per sweep point", ""]
            out.extend(f"- {note}" for note in s.serving_notes)
            out += ["", "| " + " | ".join(SERVING_HEADERS) + " |", "|" + "---|" * len(SERVING_HEADERS)]
            out.extend("| " + " | ".join(md_cell(v) for v in row) + " |" for row in s.serving)
        out += ["", "### Plots", ""]
        for fig in s.figures:
            files = plot_files.get((s.slug, fig.key), [])
            if files:
                out.extend(f"![{fig.title}]({f})" for f in files)
            if fig.placeholder:
                out.append(f"> **{fig.title}**: {fig.placeholder}")
            out.append("")
    return "\n".join(out) + "\n"
