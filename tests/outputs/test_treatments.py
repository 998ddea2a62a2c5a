"""Treatment suggestions: histories, propensity, support and counterfactual risks against the simulator's truth."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

import migpt_traj as mt
from migpt_traj.errors import ConfigError, OutcomeError
from migpt_traj.outputs._treatment_histories import (
    censor_at_next_start,
    decision_cohort,
    intervened_cohort,
    resolve_options,
)
from migpt_traj.outputs._treatment_propensity import decision_labels, fit_propensity
from migpt_traj.outputs.treatments import BASIS, _propensity, estimate_treatments

D0 = dt.datetime(2000, 1, 1)
VOCAB = ["LAB//x", "TREATMENT//drug_a", "TREATMENT//drug_b", "SEX//female"]


def _tiny() -> mt.Cohort:
    days = [0, 100, 100, 200, 400]
    ev = pl.DataFrame(
        {
            "subject_id": [1, 1, 1, 1, 1, 2, 2],
            "time": [D0 + dt.timedelta(days=d) for d in days] + [D0, D0 + dt.timedelta(days=300)],
            "code": ["LAB//x", "LAB//x", "TREATMENT//drug_a", "LAB//x", "MEDS_DEATH", "LAB//x", "END_OF_FOLLOWUP"],
            "numeric_value": [1.0, 2.0, None, 3.0, None, 1.0, None],
            "text_value": [None] * 7,
        }
    )
    return mt.Cohort.from_events(ev, outcomes=["MEDS_DEATH"], splits={1: "train", 2: "held_out"})


# ---------------------------------------------------------------- options and histories (fast)
def test_resolve_options_none_first_and_codes() -> None:
    names, codes = resolve_options(VOCAB, "TREATMENT//", None)
    assert names == ("none", "drug_a", "drug_b")
    assert codes == (None, "TREATMENT//drug_a", "TREATMENT//drug_b")
    assert resolve_options(VOCAB, "TREATMENT//", ["TREATMENT//drug_b"])[0] == ("none", "drug_b")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (["drug_c"], r"Unknown treatment option 'drug_c'.*Valid options are \['none', 'drug_a', 'drug_b'\]"),
        (["drug_aa"], r"Did you mean 'drug_a'"),
        ("drug_a", r"list of option names, not the string 'drug_a'"),
    ],
    ids=["unknown", "did-you-mean", "string"],
)
def test_resolve_options_errors(options: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_options(VOCAB, "TREATMENT//", options)  # type: ignore[arg-type]


def test_intervened_cohort_replaces_the_decision_at_t() -> None:
    cohort = _tiny()
    t = D0 + dt.timedelta(days=100)
    rows = pl.DataFrame({"subject_id": [1], "prediction_time": [t]})
    virtual, samples = intervened_cohort(cohort, rows, [None, "TREATMENT//drug_b"])
    assert samples["subject_id"].to_list() == [1, 2] and samples["option_index"].to_list() == [0, 1]
    treat = virtual.events.filter(pl.col("code").str.starts_with("TREATMENT//"))
    # The subject's own start at exactly t is the decision: removed for "none", replaced by drug_b.
    assert treat.select("subject_id", "time", "code").rows() == [(2, t, "TREATMENT//drug_b")]
    # Every other event is kept (the as-of cutoff hides the future), labs at t included.
    assert virtual.events.filter(pl.col("subject_id") == 1).height == 4
    assert virtual.subjects["split"].to_list() == ["train", "train"]


def test_decision_cohort_hides_a_start_at_t_but_not_the_visit() -> None:
    shifted = decision_cohort(_tiny()).events
    start = shifted.filter(pl.col("code") == "TREATMENT//drug_a")["time"][0]
    assert start == D0 + dt.timedelta(days=100, microseconds=1)
    assert shifted.filter(pl.col("code") == "LAB//x")["time"][1] == D0 + dt.timedelta(days=100)


def test_censor_at_next_start_strictly_after() -> None:
    cohort = _tiny()
    queries = pl.DataFrame(
        {"subject_id": [1, 1, 1], "prediction_time": [D0, D0 + dt.timedelta(days=100), D0 + dt.timedelta(days=50)]}
    )
    duration = np.array([400.0, 300.0, 350.0], dtype=np.float32)
    cause = np.array([1, 1, 1])
    d, c = censor_at_next_start(cohort, queries, duration=duration, cause=cause)
    # From day 0 and day 50 the start at day 100 comes first: censored there; from day 100 (start at t) not.
    np.testing.assert_allclose(d, [100.0, 300.0, 50.0])
    assert c.tolist() == [0, 1, 0]


def test_decision_labels_window() -> None:
    starts = pl.DataFrame(
        {"subject_id": [1], "code": ["TREATMENT//drug_b"], "start_time": [D0 + dt.timedelta(days=100, microseconds=1)]}
    )
    q = pl.DataFrame({"subject_id": [1, 1, 1, 2], "prediction_time": [D0, D0 + dt.timedelta(days=100)] * 2})
    q = q.with_columns(prediction_time=pl.Series([D0, D0 + dt.timedelta(days=100), D0 + dt.timedelta(days=101), D0]))
    y = decision_labels(q, starts, [None, "TREATMENT//drug_a", "TREATMENT//drug_b"], window_days=50.0)
    assert y.tolist() == [0, 2, 0, 0]  # day 0: start 100 days later is outside a 50-day window


def test_propensity_matches_sklearn_multinomial_ridge() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 3))
    logits = x @ np.array([[0.0, 1.0, -1.0], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]]) + np.array([0.0, -1.0, -1.5])
    y = np.array([rng.choice(3, p=np.exp(r) / np.exp(r).sum()) for r in logits])
    model = fit_propensity(torch.tensor(x, dtype=torch.float32), y, 3, tuning=None, penalties=(1e-2,))
    # sklearn: sum log loss + ||W||^2 / (2C)  <=>  mean log loss + penalty ||W||^2 with C = 1 / (2 n penalty).
    ref = sklearn.LogisticRegression(C=1.0 / (2 * 600 * 1e-2), max_iter=2000, tol=1e-10).fit(x, y)
    np.testing.assert_allclose(model.predict(torch.tensor(x, dtype=torch.float32)), ref.predict_proba(x), atol=2e-3)


def test_propensity_absent_class_is_exactly_zero() -> None:
    x = torch.randn(50, 2)
    y = np.zeros(50, dtype=np.int64)
    y[:10] = 1
    p = fit_propensity(x, y, 3, tuning=None).predict(x)
    assert np.all(p[:, 2] == 0.0) and np.allclose(p.sum(1), 1.0)


# ---------------------------------------------------------------- with a fitted model (slow)
@pytest.fixture(scope="module")
def fitted() -> tuple[mt.TrajectoryModel, mt.Cohort]:
    syn = mt.datasets.make_synthetic(400, seed=3, confounding=2.0)
    model = mt.TrajectoryModel(
        d_model=16, n_layers=1, n_heads=2, max_epochs=1, use_notes=False, progress=False, seed=0
    ).fit(syn)
    return model, syn


@pytest.mark.slow
def test_frame_columns_rank_and_support(fitted: tuple[mt.TrajectoryModel, mt.Cohort]) -> None:
    model, syn = fitted
    out = model.suggest_treatments(syn, landmarks=[365.25], horizon=1826.25, split="held_out", n_bootstrap=3)
    expected = {
        "subject_id": pl.Int64,
        "prediction_time": pl.Datetime("us"),
        "option": pl.String,
        "risk": pl.Float64,
        "risk_lower": pl.Float64,
        "risk_upper": pl.Float64,
        "supported": pl.Boolean,
        "rank": pl.Int32,
        "propensity": pl.Float64,
        "basis": pl.String,
    }
    assert {k: out.schema[k] for k in expected} == expected
    assert set(out["basis"].unique()) == {BASIS}
    assert out.group_by("subject_id").len()["len"].unique().to_list() == [3]
    assert out["risk"].is_between(0, 1).all() and (out["risk_lower"] <= out["risk_upper"]).all()
    # Ranks: null exactly where unsupported, 1..k among supported, ordered by risk.
    assert out.filter(~pl.col("supported"))["rank"].null_count() == out.filter(~pl.col("supported")).height
    for _, g in out.filter(pl.col("supported")).group_by("subject_id"):
        assert sorted(g["rank"].to_list()) == list(range(1, g.height + 1))
        assert g.sort("rank")["risk"].is_sorted()
    # The simulator never gives drug_b in subtype a, nor treats mild disease (z1 < 0) at confounding > 0.
    rows = out.filter(pl.col("option") != "none")
    before = rows.select(pl.col("prediction_time") - pl.duration(microseconds=1))["prediction_time"]
    start = syn.truth.start_probability(rows["subject_id"], before)
    truth = rows.join(
        start.with_columns(prediction_time=pl.col("prediction_time") + pl.duration(microseconds=1)),
        on=["subject_id", "prediction_time", "option"],
    )
    never = truth.filter(pl.col("probability") == 0)
    often = truth.filter(pl.col("probability") > 0.1)
    assert never.height > 20 and often.height > 10
    assert (~never["supported"]).mean() > 0.85
    assert often["supported"].mean() > 0.5
    lat = syn.truth.latent(rows["subject_id"], before)
    sub_a_drug_b = rows.with_columns(subtype=lat["subtype"]).filter(
        (pl.col("subtype") == "a") & (pl.col("option") == "drug_b")
    )
    assert (~sub_a_drug_b["supported"]).all()


@pytest.mark.slow
def test_propensity_uses_train_subjects_only(fitted: tuple[mt.TrajectoryModel, mt.Cohort]) -> None:
    model, syn = fitted
    codes = [None, "TREATMENT//drug_a", "TREATMENT//drug_b"]
    base = _propensity(model, syn, decision_cohort(syn), codes, 365.25)
    held = syn.subjects.filter(pl.col("split") == "held_out")["subject_id"]
    changed = syn.events.with_columns(
        numeric_value=pl.when(pl.col("subject_id").is_in(held.implode()) & pl.col("code").str.starts_with("LAB//"))
        .then(pl.col("numeric_value") * 3.0)
        .otherwise(pl.col("numeric_value"))
    ).filter(~(pl.col("subject_id").is_in(held.implode()) & pl.col("code").str.starts_with("TREATMENT//")))
    other = syn.with_events(changed)
    again = _propensity(model, other, decision_cohort(other), codes, 365.25)
    torch.testing.assert_close(again.weight, base.weight)
    assert again.starts.tolist() == base.starts.tolist()
    # ... and it does move when train subjects change (the comparison can fail).
    train = syn.subjects.filter(pl.col("split") == "train")["subject_id"].head(100)
    fewer = syn.with_events(
        syn.events.filter(
            ~(pl.col("subject_id").is_in(train.implode()) & pl.col("code").str.starts_with("TREATMENT//"))
        )
    )
    assert _propensity(model, fewer, decision_cohort(fewer), codes, 365.25).starts[1:].sum() < base.starts[1:].sum()


@pytest.mark.slow
def test_errors_name_the_option_and_event(fitted: tuple[mt.TrajectoryModel, mt.Cohort]) -> None:
    model, syn = fitted
    with pytest.raises(ConfigError, match=r"Unknown treatment option 'drug_z'.*\['none', 'drug_a', 'drug_b'\]"):
        model.suggest_treatments(syn, landmarks=[365.25], horizon=365.0, options=["drug_z"])
    with pytest.raises(OutcomeError, match=r"Unknown event 'DEATH'.*Did you mean 'MEDS_DEATH'"):
        model.suggest_treatments(syn, landmarks=[365.25], horizon=365.0, event="DEATH")
    with pytest.raises(ConfigError, match=r"'min_propensity' must be in \[0, 1\); got 1.5"):
        model.suggest_treatments(syn, landmarks=[365.25], horizon=365.0, min_propensity=1.5)
    with pytest.raises(ConfigError, match=r"'horizon' must be finite days > 0; got -1"):
        model.suggest_treatments(syn, landmarks=[365.25], horizon=-1)


@pytest.mark.slow
def test_counterfactual_risks_near_truth_without_confounding() -> None:
    syn = mt.datasets.make_synthetic(600, seed=5, confounding=0.0)
    model = mt.TrajectoryModel(
        d_model=16, n_layers=1, n_heads=2, max_epochs=1, use_notes=False, progress=False, seed=0
    ).fit(syn)
    est = estimate_treatments(model, syn, horizon=1095.75, landmarks=[365.25], split="held_out", n_bootstrap=0)
    before = est.rows.select(pl.col("prediction_time") - pl.duration(microseconds=1))["prediction_time"]
    true = np.stack(
        [
            syn.truth.counterfactual_risk(est.rows["subject_id"], before, [1095.75], option=o)["risk"].to_numpy()
            for o in est.options
        ],
        1,
    )
    # Randomised starts (confounding 0): every option is supported somewhere and the mean counterfactual risks
    # match the truth; per subject the model tracks the true risk (it sees labs and images, not the notes' z3).
    assert est.supported.any(axis=0).all()
    np.testing.assert_allclose(est.risk.mean(0), true.mean(0), atol=0.04)
    assert np.abs(est.risk - true).mean() < 0.12
    assert np.corrcoef(est.risk[:, 0], true[:, 0])[0, 1] > 0.4
