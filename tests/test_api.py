"""TrajectoryModel end to end on tiny cohorts: output contract, probability laws, persistence, as-of invariance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from migpt_traj.api import TrajectoryModel
from migpt_traj.data.cohort import Cohort
from migpt_traj.data.datamodule import TokenDataset, collate_tokens
from migpt_traj.data.tensorize import tensorize, training_queries
from migpt_traj.errors import ConfigError, ModelStateError, OutcomeError
from migpt_traj.model.survival import negative_log_likelihood

SMALL: dict[str, Any] = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "max_epochs": 2,
    "batch_size": 16,
    "n_bins": 4,
    "use_notes": False,
    "progress": False,
    "seed": 0,
}
LANDMARKS = [0.0, 150.0]
HORIZONS = [30.0, 180.0, 365.25]


@pytest.fixture(scope="module")
def cohort(tiny: Any) -> Cohort:
    return tiny.cohort(40, images=True, lag_days=20.0)


@pytest.fixture(scope="module")
def fitted(cohort: Cohort) -> TrajectoryModel:
    return TrajectoryModel(**SMALL).fit(cohort)


def test_predict_risk_columns_dtypes_and_rows(fitted: TrajectoryModel, cohort: Cohort) -> None:
    risk = fitted.predict_risk(cohort, landmarks=LANDMARKS, horizons=HORIZONS, split="held_out")
    assert risk.schema == pl.Schema(
        {
            "subject_id": pl.Int64,
            "prediction_time": pl.Datetime("us"),
            "landmark_days": pl.Float64,
            "event": pl.String,
            "horizon_days": pl.Float64,
            "risk": pl.Float64,
        }
    )
    labels = cohort.labels(landmarks=LANDMARKS, split="held_out")
    assert labels.height > 0
    assert risk.height == labels.height * len(cohort.outcomes) * len(HORIZONS)
    keys = risk.select("subject_id", "prediction_time", "landmark_days").unique().sort(pl.all())
    assert_frame_equal(keys, labels.select("subject_id", "prediction_time", "landmark_days").sort(pl.all()))
    assert set(risk["event"].unique()) == set(cohort.outcomes)
    assert sorted(risk["horizon_days"].unique().to_list()) == HORIZONS
    assert risk.filter(pl.col("risk").is_null() | pl.col("risk").is_nan()).height == 0


def test_risk_is_a_monotone_probability_and_sums_with_survival_to_one(fitted: TrajectoryModel, cohort: Cohort) -> None:
    risk = fitted.predict_risk(cohort, landmarks=LANDMARKS, horizons=[0.0, *HORIZONS, 4000.0], split=None)
    assert risk["risk"].min() >= 0.0 and risk["risk"].max() <= 1.0  # type: ignore[operator]
    assert risk.filter(pl.col("horizon_days") == 0.0)["risk"].max() == 0.0
    steps = risk.sort("subject_id", "prediction_time", "event", "horizon_days").with_columns(
        step=pl.col("risk").diff().over("subject_id", "prediction_time", "event")
    )
    assert steps["step"].drop_nulls().min() >= -1e-7  # type: ignore[operator]
    surv = fitted.predict_survival(cohort, landmarks=LANDMARKS, times=[0.0, *HORIZONS, 4000.0], split=None)
    total = (
        risk.group_by("subject_id", "prediction_time", "horizon_days")
        .agg(pl.col("risk").sum())
        .join(surv.rename({"time_days": "horizon_days"}), on=["subject_id", "prediction_time", "horizon_days"])
    )
    assert total.height == surv.height == risk.height // len(cohort.outcomes)
    np.testing.assert_allclose(total["risk"] + total["survival"], 1.0, atol=1e-5)
    # Risks differ between subjects: the model is not a constant.
    assert risk.filter(pl.col("horizon_days") == 365.25)["risk"].n_unique() > 10


def test_prediction_times_agree_with_landmarks(fitted: TrajectoryModel, cohort: Cohort) -> None:
    by_landmark = fitted.predict_risk(cohort, landmarks=[150.0], horizons=HORIZONS, split="tuning")
    times = by_landmark.select("subject_id", "prediction_time").unique()
    by_time = fitted.predict_risk(cohort, prediction_times=times, horizons=HORIZONS, split="tuning")
    assert_frame_equal(by_landmark.drop("landmark_days"), by_time.drop("landmark_days"))


def test_a_landmark_with_nobody_at_risk_gives_an_empty_frame(fitted: TrajectoryModel, cohort: Cohort) -> None:
    risk = fitted.predict_risk(cohort, landmarks=[50_000.0], horizons=HORIZONS)
    assert risk.height == 0
    assert risk.columns == ["subject_id", "prediction_time", "landmark_days", "event", "horizon_days", "risk"]


def _file_kinds(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes()[:4] for p in path.rglob("*") if p.is_file()}


def test_save_then_load_predicts_identically_without_pickle(
    fitted: TrajectoryModel, cohort: Cohort, tmp_path: Path
) -> None:
    fitted.save(tmp_path / "run")
    kinds = _file_kinds(tmp_path / "run")
    assert set(kinds) == {"model.json", "model.safetensors"}
    for name, head in kinds.items():
        assert not head.startswith(b"\x80"), f"{name} is a pickle"
        assert not head.startswith(b"PK"), f"{name} is a zip (torch.save) archive"
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["outcomes"] == list(cohort.outcomes)
    loaded = TrajectoryModel.load(tmp_path / "run")
    for method, kwargs in (("predict_risk", {"horizons": HORIZONS}), ("predict_survival", {"times": HORIZONS})):
        a = getattr(fitted, method)(cohort, landmarks=LANDMARKS, split="held_out", **kwargs)
        b = getattr(loaded, method)(cohort, landmarks=LANDMARKS, split="held_out", **kwargs)
        assert_frame_equal(a, b, check_exact=True)
    assert loaded.preprocessor is not None and fitted.preprocessor is not None
    assert loaded.preprocessor.to_dict() == fitted.preprocessor.to_dict()


def test_load_rejects_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelStateError, match="Cannot read a saved model"):
        TrajectoryModel.load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ModelStateError, match="format_version 99"):
        TrajectoryModel.load(tmp_path)


def _edit_after(cohort: Cohort, cutoffs: pl.DataFrame, seed: int) -> Cohort:
    """Change every input event available after its subject's cutoff and drop about half of them.

    Outcomes and end of follow-up are kept, so the at-risk set at the cutoff is the same.
    """
    rng = np.random.default_rng(seed)
    ev = cohort.events.with_row_index("_i").join(cutoffs, on="subject_id", how="left")
    avail = pl.coalesce("available_time", "time")
    protected = pl.col("code").is_in([*cohort.outcomes, "END_OF_FOLLOWUP"]) | pl.col("time").is_null()
    future = (avail > pl.col("cutoff")).fill_null(False) & ~protected
    drop = pl.Series(rng.random(ev.height) < 0.5)
    ev = ev.filter(~(future & drop)).with_columns(
        numeric_value=pl.when(future).then(pl.col("numeric_value") * 3 + 11).otherwise(pl.col("numeric_value")),
        embedding=pl.when(future)
        .then(pl.col("embedding").list.eval(pl.element() * -4 + 2))
        .otherwise(pl.col("embedding")),
        code=pl.when(future & (pl.col("code") == "SIGN//x")).then(pl.lit("SIGN//new")).otherwise(pl.col("code")),
    )
    return cohort.with_events(ev.drop("_i", "cutoff"))


def test_predictions_at_a_landmark_ignore_everything_available_later(fitted: TrajectoryModel, cohort: Cohort) -> None:
    landmark = 150.0
    cutoffs = cohort.labels(landmarks=[landmark]).select("subject_id", pl.col("prediction_time").alias("cutoff"))
    edited = _edit_after(cohort, cutoffs, seed=0)
    assert edited.events.height < cohort.events.height
    a = fitted.predict_risk(cohort, landmarks=[landmark], horizons=HORIZONS)
    b = fitted.predict_risk(edited, landmarks=[landmark], horizons=HORIZONS)
    assert a.height > 0
    assert_frame_equal(a, b, check_exact=True)
    # Positive control: at a later landmark the edits are visible and change the predictions.
    late_a = fitted.predict_risk(cohort, landmarks=[600.0], horizons=HORIZONS)
    late_b = fitted.predict_risk(edited, landmarks=[600.0], horizons=HORIZONS)
    joined = late_a.join(late_b, on=["subject_id", "prediction_time", "event", "horizon_days"])
    assert (joined["risk"] - joined["risk_right"]).abs().max() > 1e-4  # type: ignore[operator]


def test_predictions_see_the_event_available_at_t_and_nothing_after_it(fitted: TrajectoryModel, cohort: Cohort) -> None:
    """Prediction times one second before / exactly at each subject's second visit (a leak of even a day shows)."""
    visit = (
        cohort.events.filter(pl.col("code") == "LAB//a")
        .group_by("subject_id")
        .agg(pl.col("time").sort().slice(1, 1).first().alias("prediction_time"))
        .drop_nulls()
        .sort("subject_id")
    )
    assert visit.height > 20
    before = visit.with_columns(pl.col("prediction_time") - pl.duration(seconds=1))
    edited = _edit_after(cohort, before.rename({"prediction_time": "cutoff"}), seed=1)
    a = fitted.predict_risk(cohort, prediction_times=before, horizons=HORIZONS)
    b = fitted.predict_risk(edited, prediction_times=before, horizons=HORIZONS)
    assert a.height == visit.height * len(cohort.outcomes) * len(HORIZONS)
    assert_frame_equal(a, b, check_exact=True)
    # As of is inclusive: at the visit time itself the edited visit is visible and moves the risks.
    at_a = fitted.predict_risk(cohort, prediction_times=visit, horizons=HORIZONS)
    at_b = fitted.predict_risk(edited, prediction_times=visit, horizons=HORIZONS)
    moved = (at_a["risk"] - at_b["risk"]).abs() > 1e-6
    assert moved.mean() > 0.8  # type: ignore[operator]


