"""The performance benchmark (benchmarks/perf.py): its pandas reference computes what the library computes, and
the command runs on a tiny cohort and writes the documented JSON. No timing is asserted anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from migpt_traj.data.preprocess import Preprocessor
from migpt_traj.data.tensorize import tensorize, training_queries
from migpt_traj.datasets import make_synthetic

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

from perf_reference import compare_with_library, pandas_events, tensorize_pandas  # noqa: E402
from perf_stages import stub_note_embedder  # noqa: E402


@pytest.fixture(scope="module")
def cohort_and_pre() -> tuple[Any, Preprocessor]:
    cohort = make_synthetic(150, seed=4)
    return cohort, Preprocessor.fit(cohort)


@pytest.mark.parametrize("max_len", [512, 6], ids=["full", "truncated"])
@pytest.mark.parametrize("notes", [True, False], ids=["notes", "no-notes"])
def test_pandas_reference_equals_the_library_on_training_queries(
    cohort_and_pre: tuple[Any, Preprocessor], max_len: int, notes: bool
) -> None:
    cohort, pre = cohort_and_pre
    embed = stub_note_embedder(4) if notes else None
    samples, queries = training_queries(cohort, split="train")
    lib = tensorize(cohort, samples, pre, queries=queries, max_len=max_len, note_embedder=embed, note_dim=4)
    ref = tensorize_pandas(
        cohort, pandas_events(cohort), samples, pre, queries=queries, max_len=max_len, note_embedder=embed
    )
    diffs = compare_with_library(lib, ref)
    assert max(diffs.values()) <= 1e-5, diffs
    assert (lib.note_index >= 0).any() == notes and (lib.image_index >= 0).any()


def test_pandas_reference_equals_the_library_at_landmarks(cohort_and_pre: tuple[Any, Preprocessor]) -> None:
    cohort, pre = cohort_and_pre
    lab = cohort.labels(landmarks=[0.0, 200.0, 900.0])
    samples = lab.select("subject_id", pl.col("prediction_time").alias("cutoff_time"))
    embed = stub_note_embedder(4)
    lib = tensorize(cohort, samples, pre, note_embedder=embed, note_dim=4)
    diffs = compare_with_library(
        lib, tensorize_pandas(cohort, pandas_events(cohort), samples, pre, note_embedder=embed)
    )
    assert max(diffs.values()) <= 1e-5, diffs


def test_the_comparison_sees_a_difference(cohort_and_pre: tuple[Any, Preprocessor]) -> None:
    """Positive control: a reference with a one-day looser as-of rule is caught."""
    cohort, pre = cohort_and_pre
    lab = cohort.labels(landmarks=[400.0])
    samples = lab.select("subject_id", pl.col("prediction_time").alias("cutoff_time"))
    lib = tensorize(cohort, samples, pre)
    later = samples.with_columns(pl.col("cutoff_time") + pl.duration(days=30))
    ref = tensorize_pandas(cohort, pandas_events(cohort), later, pre)
    with pytest.raises(AssertionError):
        compare_with_library(lib, ref)


def test_the_benchmark_command_writes_the_documented_json(tmp_path: Path) -> None:
    out = tmp_path / "perf.json"
    cmd = [sys.executable, str(BENCH / "perf.py"), "--sizes", "200", "--pandas-samples", "20"]
    subprocess.run([*cmd, "--stages", "tensorize", "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    machine = result["machine"]
    for key in ("cpu_model", "cpu_count", "ram_gib", "load_average_at_start", "load_average_at_end", "packages"):
        assert key in machine, key
    assert machine["packages"]["torch"] and machine["packages"]["polars"]
    rows = result["tensorize"]
    assert [r["n_subjects"] for r in rows] == [200]
    for r in rows:
        for key in ("input_events", "tensorize_s", "input_events_per_s", "queries_s", "peak_rss_mib_library"):
            assert np.isfinite(r[key]) and r[key] > 0, key
        assert r["pandas"]["samples"] == 20 and r["pandas"]["speedup_same_samples"] > 0


def test_growth_slope_is_the_log_log_exponent() -> None:
    from perf import slope

    x = [1e4, 1e5, 1e6]
    assert slope(x, [2 * v**1.5 for v in x]) == pytest.approx(1.5)
    assert slope([5.0, 5.0], [1.0, 2.0]) is None
