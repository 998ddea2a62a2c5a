"""Tests of migpt_traj.evaluation.baselines: NullModel, LandmarkCox, LandmarkCoxTV, LandmarkRSF and their features.

References: our Aalen–Johansen and scikit-survival's ``cumulative_incidence_competing_risks`` (NullModel), lifelines'
``CoxPHFitter`` fitted directly on the same design (coefficients, survival), scikit-survival's forest fitted
directly (RSF), lifelines' ``CoxTimeVaryingFitter`` fitted directly on the same long frame (LandmarkCoxTV),
``LandmarkCox`` at landmark 0 when the covariates never change, a closed-form competing-exponential cumulative
incidence, and hand-computed features.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError, ModelStateError, OutcomeError
from migpt_traj.evaluation import aalen_johansen, cumulative_dynamic_auc
from migpt_traj.evaluation.baselines import (
    FeatureVocabulary,
    LandmarkCox,
    LandmarkCoxTV,
    LandmarkRSF,
    NullModel,
    _CauseHazard,
    _competing_cif,
    _tv_breslow,
    raw_features,
)

lifelines = pytest.importorskip("lifelines")
pd = pytest.importorskip("pandas")

LANDMARKS = (100.0, 300.0)
HORIZONS = (90.0, 200.0, 400.0, 700.0)
RISK_COLUMNS = ["subject_id", "prediction_time", "landmark_days", "event", "horizon_days", "risk"]


@pytest.fixture(scope="module")
def cohort(tiny) -> Cohort:
    return tiny.cohort(150, seed=3)


@pytest.fixture(scope="module")
def single(tiny) -> Cohort:
    """Death as the only outcome (transplants are plain events that end follow-up: censored)."""
    return Cohort.from_events(tiny.events(150, seed=4), outcomes=["MEDS_DEATH"], splits=tiny.splits(150))


@pytest.fixture(scope="module")
def cox(cohort: Cohort) -> LandmarkCox:
    return LandmarkCox(landmarks=LANDMARKS).fit(cohort)


def _codes(labels: pl.DataFrame, outcomes: tuple[str, ...]) -> np.ndarray:
    return np.array([0 if e is None else outcomes.index(e) + 1 for e in labels["event"].to_list()])


def _risk(frame: pl.DataFrame, *, landmark: float, event: str, horizon: float) -> pl.DataFrame:
    return frame.filter(
        (pl.col("landmark_days") == landmark) & (pl.col("event") == event) & (pl.col("horizon_days") == horizon)
    )


# ------------------------------------------------------------------ NullModel


def test_null_model_equals_aalen_johansen_of_train_labels(cohort: Cohort) -> None:
    sksurv_np = pytest.importorskip("sksurv.nonparametric")
    pred = (
        NullModel(landmarks=LANDMARKS)
        .fit(cohort)
        .predict_risk(cohort, landmarks=LANDMARKS, horizons=HORIZONS, split="held_out")
    )
    assert pred.columns == RISK_COLUMNS
    for s in LANDMARKS:
        train = cohort.labels(landmarks=[s], split="train")
        t, e = train["duration_days"].to_numpy(), _codes(train, cohort.outcomes)
        held = cohort.labels(landmarks=[s], split="held_out")
        times, cif = sksurv_np.cumulative_incidence_competing_risks(e, t)
        for k, outcome in enumerate(cohort.outcomes, start=1):
            expected = aalen_johansen(t, e, cause=k, times=HORIZONS)
            reference = cif[k][np.searchsorted(times, HORIZONS, side="right") - 1]
            np.testing.assert_allclose(expected, reference, atol=1e-12)
            for h, value in zip(HORIZONS, expected, strict=True):
                got = _risk(pred, landmark=s, event=outcome, horizon=h)
                assert got.height == held.height  # every held-out subject at risk, same risk for all
                np.testing.assert_allclose(got["risk"].to_numpy(), value, atol=1e-12)


# ------------------------------------------------------------------ LandmarkCox against lifelines


def test_cox_equals_lifelines_on_the_same_design(single: Cohort) -> None:
    s = 200.0
    model = LandmarkCox(landmarks=[s], penalizer=0.05).fit(single)
    design = model.design(single, landmark=s, split="train")
    labels = single.labels(landmarks=[s], split="train")
    assert design.select("subject_id", "prediction_time").equals(labels.select("subject_id", "prediction_time"))
    features = design.drop("subject_id", "prediction_time")
    frame = features.to_pandas().assign(T=labels["duration_days"].to_numpy(), E=labels["event"].is_not_null())
    cph = lifelines.CoxPHFitter(penalizer=0.05).fit(frame, duration_col="T", event_col="E")
    coefs = model.coefficients(s)
    assert coefs["feature"].to_list() == features.columns
    np.testing.assert_allclose(coefs["coef"].to_numpy(), cph.params_.to_numpy(), atol=1e-6)

    held = model.design(single, landmark=s, split="held_out")
    grid = cph.timeline[(cph.timeline > 0) & (cph.timeline < 1000)][::7]  # lifelines is exact on its own timeline
    expected = cph.predict_survival_function(held.drop("subject_id", "prediction_time").to_pandas(), times=grid)
    pred = model.predict_risk(single, landmarks=[s], horizons=grid.tolist(), split="held_out")
    got = pred.sort("subject_id", "horizon_days")["risk"].to_numpy().reshape(held.height, grid.size)
    np.testing.assert_allclose(got, 1.0 - expected.to_numpy().T, atol=1e-6)
    surv = model.predict_survival(single, landmarks=[s], times=grid.tolist(), split="held_out")
    np.testing.assert_allclose(surv["survival"].to_numpy().reshape(held.height, grid.size), 1.0 - got, atol=1e-12)


def test_competing_cif_equals_closed_form_for_constant_hazards() -> None:
    """Two causes with constant hazards (jumps on a fine common grid): CIF_1 = l1/(l1+l2) (1 - exp(-(l1+l2) h))."""
    grid = np.arange(1.0, 1001.0)
    l1, l2 = 1 / 300, 1 / 700
    x = np.array([[0.0], [np.log(2.0)]])  # the second subject has twice the cause-1 hazard
    hazards = [
        _CauseHazard(np.array([1.0]), grid, np.full(grid.size, l1)),
        _CauseHazard(np.array([0.0]), grid, np.full(grid.size, l2)),
    ]
    horizons = np.array([0.5, 10.0, 365.0, 1000.0, 5000.0])
    cif, surv = _competing_cif(hazards, x, horizons)
    n_jumps = np.minimum(np.floor(horizons), 1000.0)
    for i, a in enumerate((l1, 2 * l1)):
        total = a + l2
        np.testing.assert_allclose(cif[i, 0], a / total * (1 - np.exp(-total * n_jumps)), rtol=1e-12)
        np.testing.assert_allclose(cif[i, 1], l2 / total * (1 - np.exp(-total * n_jumps)), rtol=1e-12)
        np.testing.assert_allclose(surv[i], np.exp(-total * n_jumps), rtol=1e-12)
    assert cif[0, 0, 0] == 0.0 and surv[0, 0] == 1.0  # before the first jump


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 6))
@example(seed=4038997, n_causes=2, n_features=1)  # no cause has events: zero incidence, survival 1
def test_competing_cif_sums_with_survival_to_one_and_is_monotone(seed: int, n_causes: int, n_features: int) -> None:
    rng = np.random.default_rng(seed)
    hazards = [
        _CauseHazard(
            rng.normal(size=n_features),
            np.sort(rng.choice(2000, 30, replace=False)).astype(np.float64) + 0.5,
            rng.gamma(1, 0.05, 30),
        )
        if rng.random() > 0.2
        else None
        for _ in range(n_causes)
    ]
    x = rng.normal(size=(20, n_features)) * 2
    horizons = np.sort(rng.uniform(0, 2500, 12))
    cif, surv = _competing_cif(hazards, x, horizons)
    assert np.all(cif >= 0) and np.all(np.diff(cif, axis=2) >= -1e-15) and np.all(np.diff(surv, axis=1) <= 1e-15)
    np.testing.assert_allclose(cif.sum(axis=1) + surv, 1.0, atol=1e-12)
    for k, hz in enumerate(hazards):
        if hz is None:
            assert not cif[:, k].any()


def test_cox_risk_frame_sums_and_monotone(cohort: Cohort, cox: LandmarkCox) -> None:
    pred = cox.predict_risk(cohort, landmarks=LANDMARKS, horizons=HORIZONS, split="held_out")
    surv = cox.predict_survival(cohort, landmarks=LANDMARKS, times=HORIZONS, split="held_out")
    assert pred.columns == RISK_COLUMNS and pred["risk"].is_between(0, 1).all()
    assert pred.group_by("subject_id", "landmark_days", "event").agg(pl.col("risk").diff().min() >= 0)["risk"].all()
    total = pred.group_by("subject_id", "landmark_days", "horizon_days").agg(pl.col("risk").sum())
    joined = total.join(
        surv.rename({"time_days": "horizon_days"}), on=["subject_id", "landmark_days", "horizon_days"], validate="1:1"
    )
    assert joined.height == total.height == surv.height
    assert (joined["risk"] + joined["survival"]).max() <= 1 + 1e-12  # type: ignore[operator]
    np.testing.assert_allclose((joined["risk"] + joined["survival"]).to_numpy(), 1.0, atol=1e-12)
    held = [cohort.labels(landmarks=[s], split="held_out").height for s in LANDMARKS]
    assert pred.height == sum(held) * len(cohort.outcomes) * len(HORIZONS)


# ------------------------------------------------------------------ as-of features and train-only statistics


def test_raw_features_by_hand(tiny) -> None:
    at, lag = tiny.at, dt.timedelta(days=30)
    rows = [
        {"subject_id": 1, "code": "SEX//female"},
        {"subject_id": 1, "time": at(-365.25 * 50), "code": "MEDS_BIRTH"},
        {"subject_id": 1, "time": at(0), "code": "TREATMENT//drug"},
        {"subject_id": 1, "time": at(0), "code": "LAB//a", "numeric_value": 1.0},
        {"subject_id": 1, "time": at(40), "code": "LAB//a", "numeric_value": 2.0},
        {"subject_id": 1, "time": at(80), "code": "LAB//a", "numeric_value": 9.0, "available_time": at(80) + lag},
        {"subject_id": 1, "time": at(90), "code": "LAB//b", "numeric_value": 7.0},
        {"subject_id": 1, "time": at(150), "code": "LAB//a", "numeric_value": 5.0},
        {"subject_id": 1, "time": at(160), "code": "TREATMENT//other"},
        {"subject_id": 1, "time": at(400), "code": "MEDS_DEATH"},
        {"subject_id": 2, "time": at(10), "code": "LAB//a", "numeric_value": 3.0},
        {"subject_id": 2, "time": at(300), "code": "TREATMENT//other"},
        {"subject_id": 2, "time": at(500), "code": "END_OF_FOLLOWUP"},
    ]
    c = Cohort.from_events(tiny.event_frame(rows), splits={1: "train", 2: "train"})
    vocab = FeatureVocabulary.from_train(c)
    assert (vocab.numeric, vocab.static, vocab.treatment) == (
        ("LAB//a", "LAB//b"),
        ("SEX//female",),
        ("TREATMENT//drug", "TREATMENT//other"),
    )
    samples = pl.DataFrame({"subject_id": [2, 1, 1], "prediction_time": [at(100), at(100), at(115)]})
    raw = raw_features(c, samples, vocab)
    # subject 1 at day 100: LAB//a at day 80 is only available at day 110, so the day-40 value; at day 115 it is
    expected: dict[str, list[float | None]] = {
        "subject_id": [2, 1, 1],
        "LAB//a": [3.0, 2.0, 9.0],
        "LAB//b": [None, 7.0, 7.0],
        "age_years": [None, 50 + 100 / 365.25, 50 + 115 / 365.25],
        "days_since_last_measurement": [90.0, 10.0, 25.0],
        "SEX//female": [0.0, 1.0, 1.0],
        "TREATMENT//drug": [0.0, 1.0, 1.0],
        "TREATMENT//other": [0.0, 0.0, 0.0],
    }
    assert raw.columns == ["subject_id", "prediction_time", *list(expected)[1:]]
    assert raw["prediction_time"].to_list() == samples["prediction_time"].to_list()
    got = raw.to_dict(as_series=False)
    for key, values in expected.items():
        assert [v is None for v in got[key]] == [v is None for v in values], key
        assert [v for v in got[key] if v is not None] == pytest.approx([v for v in values if v is not None]), key


def _sorted(events: pl.DataFrame) -> pl.DataFrame:
    return events.sort("subject_id", "time", maintain_order=True)  # static rows (null time) first


def _perturbed_after(cohort: Cohort, landmark: float, tiny) -> Cohort:
    """Values after the landmark scaled by 10, plus late-available extreme labs timed before it."""
    ev = cohort.events.join(cohort.subjects.select("subject_id", "time_zero"), on="subject_id")
    cut = pl.col("time_zero") + pl.duration(days=landmark)
    changed = ev.with_columns(
        numeric_value=pl.when(pl.col("time") > cut).then(pl.col("numeric_value") * 10).otherwise("numeric_value")
    ).drop("time_zero")
    at_risk = cohort.labels(landmarks=[landmark]).join(cohort.subjects, on="subject_id")
    late = at_risk.select(
        "subject_id",
        time=pl.col("prediction_time") - pl.duration(days=1),
        code=pl.lit("LAB//a"),
        numeric_value=pl.lit(1e6, dtype=pl.Float32),
        available_time=pl.col("prediction_time") + pl.duration(days=5),
    )
    return cohort.with_events(_sorted(pl.concat([changed, late], how="diagonal_relaxed")))


def test_features_and_fit_unchanged_by_events_after_the_landmark(cohort: Cohort, cox: LandmarkCox, tiny) -> None:
    s = LANDMARKS[0]
    other = _perturbed_after(cohort, s, tiny)
    assert not other.events.equals(cohort.events)
    refit = LandmarkCox(landmarks=[s]).fit(other)
    assert refit.specs[s] == cox.specs[s]
    assert refit.coefficients(s).equals(cox.coefficients(s))
    for split in ("train", "held_out"):
        assert refit.design(other, landmark=s, split=split).equals(cox.design(cohort, landmark=s, split=split))
    a = cox.predict_risk(cohort, landmarks=[s], horizons=HORIZONS, split="held_out")
    b = refit.predict_risk(other, landmarks=[s], horizons=HORIZONS, split="held_out")
    assert a.equals(b)


def test_nothing_from_tuning_or_held_out_reaches_the_fit(cohort: Cohort, cox: LandmarkCox, tiny) -> None:
    """Tuning/held-out values scaled by 1000, plus codes only they have: same statistics, same model."""
    others = cohort.splits.filter(pl.col("split") != "train")["subject_id"].implode()
    ev = cohort.events.with_columns(
        numeric_value=pl.when(pl.col("subject_id").is_in(others))
        .then(pl.col("numeric_value") * 1000)
        .otherwise("numeric_value")
    )
    first = cohort.subjects.filter(pl.col("split") == "held_out").row(0, named=True)
    extra = tiny.event_frame(
        [
            {"subject_id": first["subject_id"], "code": "SEX//other"},
            {"subject_id": first["subject_id"], "time": first["time_zero"], "code": "LAB//new", "numeric_value": 4.0},
        ]
    )
    changed = cohort.with_events(_sorted(pl.concat([ev, extra], how="diagonal_relaxed")))
    refit = LandmarkCox(landmarks=LANDMARKS).fit(changed)
    rsf_a = LandmarkRSF(landmarks=LANDMARKS[:1], n_estimators=20).fit(cohort)
    rsf_b = LandmarkRSF(landmarks=LANDMARKS[:1], n_estimators=20).fit(changed)
    for s in LANDMARKS:
        assert refit.specs[s] == cox.specs[s]
        assert refit.coefficients(s).equals(cox.coefficients(s))
    assert rsf_a.specs == rsf_b.specs
    train_a = rsf_a.predict_risk(cohort, landmarks=LANDMARKS[:1], horizons=HORIZONS, split="train")
    assert train_a.equals(rsf_b.predict_risk(changed, landmarks=LANDMARKS[:1], horizons=HORIZONS, split="train"))
    # the fit really reads the train values: scaling them changes the statistics
    train_ids = cohort.splits.filter(pl.col("split") == "train")["subject_id"].implode()
    scaled = cohort.with_events(
        cohort.events.with_columns(
            numeric_value=pl.when(pl.col("subject_id").is_in(train_ids) & (pl.col("code") == "LAB//a"))
            .then(pl.col("numeric_value") * 3)
            .otherwise("numeric_value")
        )
    )
    assert LandmarkCox(landmarks=LANDMARKS[:1]).fit(scaled).specs[LANDMARKS[0]] != cox.specs[LANDMARKS[0]]


# ------------------------------------------------------------------ LandmarkRSF


def test_rsf_equals_a_forest_fitted_directly(cohort: Cohort) -> None:
    ensemble = pytest.importorskip("sksurv.ensemble")
    util = pytest.importorskip("sksurv.util")
    s = LANDMARKS[0]
    model = LandmarkRSF(landmarks=[s], n_estimators=30, min_samples_leaf=5, random_state=1).fit(cohort)
    train = model.design(cohort, landmark=s, split="train")
    labels = cohort.labels(landmarks=[s], split="train")
    y = util.Surv.from_arrays(_codes(labels, cohort.outcomes) == 1, labels["duration_days"].to_numpy())
    forest = ensemble.RandomSurvivalForest(
        n_estimators=30, min_samples_leaf=5, max_features="sqrt", random_state=1, n_jobs=1
    ).fit(train.drop("subject_id", "prediction_time").to_numpy(), y)
    held = model.design(cohort, landmark=s, split="held_out").drop("subject_id", "prediction_time").to_numpy()
    surv = forest.predict_survival_function(held, return_array=True)
    idx = np.searchsorted(forest.unique_times_, HORIZONS, side="right") - 1
    pred = model.predict_risk(cohort, landmarks=[s], horizons=HORIZONS, split="held_out")
    assert pred.columns == RISK_COLUMNS and set(pred["event"]) == {cohort.primary_outcome}
    got = pred["risk"].to_numpy().reshape(held.shape[0], len(HORIZONS))
    np.testing.assert_allclose(got, 1.0 - surv[:, idx], atol=1e-12)


def test_sksurv_is_imported_only_inside_functions() -> None:
    """scikit-survival is GPL: no module-level import of it (nor of lifelines) in the baselines module."""
    import migpt_traj.evaluation.baselines as module

    tree = ast.parse(Path(module.__file__ or "").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert "numpy" in names and not any(m.split(".")[0] in {"sksurv", "lifelines"} for m in names)
    nested = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} - names
    assert {"sksurv.ensemble", "lifelines"} <= nested


# ------------------------------------------------------------------ failure paths


def test_failure_paths(cohort: Cohort, cox: LandmarkCox) -> None:
    with pytest.raises(ModelStateError, match="not fitted"):
        LandmarkCox(landmarks=[100]).predict_risk(cohort, landmarks=[100], horizons=[30])
    with pytest.raises(ModelStateError, match=r"fitted at landmarks \[100.0, 300.0\] days, not at 200"):
        cox.predict_risk(cohort, landmarks=[200], horizons=[30])
    with pytest.raises(ConfigError, match="'horizons' must be a non-empty list of finite days >= 0"):
        cox.predict_risk(cohort, landmarks=[100], horizons=[-1.0])
    with pytest.raises(ConfigError, match="'landmarks' must be a sequence of days; got the string"):
        NullModel(landmarks="1y")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'landmarks' must be a non-empty list"):
        NullModel(landmarks=[float("nan")])
    with pytest.raises(ConfigError, match="penalizer >= 0 and l1_ratio in"):
        LandmarkCox(penalizer=-1.0)
    with pytest.raises(ConfigError, match="n_estimators >= 1"):
        LandmarkRSF(n_estimators=0)
    with pytest.raises(ConfigError, match="no train subject is at risk at landmark 100000 days"):
        NullModel(landmarks=[100, 100_000]).fit(cohort)
    with pytest.raises(OutcomeError, match=r"fitted for outcomes \['MEDS_DEATH', 'TRANSPLANT'\]; the cohort has"):
        cox.predict_risk(Cohort.from_events(cohort.events, splits=cohort.splits), landmarks=[100], horizons=[30])
    with pytest.raises(ModelStateError, match="uses no features"):
        NullModel(landmarks=[100]).fit(cohort).design(cohort, landmark=100)


# ------------------------------------------------------------------ PBC2


@pytest.mark.parametrize("model", [LandmarkCox, LandmarkCoxTV], ids=["landmark_cox", "cox_tv"])
def test_pbc2_cox_models_discriminate(model: type[LandmarkCox] | type[LandmarkCoxTV]) -> None:
    """Death by 3 years from the 1-year landmark on PBC2's held-out split (speed lives in benchmarks/)."""
    from migpt_traj.datasets import load_pbc2

    pbc = load_pbc2(split_seed=0)
    s, h = 365.25, 1095.75
    pred = model(landmarks=[s]).fit(pbc).predict_risk(pbc, landmarks=[s], horizons=[h], split="held_out")
    held, train = (pbc.labels(landmarks=[s], split=sp) for sp in ("held_out", "train"))
    risk = held.select("subject_id").join(_risk(pred, landmark=s, event="MEDS_DEATH", horizon=h), on="subject_id")
    auc = cumulative_dynamic_auc(
        held["duration_days"].to_numpy(),
        _codes(held, pbc.outcomes),
        risk["risk"].to_numpy(),
        h,
        train_time=train["duration_days"].to_numpy(),
        train_event=_codes(train, pbc.outcomes),
    )
    assert auc > 0.75


