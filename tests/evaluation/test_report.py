"""Tests of migpt_traj.evaluation.report: JSON round trip, the self-contained HTML report and the saved folder."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from _evaluation_standins import AsOfLabModel
from polars.testing import assert_frame_equal

from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import DataReadError
from migpt_traj.evaluation.harness import evaluate
from migpt_traj.evaluation.report import EvaluationReport

_TABLES = (
    *("metrics", "comparisons", "calibration", "decision_curves", "subgroups"),
    *("description", "flow", "missingness", "predictions"),
)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cohort(tiny) -> Cohort:
    return tiny.cohort(200, seed=5, train=0.5, tuning=0.1)


@pytest.fixture(scope="module")
def report(cohort: Cohort) -> EvaluationReport:
    return evaluate(
        AsOfLabModel().fit(cohort),
        cohort,
        landmarks=[0.0, 120.0],
        horizons=[180.0, 365.0],
        baselines=["null"],
        n_bootstrap=30,
        subgroups=["SEX//female"],
        leakage_subjects=4,
    )


@pytest.fixture(scope="module")
def saved(report: EvaluationReport, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return report.save(tmp_path_factory.mktemp("report"))


def test_json_round_trips_to_the_same_numbers(report: EvaluationReport, saved: Path) -> None:
    back = EvaluationReport.from_json(saved / "report.json")
    for name in _TABLES:
        assert_frame_equal(getattr(back, name), getattr(report, name), check_exact=True)
    assert_frame_equal(back.leakage.checks, report.leakage.checks, check_exact=True)
    assert_frame_equal(back.leakage.codes, report.leakage.codes, check_exact=True)
    assert back.settings == json.loads(json.dumps(report.settings))
    assert back.leakage.passed == report.leakage.passed
    assert report.metrics["value"].is_nan().any()  # NaN survived the trip (written as null)
    assert "NaN" not in (saved / "report.json").read_text()  # strict JSON


def test_from_json_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"format": "something else"}')
    with pytest.raises(DataReadError, match=r"is not a migpt_traj\.evaluation_report version 1 file"):
        EvaluationReport.from_json(tmp_path / "x.json")
    with pytest.raises(DataReadError, match="Cannot read an evaluation report"):
        EvaluationReport.from_json(tmp_path / "missing.json")


def test_html_is_self_contained_with_tables_and_images(report: EvaluationReport, saved: Path) -> None:
    text = (saved / "report.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for heading in ("Discrimination", "Comparison with the baselines", "Calibration", "decision curves"):
        assert heading in text
    for heading in ("Leakage audit", "Cohort", "Subgroups", "Missing measurements"):
        assert heading in text
    assert text.count("<table>") >= 8
    for check in ("future_perturbation", "outcome_derived_features", "split_overlap"):
        assert check in text
    assert "LAB//a" in text and "SEX//female" in text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(list((saved / "figures").iterdir())) >= 5
    assert all(base64.b64decode(img).startswith(PNG) for img in images)
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from elsewhere


def test_saved_folder_holds_the_figures(report: EvaluationReport, saved: Path) -> None:
    names = sorted(p.name for p in (saved / "figures").iterdir())
    assert names == sorted(report.figures())
    assert {"auc_1_meds_death.png", "calibration_1_meds_death.png", "decision_curves_1_meds_death.png"} <= set(names)
    assert all((saved / "figures" / n).read_bytes().startswith(PNG) for n in names)


def test_outcomes_without_a_scored_cell_get_a_note_not_empty_figures(report: EvaluationReport, tmp_path: Path) -> None:
    thin = report.metrics.with_columns(status=pl.lit("few_events"), value=pl.lit(float("nan")))
    empty = EvaluationReport(**{**report.__dict__, "metrics": thin})
    assert empty.figures() == {}
    text = empty.to_html(tmp_path / "thin.html").read_text(encoding="utf-8")
    assert "No cell of MEDS_DEATH could be scored (few_events:" in text
    assert "data:image/png" not in text


def test_summary_formats_estimates_and_statuses(report: EvaluationReport) -> None:
    summary = report.summary()
    assert summary.columns[:4] == ["model", "event", "landmark_days", "horizon_days"]
    assert summary["model"].unique(maintain_order=True).to_list() == ["AsOfLab", "null"]
    row = report.metrics.filter(
        (pl.col("model") == "AsOfLab") & (pl.col("metric") == "auc") & (pl.col("status") == "ok")
    ).row(0, named=True)
    cell = summary.filter(
        (pl.col("model") == "AsOfLab")
        & (pl.col("event") == row["event"])
        & (pl.col("landmark_days") == row["landmark_days"])
        & (pl.col("horizon_days") == row["horizon_days"])
    )["auc"][0]
    assert cell == f"{row['value']:.3f} ({row['lower']:.3f}–{row['upper']:.3f})"
    pattern = re.compile(r"^(\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)|\d\.\d{3}|— \((few_events|not_estimable)\))$")
    assert all(pattern.match(c) for c in summary["auc"].to_list()), summary["auc"].to_list()
    statuses = report.metrics.filter(pl.col("metric") == "auc")["status"]
    assert summary["auc"].str.starts_with("— (").sum() == (statuses != "ok").sum() > 0


def test_repr_names_the_models_and_the_audit(report: EvaluationReport) -> None:
    text = repr(report)
    assert "models=['AsOfLab', 'null']" in text and "leakage audit passed" in text
    assert np.isfinite(report.metrics.filter(pl.col("status") == "ok")["value"].to_numpy()).all()


@pytest.mark.slow
def test_cli_evaluate_writes_the_report(cohort: Cohort, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import migpt_traj as mt
    from migpt_traj.cli import main

    root = cohort.to_meds(tmp_path / "meds")
    model = mt.TrajectoryModel(d_model=16, n_layers=1, max_epochs=2, use_notes=False, progress=False).fit(cohort)
    model.save(tmp_path / "run")
    args = ["evaluate", "--model", str(tmp_path / "run"), "--data", str(root), "--landmarks", "0,4m"]
    args += ["--horizons", "6m,1y", "--bootstrap", "10", "--quiet"]
    assert main([*args, "--baselines", "null", "--out", str(tmp_path / "out")]) == 0
    assert {"report.html", "report.json", "figures"} <= {p.name for p in (tmp_path / "out").iterdir()}
    back = EvaluationReport.from_json(tmp_path / "out" / "report.json")
    assert back.settings["landmarks_days"] == [0.0, 365.25 / 3] and back.settings["baselines"] == ["null"]
    assert main([*args, "--baselines", "coxx", "--out", str(tmp_path / "bad")]) == 2
    assert "Unknown baseline 'coxx'" in capsys.readouterr().err
