"""Tests of migpt_traj.evaluation.harness (``evaluate``) and the bootstrap kernels behind its intervals.

References: every reported point estimate is recomputed here by calling :mod:`migpt_traj.evaluation.metrics` on the
model's own predictions and the cohort's labels; every bootstrap kernel is compared with the same metric function
called on the explicitly resampled (expanded) rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
from _evaluation_standins import AsOfLabModel, Replay, event_codes

from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError, MigptTrajError, ModelStateError, OutcomeError, ValueRangeError
from migpt_traj.evaluation import bootstrap as bs
from migpt_traj.evaluation import (
    brier_score,
    calibration,
    concordance_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from migpt_traj.evaluation._scoring import prepare_landmark
from migpt_traj.evaluation.harness import evaluate

LANDMARKS = [0.0, 120.0]
HORIZONS = [180.0, 365.0, 540.0]


@pytest.fixture(scope="module")
def cohort(tiny) -> Cohort:
    return tiny.cohort(300, seed=11, train=0.5, tuning=0.1)


@pytest.fixture(scope="module")
def model(cohort: Cohort) -> AsOfLabModel:
    return AsOfLabModel().fit(cohort)


@pytest.fixture(scope="module")
def report(cohort: Cohort, model: AsOfLabModel):
    return evaluate(
        model,
        cohort,
        landmarks=LANDMARKS,
        horizons=HORIZONS,
        baselines=["null", Replay(model)],
        n_bootstrap=60,
        subgroups=["SEX//female", "TREATMENT//placebo"],
        leakage=False,
    )


def _cell(frame: pl.DataFrame, **keys: object) -> dict[str, Any]:
    rows = frame.filter(*[pl.col(k) == v for k, v in keys.items()])
    assert rows.height == 1, keys
    return rows.row(0, named=True)


# ---------------------------------------------------------------------------------------------------- values
def test_point_estimates_equal_direct_metric_calls(report, cohort: Cohort, model: AsOfLabModel) -> None:
    preds = model.predict_risk(cohort, horizons=HORIZONS, landmarks=LANDMARKS, split="held_out")
    checked = 0
    for s in LANDMARKS:
        lab = cohort.labels(landmarks=[s], split="held_out")
        train = cohort.labels(landmarks=[s], split="train")
        t, e = lab["duration_days"].to_numpy(), event_codes(lab["event"], cohort.outcomes)
        tt, te = train["duration_days"].to_numpy(), event_codes(train["event"], cohort.outcomes)
        p = preds.filter(pl.col("landmark_days") == s)
        for k, outcome in enumerate(cohort.outcomes, start=1):
            risks = []
            for h in HORIZONS:
                r = (
                    lab.join(
                        p.filter((pl.col("event") == outcome) & (pl.col("horizon_days") == h)),
                        on=["subject_id", "prediction_time"],
                        how="left",
                        maintain_order="left",
                    )["risk"]
                ).to_numpy()
                risks.append(r)
                ipcw: dict[str, Any] = {"cause": k, "train_time": tt, "train_event": te}
                expected = {}
                for metric, fn in {
                    "auc": lambda t=t, e=e, r=r, h=h, ipcw=ipcw: cumulative_dynamic_auc(t, e, r, h, **ipcw),
                    "c_index": lambda t=t, e=e, r=r, h=h, ipcw=ipcw: concordance_ipcw(t, e, r, tau=h, **ipcw),
                    "brier": lambda t=t, e=e, r=r, h=h, ipcw=ipcw: brier_score(t, e, r, h, **ipcw),
                }.items():
                    try:
                        expected[metric] = fn()
                    except MigptTrajError:
                        expected[metric] = float("nan")
                n = lab.height
                try:
                    cal = calibration(t, e, r, h, cause=k, n_groups=max(1, min(10, n // 10)))
                    unstable = max(abs(cal.slope), abs(cal.intercept)) > 100  # reported as not estimable
                    expected.update(
                        calibration_slope=float("nan") if unstable else cal.slope,
                        ici=cal.ici,
                        calibration_in_the_large=cal.calibration_in_the_large,
                        observed_risk=cal.observed,
                    )
                except MigptTrajError:
                    expected.update(calibration_slope=float("nan"), ici=float("nan"))
                n_events = int(((t <= h) & (e == k)).sum())
                for metric, value in expected.items():
                    row = _cell(
                        report.metrics, model="AsOfLab", landmark_days=s, horizon_days=h, event=outcome, metric=metric
                    )
                    assert row["n_at_risk"] == n and row["n_events"] == n_events
                    if n_events < 5:
                        assert row["status"] == "few_events" and np.isnan(row["value"])
                        continue
                    if np.isnan(value):
                        assert row["status"] == "not_estimable"
                        continue
                    assert row["status"] == "ok", row
                    assert row["value"] == pytest.approx(value, rel=1e-12, abs=1e-12), (metric, s, h, outcome)
                    checked += 1
            row = _cell(report.metrics, model="AsOfLab", landmark_days=s, event=outcome, metric="ibs")
            if row["status"] == "ok":
                ibs = integrated_brier_score(
                    t, e, np.column_stack(risks), HORIZONS, cause=k, train_time=tt, train_event=te
                )
                assert row["value"] == pytest.approx(ibs, rel=1e-12)
                checked += 1
    assert checked >= 20  # the fixture really scored cells


def test_null_model_auc_is_one_half_and_model_beats_it(report) -> None:
    null = report.metrics.filter((pl.col("model") == "null") & (pl.col("metric") == "auc") & (pl.col("status") == "ok"))
    assert null.height > 0 and np.allclose(null["value"].to_numpy(), 0.5)
    death = report.comparisons.filter(
        (pl.col("baseline") == "null") & (pl.col("metric") == "auc") & (pl.col("event") == "MEDS_DEATH")
    ).filter(pl.col("status") == "ok")
    assert death.height > 0 and (death["favours"] == "model").all()


def test_paired_difference_with_itself_is_exactly_zero(report) -> None:
    same = report.comparisons.filter((pl.col("baseline") == "replay") & (pl.col("status") == "ok"))
    assert same.height > 0
    for col in ("difference", "lower", "upper"):
        assert np.all(same[col].to_numpy() == 0.0)
    assert (same["favours"] == "neither").all()


# ---------------------------------------------------------------------------------------------------- bootstrap
def _signal_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    t_event = rng.exponential(800.0 / np.exp(x))
    t_comp = rng.exponential(3000.0, n)
    t_cens = rng.uniform(100, 1600, n)
    t = np.round(np.min(np.stack([t_event, t_comp, t_cens]), axis=0), 1)
    e = np.where(t == np.round(t_event, 1), 1, np.where(t == np.round(t_comp, 1), 2, 0))
    risk = 1 - np.exp(-365.0 / 800.0 * np.exp(x))
    tt = np.round(rng.uniform(100, 1700, 400), 1)
    te = rng.choice([0, 1, 2], 400, p=[0.5, 0.4, 0.1])
    return t, e, risk, tt, te


@pytest.mark.parametrize("cause", [1, 2])
def test_kernels_equal_metrics_on_the_resampled_rows(cause: int) -> None:
    t, e, risk, tt, te = _signal_sample(80, seed=cause)
    sample = bs.EvalSample.build(t, e, np.arange(t.size), train_time=tt, train_event=te)
    boot = bs.SubjectBootstrap.draw(np.arange(t.size), n_replicates=12, seed=5)
    w = boot.weights(np.arange(t.size))
    h = 365.0
    kernels = {
        "auc": bs.weighted_auc(sample, risk, h, cause, w).values,
        "c": bs.weighted_concordance(sample, risk, h, cause, w).values,
        "brier": bs.weighted_brier(sample, risk, h, cause, w).values,
        "ibs": bs.weighted_integrated_brier(
            sample, np.column_stack([risk * 0.5, risk]), np.array([200.0, h]), cause, w
        ).values,
        **{k: v.values for k, v in bs.weighted_calibration(sample, risk, h, cause, w).items()},
    }
    compared = 0
    for b in range(w.shape[0]):
        idx = np.repeat(np.arange(t.size), w[b].astype(int))
        ti, ei, ri = t[idx], e[idx], risk[idx]
        ipcw: dict[str, Any] = {"cause": cause, "train_time": tt, "train_event": te}
        direct = {
            "auc": cumulative_dynamic_auc(ti, ei, ri, h, **ipcw),
            "c": concordance_ipcw(ti, ei, ri, tau=h, **ipcw),
            "brier": brier_score(ti, ei, ri, h, **ipcw),
            "ibs": integrated_brier_score(ti, ei, np.column_stack([ri * 0.5, ri]), [200.0, h], **ipcw),
        }
        cal = calibration(ti, ei, ri, h, cause=cause, n_groups=1)
        direct.update(
            calibration_in_the_large=cal.calibration_in_the_large,
            observed_risk=cal.observed,
            mean_risk=cal.expected,
            calibration_intercept=cal.intercept,
            calibration_slope=cal.slope,
            ici=cal.ici,
        )
        for name, value in direct.items():
            assert kernels[name][b] == pytest.approx(value, rel=1e-7, abs=1e-9), (name, b)
            compared += 1
    assert compared == 13 * 10


def test_kernels_are_nan_where_the_metric_raises() -> None:
    t, e, risk, tt, te = _signal_sample(40, seed=3)
    sample = bs.EvalSample.build(t, e, np.arange(t.size), train_time=tt, train_event=te)
    w = np.ones((1, t.size))
    beyond = 5000.0
    with pytest.raises(ValueRangeError, match="outside the follow-up"):
        cumulative_dynamic_auc(t, e, risk, beyond, train_time=tt, train_event=te)
    est = bs.weighted_auc(sample, risk, beyond, 1, w)
    assert np.isnan(est.values[0]) and est.reason is not None and "outside the follow-up" in est.reason
    no_case = np.where(e == 1, 0, e)
    s2 = bs.EvalSample.build(t, no_case, np.arange(t.size), train_time=tt, train_event=te)
    assert "no case" in (bs.weighted_auc(s2, risk, 365.0, 1, w).reason or "")
    assert "no cause-1 event" in (bs.weighted_concordance(s2, risk, 365.0, 1, w).reason or "")


def test_rows_of_a_subject_move_together_across_landmarks(cohort: Cohort) -> None:
    boot = bs.SubjectBootstrap.draw(cohort.subject_ids("held_out"), n_replicates=50, seed=1)
    assert np.all(boot.counts.sum(axis=1) == len(cohort.subject_ids("held_out")))
    first, second = (prepare_landmark(cohort, s, "held_out", boot) for s in LANDMARKS)
    common = np.intersect1d(first.sample.subject_id, second.sample.subject_id)
    assert common.size > 10  # the landmarks really duplicate subjects
    i = np.searchsorted(first.sample.subject_id, common)
    j = np.searchsorted(second.sample.subject_id, common)
    assert np.array_equal(first.weights[:, i], second.weights[:, j])
    # a subject's rows share one multiplicity, drawn per subject: a row-level draw would not match across rows
    rows = np.concatenate([first.sample.subject_id, second.sample.subject_id])
    w = boot.weights(rows, with_point=False)
    for sid in common[:5]:
        cols = np.flatnonzero(rows == sid)
        assert cols.size == 2 and np.array_equal(w[:, cols[0]], w[:, cols[1]])
    with pytest.raises(ValueRangeError, match="not in the bootstrap population"):
        boot.weights([10_000_000])


def test_interval_contains_the_estimate_and_narrows_with_more_subjects() -> None:
    widths = []
    for n in (100, 1600):
        t, e, risk, tt, te = _signal_sample(n, seed=7)
        sample = bs.EvalSample.build(t, e, np.arange(n), train_time=tt, train_event=te)
        boot = bs.SubjectBootstrap.draw(np.arange(n), n_replicates=200, seed=0)
        values = bs.weighted_auc(sample, risk, 365.0, 1, boot.weights(np.arange(n))).values
        lo, hi, n_ok = bs.percentile_interval(values[1:])
        assert n_ok == 200 and lo <= values[0] <= hi
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]  # ~1/sqrt(16) = 0.25 expected


def test_report_intervals_contain_the_point_estimates(report) -> None:
    ok = report.metrics.filter((pl.col("status") == "ok") & pl.col("lower").is_not_nan())
    assert ok.height > 30
    inside = ok.filter((pl.col("lower") <= pl.col("value") + 1e-12) & (pl.col("value") <= pl.col("upper") + 1e-12))
    assert inside.height >= 0.95 * ok.height  # percentile intervals may exclude a skewed estimate, rarely


# ---------------------------------------------------------------------------------------------------- status
def test_thin_and_non_estimable_cells_are_reported_not_dropped(cohort: Cohort, model: AsOfLabModel) -> None:
    rep = evaluate(
        AsOfLabModel(only_primary=True).fit(cohort),
        cohort,
        landmarks=[0.0],
        horizons=[1.0, 365.0, 9000.0],
        baselines=[],
        n_bootstrap=0,
        leakage=False,
    )
    m = rep.metrics
    assert m.height == 1 * 3 * 2 * 9 + 2  # landmark × horizons × outcomes × metrics, plus one IBS per outcome
    thin = _cell(m, horizon_days=1.0, event="MEDS_DEATH", metric="auc")
    assert thin["status"] == "few_events" and np.isnan(thin["value"]) and "(< 5)" in thin["detail"]
    far = _cell(m, horizon_days=9000.0, event="MEDS_DEATH", metric="auc")
    assert far["status"] == "not_estimable" and "outside the follow-up" in far["detail"]
    missing = _cell(m, horizon_days=365.0, event="TRANSPLANT", metric="brier")
    assert missing["status"] == "no_predictions" and "TRANSPLANT" in missing["detail"]
    ok = _cell(m, horizon_days=365.0, event="MEDS_DEATH", metric="auc")
    assert ok["status"] == "ok" and np.isnan(ok["lower"]) and ok["detail"] == "no bootstrap"


def test_baselines_are_fitted_on_the_train_split_only(cohort: Cohort, model: AsOfLabModel) -> None:
    spy = Replay(model, name="spy")
    evaluate(model, cohort, landmarks=[0.0], horizons=[365.0], baselines=[spy], n_bootstrap=0, leakage=False)
    assert spy.fitted_on is not None
    assert set(spy.fitted_on.splits["split"].unique().to_list()) == {"train"}
    assert set(spy.fitted_on.events["subject_id"].unique().to_list()) == set(cohort.subject_ids("train"))


def test_subgroups_partition_the_cells_and_match_direct_calls(report, cohort: Cohort, model: AsOfLabModel) -> None:
    sub = report.subgroups.filter(
        (pl.col("model") == "AsOfLab") & (pl.col("landmark_days") == 0.0) & (pl.col("horizon_days") == 365.0)
    ).filter((pl.col("event") == "MEDS_DEATH") & (pl.col("metric") == "auc"))
    total = _cell(
        report.metrics, model="AsOfLab", landmark_days=0.0, horizon_days=365.0, event="MEDS_DEATH", metric="auc"
    )
    for group in ("SEX//female", "TREATMENT//placebo", "age_years"):
        assert sub.filter(pl.col("subgroup") == group)["n_at_risk"].sum() == total["n_at_risk"]
    female = _cell(sub, subgroup="SEX//female", level="yes")
    members = set(cohort.statics().filter(pl.col("code") == "SEX//female")["subject_id"].to_list())
    lab = cohort.labels(landmarks=[0.0], split="held_out").filter(pl.col("subject_id").is_in(sorted(members)))
    train = cohort.labels(landmarks=[0.0], split="train")
    p = model.predict_risk(cohort, horizons=[365.0], landmarks=[0.0], split="held_out").filter(
        pl.col("event") == "MEDS_DEATH"
    )
    r = lab.join(p, on=["subject_id", "prediction_time"], how="left", maintain_order="left")["risk"].to_numpy()
    expected = cumulative_dynamic_auc(
        lab["duration_days"].to_numpy(),
        event_codes(lab["event"], cohort.outcomes),
        r,
        365.0,
        train_time=train["duration_days"].to_numpy(),
        train_event=event_codes(train["event"], cohort.outcomes),
    )
    assert female["n_at_risk"] == lab.height
    assert female["value"] == pytest.approx(expected, rel=1e-12)


def test_description_flow_and_missingness(report, cohort: Cohort) -> None:
    assert report.description.select("split", "subjects").equals(cohort.describe().select("split", "subjects"))
    lab = cohort.labels(landmarks=[120.0], split="held_out")
    flow = _cell(report.flow, split="held_out", landmark_days=120.0, horizon_days=365.0, event="MEDS_DEATH")
    dur, ev = lab["duration_days"], lab["event"]
    assert flow["n_at_risk"] == lab.height
    assert flow["n_events"] == ((dur <= 365.0) & (ev == "MEDS_DEATH")).sum()
    assert flow["n_event_free"] == (dur > 365.0).sum()
    miss = _cell(report.missingness, split="held_out", landmark_days=0.0, code="LAB//a")
    assert miss["n_at_risk"] == cohort.labels(landmarks=[0.0], split="held_out").height
    assert miss["n_missing"] == 0  # every subject has a LAB//a visit at entry (time zero)
    late = _cell(report.missingness, split="held_out", landmark_days=120.0, code="LAB//a")
    assert late["share_missing"] == 0.0


# ---------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"baselines": ["coxx"]}, ConfigError, "Unknown baseline 'coxx'.*Did you mean 'cox'"),
        ({"split": "train"}, ConfigError, "not an evaluation"),
        ({"split": "test"}, ConfigError, "Unknown split 'test'"),
        ({"subgroups": ["SEX//unknown"]}, ConfigError, "does not occur in the cohort"),
        ({"outcomes": ["DEATH"]}, OutcomeError, "not one of the cohort's outcomes"),
        ({"n_bootstrap": -1}, ConfigError, "'n_bootstrap' must be an integer >= 0"),
        ({"thresholds": [0.2, 1.0]}, ConfigError, "'thresholds' must be probabilities"),
        ({"horizons": []}, ConfigError, "'horizons' must be a non-empty list"),
    ],
)
def test_bad_options_raise(cohort: Cohort, model: AsOfLabModel, kwargs: dict, error: type, match: str) -> None:
    options = {"landmarks": [0.0], "horizons": [365.0], "baselines": [], "n_bootstrap": 0, "leakage": False}
    with pytest.raises(error, match=match):
        evaluate(model, cohort, **(options | kwargs))


def test_model_fitted_for_other_outcomes_is_refused(cohort: Cohort) -> None:
    other = AsOfLabModel()
    other.outcomes = ("MEDS_DEATH",)
    with pytest.raises(OutcomeError, match=r"fitted for outcomes \['MEDS_DEATH'\]"):
        evaluate(other, cohort, landmarks=[0.0], horizons=[365.0], baselines=[], n_bootstrap=0, leakage=False)


class _Broken:
    name = "broken"

    def fit(self, cohort: Cohort) -> _Broken:
        return self

    def predict_risk(self, cohort: Cohort, **kwargs: object) -> pl.DataFrame:
        raise ConfigError("this baseline cannot predict")


def test_a_failing_baseline_is_reported_and_an_unfitted_model_raises(cohort: Cohort, model: AsOfLabModel) -> None:
    rep = evaluate(
        model, cohort, landmarks=[0.0], horizons=[365.0], baselines=[_Broken()], n_bootstrap=0, leakage=False
    )
    broken = rep.metrics.filter(pl.col("model") == "broken")
    assert broken.height == 20 and (broken["status"] == "predict_failed").all()
    assert broken["detail"].str.contains("this baseline cannot predict").all()
    assert rep.settings["failures"] == {"broken": "prediction failed: this baseline cannot predict"}
    import migpt_traj as mt

    with pytest.raises(ModelStateError, match="not fitted"):
        evaluate(mt.TrajectoryModel(), cohort, landmarks=[0.0], horizons=[365.0], baselines=[], leakage=False)


def test_missing_baseline_class_is_named(monkeypatch: pytest.MonkeyPatch, cohort, model) -> None:
    from migpt_traj.evaluation import baselines as module

    monkeypatch.delattr(module, "LandmarkRSF")
    with pytest.raises(ConfigError, match=r"needs migpt_traj\.evaluation\.baselines\.LandmarkRSF"):
        evaluate(model, cohort, landmarks=[0.0], horizons=[365.0], baselines=["rsf"], n_bootstrap=0, leakage=False)


# ---------------------------------------------------------------------------------------------------- scale
@pytest.mark.slow
def test_pbc2_bootstrap_with_200_replicates_scores_the_grid() -> None:
    import migpt_traj as mt

    pbc2 = mt.datasets.load_pbc2()
    lab_model = AsOfLabModel(code="LAB//bilirubin").fit(pbc2)
    rep = evaluate(
        lab_model,
        pbc2,
        landmarks=[365.25, 1095.75, 1826.25],
        horizons=[365.25, 1095.75, 1826.25],
        baselines=["null"],
        n_bootstrap=200,
        leakage=False,
    )
    assert rep.metrics.filter(pl.col("status") == "ok").height > 0  # its speed is measured in benchmarks/
