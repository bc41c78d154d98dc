"""GGUF calibration joins the domain axis (issue 13): gguf-q4_k_m with llama.cpp's importance
matrix from each calibration set, built by the vendored llama.cpp's llama-imatrix and
llama-quantize, against the same type without one, KL divergence against llama.cpp's BF16."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from harness import llamacpp_tools
from tests.conftest import run_cli

# the nightly CPU tier (scripts/nightly-cpu): too long for every CI run on a 2-core AVX2 host
# (docs/production.md, "CI time and what each tier proves")
pytestmark = [pytest.mark.integration, pytest.mark.nightly]

CONFIG = """
name: it-gguf-imatrix
model: {source: builtin:smollm2-135m}
formats:
  - gguf-bf16
  - gguf-q4_k_m
  - {name: gguf-q4_k_m, imatrix: true, label: q4km-imatrix}
calibration:
  - {name: code, source: builtin:code, samples: 8, seq_len: 128}
  - {name: prose, source: builtin:prose, samples: 8, seq_len: 128}
workload: {prompts: 2, input_len: 16, output_len: 8}
engine: {name: llamacpp, max_model_len: 256, timeout_s: 600}
evals: {tasks: [perplexity], limit: 2, kld: {windows: 4, seq_len: 256}}
"""


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> pd.DataFrame:
    work = tmp_path_factory.mktemp("imatrix")
    (work / "c.yaml").write_text(CONFIG)
    done = run_cli("run", str(work / "c.yaml"), "--output", str(work / "out"), timeout=2400)
    assert done.returncode == 0, done.stderr[-3000:]
    return pd.read_parquet(work / "out" / "results.parquet").set_index("cell_name")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_artifact_per_calibration_set(rows: pd.DataFrame) -> None:
    assert sorted(rows.index) == [
        "gguf-bf16/llamacpp/kv-auto",
        "gguf-q4_k_m/llamacpp/kv-auto",
        "q4km-imatrix/code/llamacpp/kv-auto",
        "q4km-imatrix/prose/llamacpp/kv-auto",
    ]
    for name, row in rows.iterrows():
        assert row["status"] == "ok", f"{name}: {row['reason']}"
    models = {name: Path(rows.loc[name, "artifact_path"]) / "model.gguf" for name in rows.index}
    assert len({_sha(path) for path in models.values()}) == 4  # the matrix changed the rounding


def test_the_matrix_is_llama_imatrix_over_the_cells_calibration_set(
    rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # for this test only: gguf-py also holds a `tests` package, which shadowed ours in every
    # process spawned later in the session (multiprocessing copies sys.path)
    monkeypatch.syspath_prepend(str(llamacpp_tools.tools_dir() / "gguf-py"))
    from gguf import GGUFReader

    for domain in ("code", "prose"):
        directory = Path(rows.loc[f"q4km-imatrix/{domain}/llamacpp/kv-auto", "artifact_path"])
        reader = GGUFReader(directory / "imatrix.gguf")
        fields = {name: field.contents() for name, field in reader.fields.items() if name.startswith("imatrix.")}
        # the 8 samples' ids decoded to text re-tokenize to a few tokens fewer than 8 x 128 (merges
        # across the joins), and llama-imatrix counts whole chunks only
        assert fields["imatrix.chunk_size"] == 128 and 6 <= fields["imatrix.chunk_count"] <= 8, fields
        names = {tensor.name for tensor in reader.tensors}
        assert "blk.0.attn_q.weight.in_sum2" in names and "blk.29.ffn_down.weight.in_sum2" in names
    assert not (directory / "imatrix-calibration.txt").exists()  # the decoded text is not kept


def test_the_matrix_lowers_the_divergence_on_its_own_domain(rows: pd.DataFrame) -> None:
    """The held-out windows are prose: the prose matrix protects what they need."""
    plain = rows.loc["gguf-q4_k_m/llamacpp/kv-auto"]
    prose = rows.loc["q4km-imatrix/prose/llamacpp/kv-auto"]
    base = rows.loc["gguf-bf16/llamacpp/kv-auto"]
    for row in (plain, prose, rows.loc["q4km-imatrix/code/llamacpp/kv-auto"]):
        assert row["reference_cell_key"] == base["cell_key"] and row["kld_method"] == "exact"
    assert prose["kld_mean"] < plain["kld_mean"]