def _train_nll(model: TrajectoryModel, cohort: Cohort) -> tuple[float, float]:
    """Mean train NLL of the fitted model and of the null model (per-bin constant hazards at their MLE)."""
    assert model.module is not None and model.preprocessor is not None
    samples, queries = training_queries(cohort, split="train", extra_per_subject=0)
    table = tensorize(cohort, samples, model.preprocessor, queries=queries)
    module = model.module.eval()
    batch = collate_tokens(TokenDataset(table), list(range(table.n_samples)))
    with torch.no_grad():
        lh = torch.empty(table.q_sample.size, len(cohort.outcomes), module.edges.numel())
        lh[batch["q_row"]] = module.log_hazard(batch)
    duration, cause = torch.from_numpy(table.q_duration), torch.from_numpy(table.q_cause)
    nll = negative_log_likelihood(lh, module.edges, duration, cause).mean().item()
    # Null model: the closed-form MLE events / exposure per cause and bin, from the same queries.
    edges = module.edges.double().numpy()
    d, c = table.q_duration.astype(np.float64), table.q_cause
    widths = np.append(np.diff(edges), np.inf)
    exposure = np.clip(d[:, None] - edges[None, :], 0, widths).sum(0)
    j = np.searchsorted(edges, d, side="right") - 1
    rates = np.array([[((c == k) & (j == b)).sum() for b in range(edges.size)] for k in (1, 2)]) / exposure
    null_lh = torch.log(torch.from_numpy(np.maximum(rates, 1e-300))).float().expand(d.size, -1, -1)
    null = negative_log_likelihood(null_lh, module.edges, duration, cause).mean().item()
    return nll, null


