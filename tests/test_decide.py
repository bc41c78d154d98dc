"""The report's answer (harness.results.decide): the format to ship, the runner-up, and why
each other cell lost, on a real CPU run and on SYNTHETIC rows made for the paired verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness import report
from harness.report.sections import build_sections
from harness.results.decide import decide
from harness.results.read import load_results
from tests.test_compare import row, write

SERVING = Path(__file__).parent / "data" / "report" / "formats-cpu-serving.parquet"


def test_the_cpu_run_names_a_format_and_why_the_others_lost() -> None:
    """formats-cpu-serving.parquet (a real run): INT8 W8A8 with a KV cache `auto` is the fastest
    vLLM cell within 97 % of bf16; the same with an FP8 KV cache is faster but loses on quality
    (the KV-cache trap), W4A16 on quality, fp8-static is unsupported in vLLM's own words."""
    (section,) = build_sections(load_results(SERVING), 5.0)
    decision = section.decision
    assert decision is not None and decision.choice is not None
    assert decision.choice.name == "w8a8-int8/code/vllm/kv-auto"
    assert decision.runner_up is not None and decision.runner_up.row["format"] == "w8a8-int8"
    lost = dict(decision.lost)
    assert "ppl recovery 95.1 %" in lost["w8a8-int8/code/vllm/kv-fp8"]
    # one line per refusal, naming the cells it hit
    assert lost["fp8-static/code/vllm/kv-auto and 3 more"].startswith("unsupported: vllm on cpu")
    assert any(name.endswith("transformers cells") for name in lost)  # a reference engine: one line


def paired_row(key: str, fmt: str, tok_s: float, right: list[int], minutes: int, **extra: Any) -> dict[str, Any]:
    outcomes = {str(i): v for i, v in enumerate(right)}
    return row(
        key,
        fmt,
        pass_at_1=sum(right) / len(right),
        output_tok_s=tok_s,
        engine_speed_class="serving",
        eval_items=json.dumps({"pass_at_1": outcomes}),
        minutes=minutes,
        **extra,
    )


def test_only_an_equivalent_cell_ships_however_fast_the_others(tmp_path: Path) -> None:
    """SYNTHETIC per-document outcomes: the fastest cell is worse, the next inconclusive (two
    flips of 20), the slowest quantized one equivalent: the last ships."""
    same = [1] * 30 + [0] * 30
    rows = [
        paired_row("base", "bf16", 100.0, same, 0),
        paired_row("w4", "w4a16-gptq", 300.0, [1] * 5 + [0] * 55, 1),
        paired_row("fp8", "fp8-dynamic", 250.0, [0, 0] + same[2:], 2),
        paired_row("int8", "w8a8-int8", 200.0, same, 3),
    ]
    table = write(tmp_path, rows, {}).reset_index()
    decision = decide(table.to_dict("records"))
    assert decision.choice is not None and decision.choice.row["cell_key"] == "int8"
    assert decision.runner_up is not None and decision.runner_up.row["cell_key"] == "base"
    lost = dict(decision.lost)
    assert "Pass@1 worse" in lost["w4a16-gptq/vllm/kv-auto"]
    assert (
        "Pass@1 inconclusive" in lost["fp8-dynamic/vllm/kv-auto"]
        and "items would decide it" in lost["fp8-dynamic/vllm/kv-auto"]
    )


def test_the_markdown_leads_with_the_answer_short_enough_for_a_pr_comment(tmp_path: Path) -> None:
    page = report.build_report([SERVING], tmp_path).markdown.read_text().splitlines()
    lead = page[: page.index("## Regressions (threshold 5 %)")]
    assert "## The answer" in lead and len(lead) <= 40
    assert any(line.startswith("**builtin:smollm2-135m") and "ship w8a8-int8" in line for line in lead)


