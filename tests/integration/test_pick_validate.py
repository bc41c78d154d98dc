"""`harness pick --validate` end to end on SmolLM2 (CPU): the picker's answer under the strict
floor (GGUF Q5_K_M) is run beside llama.cpp's own BF16 GGUF, misses the 99 % floor on perplexity
(85 % measured here), and the walk goes on to 8-bit (Q8_0, 99.5 %), which passes; the answer
names the rows that decided it and what each step cost. (Under the balanced floor the walk is one
step longer: Q4_K_M 89.6 %, Q5_K_M, Q8_0; the chain's order is tests/test_fallback.py's.)"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli

# 6 min on a 2-core AVX-512 host, more where bf16 is emulated: the nightly CPU tier
# (scripts/nightly-cpu); the chain's logic stays in every CI run (tests/test_fallback.py).
pytestmark = [pytest.mark.integration, pytest.mark.nightly]


def test_the_walk_leaves_a_first_candidate_that_misses_its_floor(tmp_path: Path, smollm2_dir: Path) -> None:
    out = tmp_path / "validate"
    done = run_cli(
        "pick",
        *("--hardware", "cpu", "--model", "smollm2-135m", "--workload", "chat", "--tolerance", "strict"),
        *("--concurrency", "4", "--context", "256", "--validate", "--validate-dir", str(out)),
        timeout=2400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    verdict = json.loads((out / "validation.json").read_text(encoding="utf-8"))
    steps = verdict["steps"]
    rows = pd.read_parquet(out / "results.parquet")

    # the first candidate is the picker's answer, and it misses the floor by its paired verdict
    assert steps[0]["format"] == "gguf-q5_k_m" and steps[0]["why"] == "the picker's answer"
    assert steps[0]["verdict"] == "worse", steps[0]
    first = rows[rows["format"] == "gguf-q5_k_m"].iloc[0]
    assert first["perplexity_recovery_pct"] < 99.0
    # the walk stopped at the first step that passed, and that is the answer
    assert [s["verdict"] == "equivalent" for s in steps] == [False] * (len(steps) - 1) + [True], steps
    assert verdict["answer"] == steps[-1]["format"] != "gguf-q5_k_m"
    assert [(s["format"], s["why"]) for s in steps] == [("gguf-q5_k_m", "the picker's answer"), ("gguf-q8_0", "8-bit")]
    answer = rows[rows["format"] == verdict["answer"]].iloc[0]
    assert answer["perplexity_recovery_pct"] >= 99.0
    # each step names the rows that decided it (the candidate, then its reference), all in the table
    for step in steps:
        named = [r.split(" @ ")[1] for r in step["rows"]]
        assert len(named) == 2 and set(named) <= set(rows["cell_key"]), step
        assert step["wall_s"] > 0
    # the reference (llama.cpp's own BF16 GGUF) was measured once and resumed by every later step
    assert (rows["format"] == "gguf-bf16").sum() == 1
    assert {s["rows"][1] for s in steps} == {steps[0]["rows"][1]}
    assert steps[1]["wall_s"] < steps[0]["wall_s"]  # the baseline's cost is in the first step only
    assert sorted(p.name for p in out.glob("step-*.yaml")) == sorted(f"step-{s['format']}.yaml" for s in steps)
    assert f"answer: ship {verdict['answer']}" in done.stdout