@pytest.mark.slow
def test_the_model_can_overfit_a_tiny_cohort(tiny: Any) -> None:
    cohort = tiny.cohort(24, seed=3, train=1.0, tuning=0.0)
    settings = {
        **SMALL,
        "d_model": 32,
        "max_epochs": 30,
        "batch_size": 8,
        "dropout": 0.0,
        "lr": 3e-3,
        "weight_decay": 0.0,
        "extra_queries_per_subject": 0,
    }
    model = TrajectoryModel(**settings).fit(cohort)
    nll, null = _train_nll(model, cohort)
    # Measured: 4.15 vs 5.23 nats per query.
    assert nll < null - 0.5, f"train NLL {nll:.3f} vs null {null:.3f}"


def test_fit_without_a_tuning_split_keeps_the_last_weights(tiny: Any) -> None:
    cohort = tiny.cohort(12, seed=3, train=1.0, tuning=0.0)
    model = TrajectoryModel(**{**SMALL, "max_epochs": 1}).fit(cohort)
    assert model.history["best_epoch"] == -1 and model.history["best_val_loss"] is None
    risk = model.predict_risk(cohort, landmarks=[0.0], horizons=[30.0])
    assert risk.height == cohort.labels(landmarks=[0.0]).height * len(cohort.outcomes)