# ------------------------------------------------------------------ LandmarkCoxTV


@pytest.fixture(scope="module")
def cox_tv(cohort: Cohort) -> LandmarkCoxTV:
    return LandmarkCoxTV(landmarks=LANDMARKS).fit(cohort)


def _frozen_at_entry(cohort: Cohort) -> Cohort:
    """Feature events only at or before time zero: one interval per subject, the covariates never change."""
    ev = cohort.events.join(cohort.subjects.select("subject_id", "time_zero"), on="subject_id")
    feature = pl.col("code").str.starts_with("LAB//") | pl.col("code").str.starts_with("SIGN//")
    feature = feature | pl.col("code").str.starts_with("TREATMENT//")
    return cohort.with_events(_sorted(ev.filter(~(feature & (pl.col("time") > pl.col("time_zero")))).drop("time_zero")))


def test_cox_tv_long_frame_covers_follow_up_from_time_zero(cohort: Cohort, cox_tv: LandmarkCoxTV) -> None:
    iv = cox_tv.intervals(cohort)
    labels = cohort.labels(landmarks=[0.0], split="train")
    assert iv["subject_id"].unique().sort().equals(labels["subject_id"].unique().sort())
    assert iv.height > 3 * labels.height  # visits split follow-up: the covariates really vary
    assert (iv["start_days"] < iv["stop_days"]).all()
    per = iv.group_by("subject_id", maintain_order=True).agg(
        first=pl.col("start_days").first(),
        last=pl.col("stop_days").last(),
        gaps=(pl.col("start_days").shift(-1) - pl.col("stop_days")).abs().max(),
        events=pl.col("event").is_not_null().sum(),
        event=pl.col("event").last(),
    )
    joined = per.join(labels, on="subject_id", validate="1:1")
    assert (joined["first"] == 0).all() and (joined["gaps"].fill_null(0) < 1e-9).all()
    np.testing.assert_allclose(joined["last"].to_numpy(), joined["duration_days"].to_numpy(), atol=1e-9)
    assert (joined["events"] <= 1).all() and joined["event"].equals(joined["event_right"], null_equal=True)
    # the design of an interval is the as-of design at its start (LandmarkCox's features, LOCF)
    row = iv.filter(pl.col("start_days") > 0).row(5, named=True)
    samples = pl.DataFrame({"subject_id": [row["subject_id"]], "prediction_time": [row["prediction_time"]]})
    spec = cox_tv.specs[0.0]
    expected = spec.design(raw_features(cohort, samples, spec.vocabulary)).row(0)
    assert tuple(row[c] for c in spec.columns) == pytest.approx(expected)