def test_the_cheapest_at_the_slo_ships_and_a_fallback_kernel_does_not(tmp_path: Path) -> None:
    """SYNTHETIC rows, every one equivalent: the fastest offline (W4A16) ran on a fallback
    kernel; of the others, INT8 is cheaper per million tokens at capacity than bf16 though
    FP8 is faster offline: cost at the SLO decides, as a team paying for the GPU would."""
    same = [1] * 30 + [0] * 30
    rows = [
        paired_row("base", "bf16", 100.0, same, 0, usd_per_million_output_tokens=0.90, capacity_rps=2.0),
        paired_row(
            "w4",
            "w4a16-gptq",
            400.0,
            same,
            1,
            kernel_expected=False,
            kernels="ExllamaLinearKernel for CompressedTensorsWNA16",
            kernels_expected="MacheteLinearKernel; MarlinLinearKernel",
            usd_per_million_output_tokens=0.10,
        ),
        paired_row("fp8", "fp8-dynamic", 300.0, same, 2, usd_per_million_output_tokens=0.60, kernel_expected=True),
        paired_row("int8", "w8a8-int8", 200.0, same, 3, usd_per_million_output_tokens=0.40, capacity_rps=4.5),
    ]
    table = write(tmp_path, rows, {}).reset_index()
    decision = decide(table.to_dict("records"))
    assert decision.choice is not None and decision.choice.row["cell_key"] == "int8"
    assert decision.runner_up is not None and decision.runner_up.row["cell_key"] == "fp8"
    assert "$0.4 per million output tokens at capacity, 4.5 req/s at its SLO" in decision.headline()
    lost = dict(decision.lost)
    assert lost["w4a16-gptq/vllm/kv-auto"] == (
        "ran on a fallback kernel (ExllamaLinearKernel), not one it is made for "
        "(MacheteLinearKernel or MarlinLinearKernel)"
    )
    assert lost["bf16/vllm/kv-auto"] == (
        "dearer: $0.9 per million output tokens at capacity vs $0.4 per million output tokens at capacity"
    )


def test_a_cell_whose_answers_under_load_are_not_the_engines_is_never_shipped(tmp_path: Path) -> None:
    """SYNTHETIC rows, both equivalent: INT8 is cheaper at the SLO, but its greedy answers under load
    degenerated (serving.output_check): bf16 ships, and the line says why INT8 lost."""
    same = [1] * 30 + [0] * 30
    note = "degenerate output under load: 1/8 greedy answers under load equal the offline engine's, 7 left it"
    rows = [
        paired_row("base", "bf16", 100.0, same, 0, usd_per_million_output_tokens=0.90, output_check_ok=True),
        paired_row(
            "int8",
            "w8a8-int8",
            200.0,
            same,
            1,
            usd_per_million_output_tokens=0.40,
            output_check_ok=False,
            output_check_note=note,
        ),
    ]
    decision = decide(write(tmp_path, rows, {}).reset_index().to_dict("records"))
    assert decision.choice is not None and decision.choice.row["cell_key"] == "base"
    assert dict(decision.lost)["w8a8-int8/vllm/kv-auto"] == f"failed its output check under load: {note}"


def test_without_quality_figures_a_garbled_cell_is_not_named_the_fastest() -> None:
    """SYNTHETIC rows with no evals: the faster cell failed its output check, so the page names the
    other as the fastest and says why the first is out."""

    def row(name: str, tok_s: float, check: bool) -> dict:
        return {
            "cell_name": name,
            "format": name.split("/")[0],
            "status": "ok",
            "engine_speed_class": "serving",
            "output_tok_s": tok_s,
            "output_check_ok": check,
            "output_check_note": "degenerate output under load: ..." if not check else "12/12 ...",
        }

    decision = decide(
        [row("gguf-q4_k_m/llamacpp/kv-auto", 300.0, False), row("gguf-q8_0/llamacpp/kv-auto", 200.0, True)]
    )
    assert decision.choice is None and decision.fastest_unjudged is not None
    assert decision.fastest_unjudged.name == "gguf-q8_0/llamacpp/kv-auto"
    assert dict(decision.lost)["gguf-q4_k_m/llamacpp/kv-auto"].startswith("failed its output check under load")