@pytest.mark.parametrize("method", ["predict_risk", "predict_survival", "save"])
def test_using_an_unfitted_model_raises(method: str, cohort: Cohort, tmp_path: Path) -> None:
    model = TrajectoryModel(**SMALL)
    call = {
        "predict_risk": lambda: model.predict_risk(cohort, landmarks=[0], horizons=[30]),
        "predict_survival": lambda: model.predict_survival(cohort, landmarks=[0], times=[30]),
        "save": lambda: model.save(tmp_path),
    }[method]
    with pytest.raises(ModelStateError, match="not fitted; call fit"):
        call()


@pytest.mark.parametrize(
    "horizons",
    [
        pytest.param([], id="empty"),
        pytest.param([-1.0], id="negative"),
        pytest.param([30.0, float("nan")], id="nan"),
        pytest.param([float("inf")], id="inf"),
        pytest.param([[30.0, 60.0]], id="nested"),
    ],
)
def test_bad_horizons_raise(fitted: TrajectoryModel, cohort: Cohort, horizons: Any) -> None:
    with pytest.raises(ConfigError, match="Horizons must be a non-empty list of finite days >= 0"):
        fitted.predict_risk(cohort, landmarks=[0], horizons=horizons)
    with pytest.raises(ConfigError, match="Horizons must be"):
        fitted.predict_survival(cohort, landmarks=[0], times=horizons)


@pytest.mark.parametrize("horizons", [pytest.param("365", id="string"), pytest.param(["1y"], id="unit-string")])
def test_string_horizons_raise_config_error(fitted: TrajectoryModel, cohort: Cohort, horizons: Any) -> None:
    with pytest.raises(ConfigError, match="Horizons must be"):
        fitted.predict_risk(cohort, landmarks=[0], horizons=horizons)


def test_fit_rejects_outcomes_other_than_the_cohorts(cohort: Cohort) -> None:
    with pytest.raises(OutcomeError, match=r"Config outcomes \['TRANSPLANT'\] differ from the cohort's"):
        TrajectoryModel(**SMALL, outcomes=("TRANSPLANT",)).fit(cohort)


@pytest.mark.slow
def test_pbc2_fit_ranks_held_out_deaths_better_than_chance() -> None:
    from sksurv.metrics import concordance_index_censored

    from migpt_traj.datasets import load_pbc2

    cohort = load_pbc2()
    settings = {**SMALL, "d_model": 32, "max_epochs": 10, "batch_size": 32, "n_bins": 8, "lr": 3e-3}
    model = TrajectoryModel(**settings).fit(cohort)
    risk = model.predict_risk(cohort, landmarks=[0.0], horizons=[1826.25], split="held_out")
    labels = cohort.labels(landmarks=[0.0], split="held_out")
    j = labels.join(risk.filter(pl.col("event") == "MEDS_DEATH"), on=["subject_id", "prediction_time"])
    assert j.height == labels.height > 30
    c_index = concordance_index_censored(
        (j["event"] == "MEDS_DEATH").fill_null(False).to_numpy(), j["duration_days"].to_numpy(), j["risk"].to_numpy()
    )[0]
    # Measured 0.744 (baseline bilirubin alone: 0.703) on the 47 held-out subjects of split seed 0.
    assert c_index > 0.6, f"held-out Harrell's C {c_index:.3f}"


def test_fit_reports_tensorizing_progress_and_is_quiet_when_asked(
    cohort: Cohort, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGPT_TRAJ_PROGRESS", "1")  # force bars although stderr is not a terminal
    TrajectoryModel(max_epochs=1, d_model=16, n_layers=1, n_heads=2, use_notes=False).fit(cohort)
    assert "tensorizing" in capsys.readouterr().err
    TrajectoryModel(max_epochs=1, d_model=16, n_layers=1, n_heads=2, use_notes=False, progress=False).fit(cohort)
    assert "tensorizing" not in capsys.readouterr().err