def test_cox_tv_equals_lifelines_on_the_same_long_frame(cohort: Cohort, cox_tv: LandmarkCoxTV) -> None:
    iv = cox_tv.intervals(cohort)
    columns = list(cox_tv.specs[0.0].columns)
    frame = iv.select("subject_id", "start_days", "stop_days", *columns).to_pandas()
    penalizer = 0.1 * iv["subject_id"].n_unique() / iv.height  # the documented per-subject scaling
    coefs = cox_tv.coefficients()
    for outcome in cohort.outcomes:
        ctv = lifelines.CoxTimeVaryingFitter(penalizer=penalizer).fit(
            frame.assign(E=(iv["event"] == outcome).fill_null(False).to_numpy()),
            id_col="subject_id",
            event_col="E",
            start_col="start_days",
            stop_col="stop_days",
        )
        got = coefs.filter(pl.col("event") == outcome)
        assert got["feature"].to_list() == columns
        np.testing.assert_allclose(got["coef"].to_numpy(), ctv.params_.to_numpy(), atol=1e-6)
        # our vectorised Breslow on the same rows equals lifelines' baseline (which is at the covariate mean)
        x = iv.select(columns).to_numpy()
        lp = (x - ctv._norm_mean.to_numpy()) @ ctv.params_.to_numpy()
        event = (iv["event"] == outcome).fill_null(False).to_numpy()
        times, jumps = _tv_breslow(iv["start_days"].to_numpy(), iv["stop_days"].to_numpy(), event, lp)
        reference = ctv.baseline_cumulative_hazard_
        np.testing.assert_allclose(times, reference.index.to_numpy(), atol=1e-12)
        np.testing.assert_allclose(np.cumsum(jumps), reference.iloc[:, 0].to_numpy(), rtol=1e-10)


