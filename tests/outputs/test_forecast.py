"""Forecasts: beat last value carried forward, calibrated intervals, as-of, original units, persistence, baselines."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy.special import ndtri

import migpt_traj as mt
from migpt_traj.config import TrajectoryConfig
from migpt_traj.data.cohort import Cohort
from migpt_traj.data.preprocess import Preprocessor
from migpt_traj.errors import ConfigError, ModelStateError, ValueRangeError
from migpt_traj.outputs.forecast import (
    _to_units,
    forecast_at,
    future_observations,
    last_value_forecast,
    linear_trend_forecast,
)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
LABS = ("LAB//albumin", "LAB//bilirubin", "LAB//platelets", "LAB//sodium")
KEYS = ["subject_id", "prediction_time", "code", "dim", "target_days"]


@pytest.fixture(scope="module")
def fitted() -> mt.TrajectoryModel:
    train = mt.datasets.make_synthetic(250, seed=0)
    model = mt.TrajectoryModel(
        max_epochs=1, d_model=16, n_layers=1, n_heads=2, use_notes=False, seed=0, progress=False, batch_size=64
    )
    return model.fit(train)


@pytest.fixture(scope="module")
def test_cohort() -> mt.datasets.SyntheticCohort:
    return mt.datasets.make_synthetic(150, seed=11)  # independent subjects (another seed)


@pytest.fixture(scope="module")
def scored(fitted: mt.TrajectoryModel, test_cohort: Cohort) -> pl.DataFrame:
    samples = test_cohort.labels(landmarks=[365.25, 1095.75]).select("subject_id", "prediction_time")
    obs = future_observations(test_cohort, samples, horizon_days=1095.75)
    fc = forecast_at(fitted, test_cohort, obs)
    lv = last_value_forecast(test_cohort, obs).select(*KEYS, pl.col("prediction").alias("lvcf"))
    return fc.join(lv, on=KEYS, nulls_equal=True).filter(pl.col("lvcf").is_not_null())


def test_beats_last_value_carried_forward(scored: pl.DataFrame) -> None:
    err = (
        scored.with_columns(pl.when(pl.col("dim").is_null()).then("code").otherwise(pl.lit("IMAGE")).alias("group"))
        .group_by("group")
        .agg(
            (pl.col("median") - pl.col("value")).abs().mean().alias("model"),
            (pl.col("lvcf") - pl.col("value")).abs().mean().alias("lvcf"),
        )
        .sort("group")
    )
    assert set(err["group"]) == {*LABS, "IMAGE"}
    for row in err.iter_rows(named=True):
        assert row["model"] < 0.97 * row["lvcf"], row


def test_closer_to_the_true_future_than_lvcf(
    fitted: mt.TrajectoryModel, test_cohort: mt.datasets.SyntheticCohort
) -> None:
    f = fitted.forecast(test_cohort, landmarks=[365.25], at=[365.25], codes=["LAB//albumin"])
    truth = test_cohort.truth.future_values(f["subject_id"], f["prediction_time"], [365.25], code="LAB//albumin")
    lv = last_value_forecast(test_cohort, f.select(KEYS))["prediction"].to_numpy()
    has = ~np.isnan(lv.astype(float))
    model_err = np.abs(f["mean"].to_numpy() - truth["value"].to_numpy())[has].mean()
    lvcf_err = np.abs(lv[has] - truth["value"].to_numpy()[has]).mean()
    assert model_err < 0.7 * lvcf_err


def test_interval_coverage(scored: pl.DataFrame) -> None:
    inside = (pl.col("value") >= pl.col("lower")) & (pl.col("value") <= pl.col("upper"))
    by_kind = scored.with_columns(inside.alias("in")).group_by(pl.col("dim").is_null().alias("lab"))
    cov = by_kind.agg(pl.col("in").mean())
    for value in cov["in"]:
        assert 0.72 <= value <= 0.88, cov


def test_level_sets_the_interval(fitted: mt.TrajectoryModel, test_cohort: Cohort) -> None:
    wide = fitted.forecast(test_cohort, landmarks=[365.25], at=[180.0], codes=["LAB//albumin"], level=0.95)
    narrow = fitted.forecast(test_cohort, landmarks=[365.25], at=[180.0], codes=["LAB//albumin"], level=0.5)
    assert (wide["upper"] - wide["lower"] > narrow["upper"] - narrow["lower"]).all()
    assert_frame_equal(wide.select("median"), narrow.select("median"))
    assert ((narrow["lower"] <= narrow["median"]) & (narrow["median"] <= narrow["upper"])).all()


def test_columns_units_and_one_subject(fitted: mt.TrajectoryModel, test_cohort: Cohort) -> None:
    sid = int(test_cohort.subjects["subject_id"][0])
    tz = test_cohort.subjects["time_zero"][0]
    times = pl.DataFrame({"subject_id": [sid], "prediction_time": [tz + dt.timedelta(days=400)]})
    f = fitted.forecast(test_cohort, prediction_times=times, at=[30.0, 365.25])
    assert f.columns == [
        "subject_id",
        "prediction_time",
        "landmark_days",
        "code",
        "dim",
        "target_days",
        "mean",
        "median",
        "lower",
        "upper",
    ]
    assert f.height == 2 * (len(LABS) + 16) and set(f["subject_id"]) == {sid}
    plt = f.filter(pl.col("code") == "LAB//platelets")
    assert plt["median"].min() > 50 and plt["median"].max() < 1000  # platelets, not normal scores
    img = f.filter(pl.col("dim").is_not_null())
    assert set(img["code"]) == {"IMAGE//ct"} and sorted(set(img["dim"])) == list(range(16))


def test_as_of_future_events_do_not_change_the_forecast(fitted: mt.TrajectoryModel, test_cohort: Cohort) -> None:
    landmark = 365.25
    samples = test_cohort.labels(landmarks=[landmark]).select("subject_id", "prediction_time")
    before = fitted.forecast(test_cohort, prediction_times=samples, at=[90.0, 730.5])
    ev = test_cohort.events.join(test_cohort.subjects.select("subject_id", "time_zero"), on="subject_id", how="left")
    cut = pl.col("time_zero") + pl.duration(days=landmark)
    avail = pl.coalesce("available_time", "time")
    later = pl.col("time").is_not_null() & (avail > cut)
    changed = (
        ev.filter(~(later & pl.col("code").str.starts_with("IMAGE//")))  # drop every study read after t
        .with_columns(
            pl.when(later & pl.col("code").str.starts_with("LAB//"))
            .then(pl.col("numeric_value") * 3 + 1)
            .otherwise(pl.col("numeric_value"))
            .alias("numeric_value")
        )
        .drop("time_zero")
    )
    other = Cohort.from_events(changed, outcomes=test_cohort.outcomes, splits=test_cohort.splits)
    after = fitted.forecast(other, prediction_times=samples, at=[90.0, 730.5])
    assert_frame_equal(before, after)
    # The perturbation reaches forecasts made after it.
    later_samples = samples.with_columns(pl.col("prediction_time") + pl.duration(days=400))
    moved = fitted.forecast(other, prediction_times=later_samples, at=[90.0], codes=["LAB//albumin"])
    base = fitted.forecast(test_cohort, prediction_times=later_samples, at=[90.0], codes=["LAB//albumin"])
    assert not np.allclose(moved["mean"].to_numpy(), base["mean"].to_numpy())


def test_inverse_transform_round_trip() -> None:
    rng = np.random.default_rng(0)
    train = rng.lognormal(0.0, 0.7, 2000)
    pre = Preprocessor(codes=["<pad>", "<unk>", "<start>", "LAB//x"], quantiles={"LAB//x": []})
    pre.quantiles["LAB//x"] = np.quantile(train, np.linspace(0, 1, 101)).tolist()
    grid = np.asarray(pre.quantiles["LAB//x"])
    values = rng.uniform(grid[1], grid[-2], 500)  # inside the unclipped range
    codes = np.full(values.size, "LAB//x", dtype=object)
    back = pre.denormalise_values(codes, pre.normalise_values(codes, values).astype(np.float64))
    np.testing.assert_allclose(back, values, rtol=1e-4)
    # Tied (binary) codes come back exactly; unknown codes give NaN.
    pre.quantiles["SIGN//y"] = [0.0] * 60 + [1.0] * 41
    flags = np.array([0.0, 1.0, 1.0, 0.0])
    fcodes = np.full(4, "SIGN//y", dtype=object)
    np.testing.assert_array_equal(pre.denormalise_values(fcodes, pre.normalise_values(fcodes, flags)), flags)
    assert np.isnan(pre.denormalise_values(np.array(["LAB//none"], dtype=object), np.array([0.3]))).all()


def test_mean_and_interval_against_monte_carlo(fitted: mt.TrajectoryModel) -> None:
    rows = pl.DataFrame({"code": ["LAB//bilirubin"] * 2, "dim": pl.Series([None, None], dtype=pl.Int64)})
    mu, sigma = np.array([0.4, -1.0]), np.array([0.6, 0.3])
    out = _to_units(fitted, rows, mu, sigma, 0.8)
    assert fitted.preprocessor is not None
    z = np.random.default_rng(0).standard_normal((200_000, 1))
    draws = fitted.preprocessor.denormalise_values(
        np.full(z.size * 2, "LAB//bilirubin", dtype=object), (mu + sigma * z).reshape(-1)
    ).reshape(-1, 2)
    np.testing.assert_allclose(out["mean"].to_numpy(), draws.mean(0), rtol=5e-3)
    np.testing.assert_allclose(out["lower"].to_numpy(), np.quantile(draws, 0.1, axis=0), rtol=1e-2)
    np.testing.assert_allclose(out["upper"].to_numpy(), np.quantile(draws, 0.9, axis=0), rtol=1e-2)
    assert float(ndtri(0.9)) == pytest.approx(1.2815515655)


def test_save_load_keeps_forecasts(fitted: mt.TrajectoryModel, test_cohort: Cohort, tmp_path: object) -> None:
    path = fitted.save(tmp_path / "m")  # type: ignore[operator]
    again = mt.TrajectoryModel.load(path)
    a = fitted.forecast(test_cohort, landmarks=[365.25], at=[180.0, 365.25])
    b = again.forecast(test_cohort, landmarks=[365.25], at=[180.0, 365.25])
    assert_frame_equal(a, b)


def test_errors(fitted: mt.TrajectoryModel, test_cohort: Cohort) -> None:
    with pytest.raises(ValueRangeError, match="finite days >= 0"):
        fitted.forecast(test_cohort, landmarks=[365.25], at=[-1.0])
    with pytest.raises(ConfigError, match="not the string"):
        fitted.forecast(test_cohort, landmarks=[365.25], at="1y")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Cannot forecast code 'LAB//albumn'.*Did you mean"):
        fitted.forecast(test_cohort, landmarks=[365.25], at=[30.0], codes=["LAB//albumn"])
    with pytest.raises(ValueRangeError, match=r"'level' must be in \(0, 1\)"):
        fitted.forecast(test_cohort, landmarks=[365.25], at=[30.0], level=80)
    with pytest.raises(ModelStateError, match="not fitted"):
        mt.TrajectoryModel().forecast(test_cohort, landmarks=[365.25], at=[30.0])
    with pytest.raises(ConfigError, match=r"'forecast_weight' = -1\.0 is invalid"):
        TrajectoryConfig(forecast_weight=-1.0)


def _tiny() -> Cohort:
    t0 = dt.datetime(2010, 1, 1)
    rows = [
        (1, 0, "LAB//x", 1.0),
        (1, 100, "LAB//x", 2.0),
        (1, 200, "LAB//x", 4.0),
        (1, 400, "LAB//x", 9.0),  # after the prediction time (300): never used
        (2, 0, "LAB//x", 5.0),
        (1, 500, "END_OF_FOLLOWUP", None),
        (2, 450, "END_OF_FOLLOWUP", None),
        (2, 450, "MEDS_DEATH", None),
    ]
    ev = pl.DataFrame(
        {
            "subject_id": [r[0] for r in rows],
            "time": [t0 + dt.timedelta(days=r[1]) for r in rows],
            "code": [r[2] for r in rows],
            "numeric_value": pl.Series([r[3] for r in rows], dtype=pl.Float32),
            "text_value": pl.Series([None] * len(rows), dtype=pl.String),
        }
    )
    return Cohort.from_events(ev.sort("subject_id", "time"), splits={1: "train", 2: "train"})


def test_baselines_against_hand_computed_values() -> None:
    cohort = _tiny()
    t = dt.datetime(2010, 1, 1) + dt.timedelta(days=300)
    targets = pl.DataFrame(
        {
            "subject_id": [1, 2],
            "prediction_time": [t, t],
            "code": ["LAB//x", "LAB//x"],
            "dim": pl.Series([None, None], dtype=pl.Int64),
            "target_days": [100.0, 100.0],
        }
    )
    lv = last_value_forecast(cohort, targets)["prediction"].to_list()
    assert lv == [4.0, 5.0]
    slope, intercept = np.polyfit([-300.0, -200.0, -100.0], [1.0, 2.0, 4.0], 1)
    tr = linear_trend_forecast(cohort, targets)["prediction"].to_list()
    assert tr[0] == pytest.approx(intercept + slope * 100.0)
    assert tr[1] == 5.0  # one point: the last value
    obs = future_observations(cohort, targets.select("subject_id", "prediction_time"), horizon_days=365.0)
    assert obs.select("subject_id", "target_days", "value").rows() == [(1, 100.0, 9.0)]
