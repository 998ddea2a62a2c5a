"""track_fit: what lands in the MLflow store, the pyfunc round trip, and that nothing subject-level is logged."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from migpt_traj.api import TrajectoryModel
from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError, SchemaError
from migpt_traj.evaluation.harness import evaluate
from migpt_traj.evaluation.report import EvaluationReport
from migpt_traj.tracking._pyfunc import predict_events
from migpt_traj.tracking.mlflow_tracking import TrackedRun, default_tracking_uri, track_fit

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

SMALL: dict[str, Any] = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "max_epochs": 2,
    "batch_size": 16,
    "n_bins": 4,
    "use_notes": False,
    "progress": False,
    "seed": 3,
}
LANDMARKS = [0.0, 150.0]
HORIZONS = [180.0, 365.25]
ID_OFFSET = 7_340_000  # distinctive subject ids, so a leak into names is detectable


@contextlib.contextmanager
def _pointing_at(uri: str) -> Iterator[None]:
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


@dataclass
class Tracked:
    run: TrackedRun
    model: TrajectoryModel
    cohort: Cohort
    report: EvaluationReport
    client: MlflowClient


@pytest.fixture(scope="module")
def tracked(tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    events = tiny.events(60).with_columns(pl.col("subject_id") + ID_OFFSET)
    splits = {sid + ID_OFFSET: s for sid, s in tiny.splits(60).items()}
    cohort = Cohort.from_events(
        events,
        outcomes=["MEDS_DEATH", "TRANSPLANT"],
        splits=splits,
        metadata={"dataset_name": "tiny", "dataset_version": "0.1"},
    )
    reports: list[EvaluationReport] = []

    def run_evaluation(model: TrajectoryModel, cohort: Cohort) -> EvaluationReport:
        report = evaluate(
            model,
            cohort,
            landmarks=LANDMARKS,
            horizons=HORIZONS,
            baselines=(),
            split="held_out",
            n_bootstrap=20,
            min_events=1,
            leakage=False,
        )
        reports.append(report)
        return report

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.chdir(root)
        model = TrajectoryModel(**SMALL)
        run = track_fit(
            model, cohort, tracking_uri=uri, run_name="tiny-fit", evaluate=run_evaluation, register_as="tiny_model"
        )
        yield Tracked(run, model, cohort, reports[0], MlflowClient(tracking_uri=uri, registry_uri=uri))


def test_params_hold_the_resolved_config_and_counts_per_split(tracked: Tracked) -> None:
    params = tracked.client.get_run(tracked.run.run_id).data.params
    for key, value in tracked.model.config.to_dict().items():
        assert params[f"config.{key}"] == str(value)
    described = tracked.cohort.describe()
    for split, subjects, events in described.select("split", "subjects", "events").iter_rows():
        assert params[f"data.{split}.subjects"] == str(subjects)
        assert params[f"data.{split}.events"] == str(events)
    assert params["data.name"] == "tiny" and params["data.version"] == "0.1"
    assert params["data.train.subjects"] == "36"


def test_tags_hold_code_version_packages_and_seed(tracked: Tracked) -> None:
    tags = tracked.client.get_run(tracked.run.run_id).data.tags
    assert tags["seed"] == "3"
    assert tags["version.mlflow"] == mlflow.__version__
    assert tags["version.torch"] != "not installed"
    sha = tags["git_sha"]
    assert sha == "unknown" or (len(sha) == 40 and all(c in "0123456789abcdef" for c in sha))
    assert tracked.client.get_run(tracked.run.run_id).info.run_name == "tiny-fit"


def test_training_curves_are_metrics_per_epoch(tracked: Tracked) -> None:
    for name in ("train_loss", "val_loss"):
        logged = tracked.client.get_metric_history(tracked.run.run_id, name)
        curve = tracked.model.history[name]
        assert len(curve) == SMALL["max_epochs"]
        assert [m.step for m in sorted(logged, key=lambda m: m.step)] == list(range(len(curve)))
        np.testing.assert_allclose([m.value for m in sorted(logged, key=lambda m: m.step)], curve)


def test_evaluation_metrics_with_ci_per_landmark_and_horizon(tracked: Tracked) -> None:
    metrics = tracked.client.get_run(tracked.run.run_id).data.metrics
    rows = tracked.report.metrics.filter(pl.col("status") == "ok")
    auc = rows.filter(pl.col("metric") == "auc")
    assert auc.height >= 1
    for lm, h, event, value, lower, upper in auc.select(
        "landmark_days", "horizon_days", "event", "value", "lower", "upper"
    ).iter_rows():
        stem = f"td_auc.lm{int(lm)}.h{int(h)}.{event}"
        assert metrics[stem] == pytest.approx(value)
        if np.isfinite(lower):
            assert metrics[f"{stem}_lower"] == pytest.approx(lower)
            assert metrics[f"{stem}_upper"] == pytest.approx(upper)
    assert "td_auc.lm150.h365.MEDS_DEATH" in metrics
    assert not any(np.isnan(v) for v in metrics.values())


def test_report_html_figures_and_model_are_artifacts(tracked: Tracked) -> None:
    client, run_id = tracked.client, tracked.run.run_id
    report = {a.path for a in client.list_artifacts(run_id, "report")}
    assert "report/report.html" in report and "report/report.json" not in report
    figures = [a.path for a in client.list_artifacts(run_id, "report/figures")]
    assert figures and all(p.endswith(".png") for p in figures)
    assert tracked.run.model_uri is not None and tracked.run.registered_version == "1"
    version = client.get_model_version_by_alias("tiny_model", "champion")
    assert str(version.version) == "1"


def test_pyfunc_loads_and_predicts_the_models_risks(tracked: Tracked) -> None:
    with _pointing_at(tracked.run.tracking_uri):
        pyfunc = mlflow.pyfunc.load_model("models:/tiny_model@champion")
    held = tracked.cohort.subset(split="held_out")
    events = held.events.select("subject_id", "time", "code", "numeric_value", "text_value").to_pandas()
    out = pyfunc.predict(events, params={"landmarks": LANDMARKS, "horizons": HORIZONS})
    expected = tracked.model.predict_risk(tracked.cohort, landmarks=LANDMARKS, horizons=HORIZONS, split="held_out")
    got = pl.from_pandas(out).sort("subject_id", "landmark_days", "event", "horizon_days")
    expected = expected.sort("subject_id", "landmark_days", "event", "horizon_days")
    assert got.height == expected.height > 0
    assert got["subject_id"].to_list() == expected["subject_id"].to_list()
    np.testing.assert_allclose(got["risk"].to_numpy(), expected["risk"].to_numpy(), rtol=1e-6, atol=1e-7)


def test_pyfunc_input_without_outcomes_drops_the_sentinel(tracked: Tracked) -> None:
    held = tracked.cohort.subset(split="held_out")
    alive = held.events.filter(~pl.col("code").is_in(["MEDS_DEATH", "TRANSPLANT"]))
    out = predict_events(tracked.model, alive, params={"landmarks": [0.0], "horizons": [180.0]})
    assert set(out["subject_id"].to_list()) <= set(held.subject_ids())
    assert out.height > 0


def test_pyfunc_input_missing_a_column_raises(tracked: Tracked) -> None:
    with pytest.raises(SchemaError, match=r"lacks column\(s\) \['code'\]"):
        predict_events(tracked.model, pl.DataFrame({"subject_id": [1], "time": [None]}))


def test_no_subject_id_or_date_in_names_params_tags_or_example(tracked: Tracked, tmp_path: Path) -> None:
    client, run_id = tracked.client, tracked.run.run_id
    run = client.get_run(run_id)
    texts = [run.info.run_name or ""]
    texts += [f"{k}={v}" for k, v in run.data.params.items()]
    texts += [f"{k}={v}" for k, v in run.data.tags.items()]
    texts += list(run.data.metrics)
    blob = "\n".join(texts)
    ids = [str(s) for s in tracked.cohort.subject_ids()]
    dates = tracked.cohort.events["time"].drop_nulls().dt.strftime("%Y-%m-%d").unique().to_list()
    assert len(ids) == 60 and len(dates) > 100
    assert [s for s in ids if s in blob] == []
    assert [d for d in dates if d in blob] == []
    # the input example is made up: neither its subjects nor its dates are in the cohort
    with _pointing_at(tracked.run.tracking_uri):
        local = mlflow.artifacts.download_artifacts(artifact_uri=tracked.run.model_uri, dst_path=str(tmp_path))
    example = json.loads(next(Path(local).rglob("input_example.json")).read_text())
    text = json.dumps(example)
    assert [s for s in ids if s in text] == []
    assert [d for d in dates if d in text] == []


def test_default_tracking_uri_is_an_absolute_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_register_without_logging_the_model_is_refused(tracked: Tracked) -> None:
    with pytest.raises(ConfigError, match="register_as needs log_model=True"):
        track_fit(
            TrajectoryModel(**SMALL),
            tracked.cohort,
            tracking_uri=tracked.run.tracking_uri,
            log_model=False,
            register_as="x",
        )