def test_cox_tv_baseline_hazard_is_at_a_zero_linear_predictor(cohort: Cohort, cox_tv: LandmarkCoxTV) -> None:
    """lifelines' baseline is at the covariate mean; ours must be at ``x β = 0`` (visible on an uncentred design)."""
    iv = cox_tv.intervals(cohort)
    x = iv.select(cox_tv.specs[0.0].columns).to_numpy() + 2.0
    start, stop = iv["start_days"].to_numpy(), iv["stop_days"].to_numpy()
    event = (iv["event"] == "MEDS_DEATH").fill_null(False).to_numpy()
    hazard = cox_tv._fit_cause(x, (iv["subject_id"].to_numpy(), start, stop), event, 0.05)
    times, jumps = _tv_breslow(start, stop, event, x @ hazard.beta)
    np.testing.assert_allclose(hazard.times, times, atol=1e-12)
    np.testing.assert_allclose(hazard.jumps, jumps, rtol=1e-8)
    assert abs(float(hazard.beta.sum())) > 0.1  # a shift of 2 SD moves the baseline by exp(-2 Σβ)


def test_cox_tv_single_outcome_survival_equals_lifelines(single: Cohort) -> None:
    """One outcome: risk(s, s + h) = 1 - exp(-(H(s + h) - H(s)) · partial hazard of the design as of s)."""
    s, horizons = 150.0, np.array([30.0, 200.0, 500.0])
    model = LandmarkCoxTV(landmarks=[s], penalizer=0.05).fit(single)
    iv = model.intervals(single)
    columns = list(model.specs[0.0].columns)
    ctv = lifelines.CoxTimeVaryingFitter(penalizer=0.05 * iv["subject_id"].n_unique() / iv.height).fit(
        iv.select("subject_id", "start_days", "stop_days", *columns)
        .with_columns(E=pl.col("subject_id").is_in([]) | iv["event"].is_not_null())
        .to_pandas(),
        id_col="subject_id",
        event_col="E",
        start_col="start_days",
        stop_col="stop_days",
    )
    held = model.design(single, landmark=s, split="held_out")
    partial = ctv.predict_partial_hazard(held.select(columns).to_pandas()).to_numpy()
    base = ctv.baseline_cumulative_hazard_.iloc[:, 0]

    def cumulative(t: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(base.index.to_numpy(), t, side="right") - 1
        return np.where(idx < 0, 0.0, base.to_numpy()[np.maximum(idx, 0)])

    expected = 1 - np.exp(-(cumulative(s + horizons) - cumulative(np.array([s])))[None, :] * partial[:, None])
    pred = model.predict_risk(single, landmarks=[s], horizons=horizons.tolist(), split="held_out")
    got = pred.sort("subject_id", "horizon_days")["risk"].to_numpy().reshape(held.height, horizons.size)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert expected[:, -1].min() > 0.01  # the comparison is not all zeros


def test_cox_tv_with_constant_covariates_matches_landmark_cox_at_zero(cohort: Cohort) -> None:
    frozen = _frozen_at_entry(cohort)
    tv = LandmarkCoxTV(landmarks=[0.0]).fit(frozen)
    assert tv.intervals(frozen).height == frozen.labels(landmarks=[0.0], split="train").height  # one row each
    cox0 = LandmarkCox(landmarks=[0.0]).fit(frozen)
    assert tv.specs[0.0] == cox0.specs[0.0]
    a, b = tv.coefficients(), cox0.coefficients(0.0)
    assert a.select("event", "feature").equals(b.select("event", "feature")) and a.height > 4
    # same partial likelihood; the fitters stop at lifelines' default Newton tolerance (with precision 1e-12 they
    # agree to 1e-10), so "closely" is 1e-4 here
    np.testing.assert_allclose(a["coef"].to_numpy(), b["coef"].to_numpy(), atol=1e-4)
    pa = tv.predict_risk(frozen, landmarks=[0.0], horizons=HORIZONS, split="held_out")
    pb = cox0.predict_risk(frozen, landmarks=[0.0], horizons=HORIZONS, split="held_out")
    assert pa.drop("risk").equals(pb.drop("risk"))
    np.testing.assert_allclose(pa["risk"].to_numpy(), pb["risk"].to_numpy(), atol=1e-4)
    # with visits the fit differs (the check above is not vacuous)
    moving = LandmarkCoxTV(landmarks=[0.0]).fit(cohort).coefficients()
    assert not np.allclose(moving["coef"].to_numpy()[: a.height], a["coef"].to_numpy(), atol=1e-3)


def test_cox_tv_risk_frame_is_a_proper_cumulative_incidence(cohort: Cohort, cox_tv: LandmarkCoxTV) -> None:
    lms = [*LANDMARKS, 500.0]  # one fit predicts from any landmark
    pred = cox_tv.predict_risk(cohort, landmarks=lms, horizons=HORIZONS, split="held_out")
    surv = cox_tv.predict_survival(cohort, landmarks=lms, times=HORIZONS, split="held_out")
    assert pred.columns == RISK_COLUMNS and pred["risk"].is_between(0, 1).all()
    assert pred.group_by("subject_id", "landmark_days", "event").agg(pl.col("risk").diff().min() >= 0)["risk"].all()
    total = pred.group_by("subject_id", "landmark_days", "horizon_days").agg(pl.col("risk").sum())
    joined = total.join(
        surv.rename({"time_days": "horizon_days"}), on=["subject_id", "landmark_days", "horizon_days"], validate="1:1"
    )
    assert joined.height == total.height == surv.height
    np.testing.assert_allclose((joined["risk"] + joined["survival"]).to_numpy(), 1.0, atol=1e-12)
    held = [cohort.labels(landmarks=[s], split="held_out").height for s in lms]
    assert pred.height == sum(held) * len(cohort.outcomes) * len(HORIZONS)
    spread = pred.filter(pl.col("event") == "MEDS_DEATH")["risk"].to_numpy().std()
    assert spread > 0.01  # individual risks, not a constant


def test_cox_tv_predictions_at_s_ignore_events_after_s(cohort: Cohort, cox_tv: LandmarkCoxTV, tiny) -> None:
    s = LANDMARKS[0]
    other = _perturbed_after(cohort, s, tiny)
    for split in ("train", "held_out"):
        assert cox_tv.design(other, landmark=s, split=split).equals(cox_tv.design(cohort, landmark=s, split=split))
    a = cox_tv.predict_risk(cohort, landmarks=[s], horizons=HORIZONS, split="held_out")
    assert a.equals(cox_tv.predict_risk(other, landmarks=[s], horizons=HORIZONS, split="held_out"))
    later = LANDMARKS[1]  # the perturbation is seen by a later landmark
    b = cox_tv.predict_risk(cohort, landmarks=[later], horizons=HORIZONS, split="held_out")
    assert not b.equals(cox_tv.predict_risk(other, landmarks=[later], horizons=HORIZONS, split="held_out"))


def test_cox_tv_fits_on_train_subjects_only(cohort: Cohort, cox_tv: LandmarkCoxTV, tiny) -> None:
    others = cohort.splits.filter(pl.col("split") != "train")["subject_id"].implode()
    ev = cohort.events.with_columns(
        numeric_value=pl.when(pl.col("subject_id").is_in(others))
        .then(pl.col("numeric_value") * 1000)
        .otherwise("numeric_value")
    )
    first = cohort.subjects.filter(pl.col("split") == "held_out").row(0, named=True)
    extra = tiny.event_frame(
        [
            {"subject_id": first["subject_id"], "code": "SEX//other"},
            {"subject_id": first["subject_id"], "time": first["time_zero"], "code": "LAB//new", "numeric_value": 4.0},
        ]
    )
    changed = cohort.with_events(_sorted(pl.concat([ev, extra], how="diagonal_relaxed")))
    refit = LandmarkCoxTV(landmarks=LANDMARKS).fit(changed)
    assert refit.specs == cox_tv.specs
    assert refit.coefficients().equals(cox_tv.coefficients())
    train_ids = cohort.splits.filter(pl.col("split") == "train")["subject_id"].implode()
    scaled = cohort.with_events(
        cohort.events.with_columns(
            numeric_value=pl.when(pl.col("subject_id").is_in(train_ids) & (pl.col("code") == "LAB//a"))
            .then(pl.col("numeric_value") * 3)
            .otherwise("numeric_value")
        )
    )
    assert LandmarkCoxTV(landmarks=LANDMARKS).fit(scaled).specs != cox_tv.specs


def test_cox_tv_failure_paths(cohort: Cohort, cox_tv: LandmarkCoxTV) -> None:
    with pytest.raises(ModelStateError, match="LandmarkCoxTV is not fitted"):
        LandmarkCoxTV().predict_risk(cohort, landmarks=[100], horizons=[30])
    with pytest.raises(ModelStateError, match="not fitted"):
        LandmarkCoxTV().coefficients()
    with pytest.raises(ConfigError, match="LandmarkCoxTV needs penalizer >= 0"):
        LandmarkCoxTV(penalizer=-0.1)
    with pytest.raises(ConfigError, match="'landmarks' must be a non-empty list of finite days >= 0"):
        cox_tv.predict_risk(cohort, landmarks=[-5.0], horizons=[30])
    with pytest.raises(ConfigError, match="'times' must be a non-empty list"):
        cox_tv.predict_survival(cohort, landmarks=[100.0], times=[])
    with pytest.raises(OutcomeError, match=r"LandmarkCoxTV was fitted for outcomes \['MEDS_DEATH', 'TRANSPLANT'\]"):
        cox_tv.predict_risk(Cohort.from_events(cohort.events, splits=cohort.splits), landmarks=[100], horizons=[30])
    assert LandmarkCoxTV().specs == {}


def test_cox_tv_is_resolved_by_name_in_the_harness(cohort: Cohort, cox_tv: LandmarkCoxTV) -> None:
    from migpt_traj.evaluation.harness import evaluate, resolve_baselines

    resolved = resolve_baselines(["cox_tv"], landmarks=LANDMARKS)
    assert isinstance(resolved["cox_tv"], LandmarkCoxTV) and resolved["cox_tv"].landmarks == LANDMARKS
    rep = evaluate(cox_tv, cohort, landmarks=LANDMARKS, horizons=HORIZONS[:2], baselines=["cox_tv"], n_bootstrap=0)
    rows = rep.metrics.filter((pl.col("model") == "cox_tv") & (pl.col("status") == "ok"))
    assert rows.height > 0
    main = rep.metrics.filter(pl.col("model") != "cox_tv").select(pl.exclude("model"))
    assert rows.select(pl.exclude("model")).sort(pl.all()).equals(main.filter(pl.col("status") == "ok").sort(pl.all()))


def test_log_transformed_feature_below_the_train_minimum_gives_a_finite_design() -> None:
    """A held-out value <= 0 of a column logged on train (positive, skewed there) is clipped, not NaN."""
    from migpt_traj.evaluation._features import FeatureSpec, FeatureVocabulary

    rng = np.random.default_rng(0)
    train = pl.DataFrame(
        {
            "LAB//x": rng.lognormal(0.0, 1.5, 300),
            "age_years": rng.normal(60, 8, 300),
            "days_since_last_measurement": rng.uniform(1, 100, 300),
        }
    )
    spec = FeatureSpec.fit(train, FeatureVocabulary(numeric=("LAB//x",), static=(), treatment=()))
    assert "LAB//x" in spec.log_columns
    later = train.head(2).with_columns(pl.Series("LAB//x", [0.0, -1.0]))
    design = spec.matrix(later)
    assert np.isfinite(design).all()
    floor = spec.matrix(train.filter(pl.col("LAB//x") == pl.col("LAB//x").min()).head(1))
    col = spec.columns.index("log(LAB//x)")
    np.testing.assert_allclose(design[:, col], floor[0, col])  # clipped exactly to the train minimum
