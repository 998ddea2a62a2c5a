"""Tests of the synthetic cohort simulator and its ground truth (src/migpt_traj/datasets/synthetic.py).

References independent of the code under test: scikit-survival's concordance, lifelines' Aalen-Johansen
estimator, scipy's ODE solver on the hazards written out from the module docstring, and Monte Carlo replicates
of the simulator's own sampling for fixed latent states.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from migpt_traj.data.cohort import Cohort
from migpt_traj.datasets._sim_generate import draw_decisions, draw_outcomes
from migpt_traj.datasets.synthetic import (
    SIMULATOR_VERSION,
    SimulatorParams,
    SyntheticCohort,
    SyntheticTruth,
    make_synthetic,
    stream_synthetic,
)
from migpt_traj.errors import (
    ConfigError,
    DataReadError,
    MigptTrajWarning,
    OutcomeError,
    SplitError,
    ValueRangeError,
)

YEAR = 365.25
CAUSES = ("MEDS_DEATH", "TRANSPLANT")


@pytest.fixture(scope="module")
def syn() -> SyntheticCohort:
    return make_synthetic(2000, seed=0)


@pytest.fixture(scope="module")
def landmark(syn: SyntheticCohort) -> pl.DataFrame:
    """At-risk samples one year after entry."""
    return syn.labels(landmarks=[365.0])


def _row(truth: SyntheticTruth, sid: int, **overrides: object) -> pl.DataFrame:
    return truth.subjects.filter(pl.col("subject_id") == sid).with_columns(
        **{k: pl.lit(v, dtype=truth.subjects.schema[k]) for k, v in overrides.items()}
    )


# ---------------------------------------------------------------------------------------------- data
def test_same_seed_same_cohort_other_seed_other_cohort() -> None:
    a, b, c = make_synthetic(200, seed=5), make_synthetic(200, seed=5), make_synthetic(200, seed=6)
    assert a.events.equals(b.events)
    assert a.truth.subjects.equals(b.truth.subjects)
    assert a.splits.equals(b.splits)
    assert not a.events.equals(c.events)


def test_events_pass_cohort_validation_in_canonical_order(syn: SyntheticCohort) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", MigptTrajWarning)  # an unsorted frame would warn
        again = Cohort.from_events(syn.events, outcomes=CAUSES, splits=syn.splits)
    assert again.events.equals(syn.events)
    assert syn.outcomes == CAUSES
    assert syn.events.schema["embedding"] == pl.List(pl.Float32)
    assert syn.events.schema["available_time"] == pl.Datetime("us")
    emb = syn.events.filter(pl.col("code") == "IMAGE//ct")["embedding"]
    assert emb.null_count() == 0 and set(emb.list.len().unique().to_list()) == {16}
    codes = set(syn.events["code"].unique().to_list())
    expected = {
        "MEDS_BIRTH",
        "SEX//female",
        "SEX//male",
        "SUBTYPE//a",
        "SUBTYPE//b",
        "SUBTYPE//c",
        "LAB//bilirubin",
        "LAB//albumin",
        "LAB//platelets",
        "LAB//sodium",
        "NOTE//progress",
        "IMAGE//ct",
        "TREATMENT//drug_a",
        "TREATMENT//drug_b",
        "MEDS_DEATH",
        "TRANSPLANT",
        "END_OF_FOLLOWUP",
    }
    assert codes == expected
    assert syn.codes.filter(pl.col("description").is_null()).height == 0
    per_subject = syn.events.group_by("subject_id").agg(
        (pl.col("code") == "END_OF_FOLLOWUP").sum().alias("eof"),
        pl.col("code").is_in(list(CAUSES)).sum().alias("outcomes"),
        pl.col("code").str.starts_with("TREATMENT//").sum().alias("starts"),
    )
    assert per_subject["eof"].to_list() == [1] * 2000
    assert per_subject["outcomes"].max() == 1 and per_subject["starts"].max() == 1


def test_split_is_seeded_subject_level_70_15_15(syn: SyntheticCohort) -> None:
    counts = dict(syn.splits.group_by("split").len().iter_rows())
    assert counts == {"train": 1400, "tuning": 300, "held_out": 300}
    assert make_synthetic(200, seed=1).splits.equals(make_synthetic(200, seed=1).splits)
    assert not make_synthetic(200, seed=1).splits.equals(make_synthetic(200, seed=2).splits)


def test_cohort_has_the_documented_size_and_outcome_mix(syn: SyntheticCohort) -> None:
    subjects = syn.subjects
    death = (subjects["outcome"] == "MEDS_DEATH").fill_null(False).to_numpy().mean()
    transplant = (subjects["outcome"] == "TRANSPLANT").fill_null(False).to_numpy().mean()
    assert 0.25 <= death <= 0.40, death
    assert 0.05 <= transplant <= 0.15, transplant
    followup = (subjects["end_of_followup"] - subjects["time_zero"]).dt.total_days() / YEAR
    assert 3.0 <= np.median(followup.to_numpy()) <= 8.0
    visits = syn.events.filter(pl.col("code") == "NOTE//progress").group_by("subject_id").len()["len"]
    assert 5 <= np.median(visits.to_numpy()) <= 15


def test_available_time_is_never_before_time_and_delays_notes_and_images(syn: SyntheticCohort) -> None:
    ev = syn.events
    assert ev.filter(pl.col("available_time") < pl.col("time")).height == 0
    assert ev.filter(pl.col("time").is_null() != pl.col("available_time").is_null()).height == 0
    delay = ev.with_columns(d=(pl.col("available_time") - pl.col("time")).dt.total_seconds() / 86_400.0)
    for code in ("NOTE//progress", "IMAGE//ct"):
        d = delay.filter(pl.col("code") == code)["d"].to_numpy()
        assert d.min() > 0 and d.max() < 30 and 1.0 < d.mean() < 6.0
    others = delay.filter(~pl.col("code").is_in(["NOTE//progress", "IMAGE//ct"]) & pl.col("time").is_not_null())
    assert np.abs(others["d"].to_numpy()).max() == 0


def test_policy_never_goes_to_the_documented_unsupported_regions(syn: SyntheticCohort) -> None:
    starts = syn.events.filter(pl.col("code").str.starts_with("TREATMENT//"))
    state = syn.truth.latent(starts["subject_id"], starts["time"])
    assert state.filter((pl.col("subtype") == "a") & (pl.col("treatment") == "drug_b")).height == 0
    assert state["z_severity"].to_numpy().min() >= 0.0
    review = state["days_since_entry"].to_numpy() / YEAR
    assert np.allclose(review, np.round(review), atol=1e-9) and review.min() >= 1
    probs = syn.truth.start_probability(starts["subject_id"], starts["time"] - dt.timedelta(days=1))
    joined = probs.join(state.select("subject_id", "subtype"), on="subject_id")
    assert joined.filter((pl.col("subtype") == "a") & (pl.col("option") == "drug_b"))["probability"].max() == 0


def test_confounding_knob_widens_the_severity_gap_of_the_treated() -> None:
    gaps = {}
    for strength in (0.0, 1.0, 2.0):
        cohort = make_synthetic(3000, seed=11, confounding=strength)
        at_review = cohort.labels(landmarks=[YEAR])  # in follow-up at the first review
        started = (
            at_review.join(
                cohort.events.filter(pl.col("code").str.starts_with("TREATMENT//")).select("subject_id", "time"),
                left_on=["subject_id", "prediction_time"],
                right_on=["subject_id", "time"],
                how="left",
                coalesce=False,
            )["time"]
            .is_not_null()
            .to_numpy()
        )
        z = cohort.truth.latent(at_review["subject_id"], at_review["prediction_time"])["z_severity"].to_numpy()
        se = np.sqrt(z[started].var() / started.sum() + z[~started].var() / (~started).sum())
        gaps[strength] = (z[started].mean() - z[~started].mean(), se)
    assert abs(gaps[0.0][0]) < 3 * gaps[0.0][1], gaps
    assert gaps[1.0][0] > 0.5, gaps
    assert gaps[2.0][0] > gaps[1.0][0] + gaps[1.0][1], gaps


def test_imaging_and_notes_carry_components_the_labs_do_not(syn: SyntheticCohort) -> None:
    def r2(x: np.ndarray, y: np.ndarray) -> float:
        design = np.column_stack([np.ones(len(x)), x])
        resid = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
        return 1.0 - resid.var() / y.var()

    images = syn.events.filter(pl.col("code") == "IMAGE//ct")
    state = syn.truth.latent(images["subject_id"], images["time"])
    emb = images["embedding"].list.to_array(16).to_numpy()
    assert r2(emb, state["z_image"].to_numpy()) > 0.5
    labs = syn.events.filter(pl.col("code") == "LAB//bilirubin")
    lab_state = syn.truth.latent(labs["subject_id"], labs["time"])
    log_bili = np.log(labs["numeric_value"].to_numpy())
    assert r2(log_bili, lab_state["z_severity"].to_numpy()) > 0.5
    assert r2(log_bili, lab_state["z_image"].to_numpy()) < 0.05
    assert r2(log_bili, lab_state["z_symptom"].to_numpy()) < 0.05
    notes = syn.events.filter(pl.col("code") == "NOTE//progress")
    severe = notes["text_value"].str.contains("jaundice").to_numpy()
    calm = notes["text_value"].str.contains("no complaints|no new symptoms").to_numpy()
    z3 = syn.truth.latent(notes["subject_id"], notes["time"])["z_symptom"].to_numpy()
    assert z3[severe].mean() - z3[calm].mean() > 1.5


# ---------------------------------------------------------------------------------------------- truth
def test_true_risk_ranks_observed_deaths_far_better_than_chance(syn: SyntheticCohort, landmark: pl.DataFrame) -> None:
    from sksurv.metrics import concordance_index_censored

    risk = syn.truth.risk(landmark["subject_id"], landmark["prediction_time"], [1826.0])
    assert risk["prediction_time"].equals(landmark["prediction_time"])
    died = (landmark["event"] == "MEDS_DEATH").fill_null(False).to_numpy()
    c = concordance_index_censored(died, landmark["duration_days"].to_numpy(), risk["risk"].to_numpy())[0]
    assert c > 0.75, c


def test_risks_are_bounded_monotone_and_sum_to_one_with_survival(syn: SyntheticCohort, landmark: pl.DataFrame) -> None:
    horizons = [0.0, 100.0, 365.0, 1095.0, 1826.0, 3000.0]
    sample = landmark.head(600)
    ids, times = sample["subject_id"], sample["prediction_time"]
    death = syn.truth.risk(ids, times, horizons).sort("subject_id", "horizon_days", maintain_order=True)
    other = syn.truth.risk(ids, times, horizons, event="TRANSPLANT")["risk"].to_numpy()
    surv = syn.truth.survival(ids, times, horizons)["survival"].to_numpy()
    d = death["risk"].to_numpy().reshape(-1, len(horizons))
    assert d.min() >= 0 and d.max() <= 1 and np.all(np.diff(d, axis=1) >= -1e-12)
    assert np.all(d[:, 0] == 0)
    assert np.abs(death["risk"].to_numpy() + other + surv - 1.0).max() < 1e-9
    assert set(death["event"].unique().to_list()) == {"MEDS_DEATH"}


def _ode_reference(
    params: SimulatorParams, row: dict[str, float], t: float, h: float, option: int, start: float | None = None
) -> np.ndarray:
    """CIF_death, CIF_transplant over (t, t + h] (years) with ``option`` (0 = none) started at ``start`` >= t
    (default t), by solving dH/du = h_d + h_c, dF_k/du = h_k exp(-H) with the hazards written out from the
    module docstring (integrated in two pieces around the start, where the hazards jump)."""
    g = int(row["subtype"])
    s = t if start is None else start
    delta = 0.0 if option == 0 else params.slope_effect[g][option - 1]
    theta = (0.0, 0.0) if option == 0 else (params.death_log_hr[g][option - 1], params.transplant_log_hr[g][option - 1])

    def rhs(u: float, y: np.ndarray) -> list[float]:
        on = u >= s
        z1 = row["z1_level"] + row["z1_slope"] * u - delta * max(u - s, 0.0)
        x = (
            z1,
            row["z2_level"] + row["z2_slope"] * u,
            row["z3_level"] + row["z3_slope"] * u,
            (row["age_at_entry"] + u - 55.0) / 10.0,
            row["female"],
        )
        hd = np.exp(params.death_intercept + np.dot(params.death_coef, x) + on * theta[0])
        hc = np.exp(params.transplant_intercept + np.dot(params.transplant_coef, x) + on * theta[1])
        return [hd + hc, hd * np.exp(-y[0]), hc * np.exp(-y[0])]

    y = np.zeros(3)
    for lo, hi in ((t, min(max(s, t), t + h)), (min(max(s, t), t + h), t + h)):
        if hi > lo:
            y = solve_ivp(rhs, (lo, hi), y, rtol=1e-10, atol=1e-12, first_step=1e-6).y[:, -1]
    return y[1:]


def test_natural_course_risk_matches_an_independent_mixture_of_ode_solutions(syn: SyntheticCohort) -> None:
    """The policy re-implemented from the module docstring: start at review j with prod_{l<j}(1 - p_l) p_j q_o."""
    params, gamma = syn.truth.params, syn.truth.confounding
    t, h = 0.4, 3.0  # years: reviews at 1, 2 and 3 fall in the window
    for sid in (2, 7, 31):
        row = syn.truth.subjects.filter(pl.col("subject_id") == sid).row(0, named=True)
        z1 = [row["z1_level"] + row["z1_slope"] * tau for tau in (1.0, 2.0, 3.0)]
        p = [0.0 if z < 0 else 1 / (1 + np.exp(-(-2.0 + gamma * 1.5 * (z - 0.5)))) for z in z1]
        q = (1.0, 0.0) if row["subtype"] == 0 else (0.5, 0.5)
        mix = np.prod([1 - pj for pj in p]) * _ode_reference(params, row, t, h, 0)
        for j, tau in enumerate((1.0, 2.0, 3.0)):
            first = np.prod([1 - pl_ for pl_ in p[:j]]) * p[j]
            for o in (1, 2):
                if first * q[o - 1] > 0:
                    mix = mix + first * q[o - 1] * _ode_reference(params, row, t, h, o, start=tau)
        for k, cause in enumerate(CAUSES):
            got = syn.truth.risk(sid, t * YEAR, h * YEAR, event=cause)["risk"][0]
            assert got == pytest.approx(mix[k], abs=2e-5), (sid, cause)


@pytest.mark.parametrize("option", ["none", "drug_a", "drug_b"])
def test_counterfactual_risk_matches_an_ode_solution_of_the_documented_hazards(
    syn: SyntheticCohort, option: str
) -> None:
    truth = syn.truth
    untreated = truth.subjects.filter(pl.col("start_years") > 3.0).head(6)
    k = ("none", "drug_a", "drug_b").index(option)
    for row in untreated.iter_rows(named=True):
        for t_days, h_days in ((0.0, 1826.0), (500.0, 1000.0)):
            ref = _ode_reference(truth.params, row, t_days / YEAR, h_days / YEAR, k)
            for cause, expected in zip(CAUSES, ref, strict=True):
                got = truth.counterfactual_risk(row["subject_id"], t_days, h_days, option=option, event=cause)
                assert got["risk"][0] == pytest.approx(expected, abs=2e-5), (row["subject_id"], cause)


def test_natural_course_risk_matches_monte_carlo_replicates_of_the_simulator(syn: SyntheticCohort) -> None:
    """Fixed latent states, 20 000 replicate futures each (treatment decisions and event times redrawn)."""
    truth = syn.truth
    rng = np.random.default_rng(2024)
    n_rep = 20_000
    horizons = np.array([365.0, 1095.0, 1826.0])
    for sid in (2, 7, 31):  # subtypes a, b, b; P(no start within 5 years) 0.69, 0.35, 0.39
        row = _row(truth, sid, start_years=np.inf, start_option=0)  # untreated from entry on
        rep = {c: np.repeat(row[c].to_numpy(), n_rep) for c in row.columns}
        draw_decisions(rng, rep, truth.params, truth.confounding)
        draw_outcomes(rng, rep, truth.params)
        assert 0.2 < np.mean(rep["start_years"] <= 5.0) < 0.8  # the mixture over future starts is exercised
        single = SyntheticTruth(row, params=truth.params, confounding=truth.confounding)
        for t in (0.0, 1.5):
            live = (rep["event_years"] > t) & (rep["start_years"] > t)
            for k, cause in enumerate(CAUSES):
                exact = single.risk([sid], [t * YEAR], horizons, event=cause)["risk"].to_numpy()
                hit = rep["event_cause"][live] == k
                emp = np.array([np.mean(hit & (rep["event_years"][live] <= t + h / YEAR)) for h in horizons])
                se = np.sqrt(np.maximum(emp * (1 - emp), 1e-4) / live.sum())
                assert np.all(np.abs(emp - exact) < 4.5 * se), (sid, t, cause, emp, exact)


def test_mean_true_risk_matches_aalen_johansen_of_the_observed_cohort() -> None:
    from lifelines import AalenJohansenFitter

    cohort = make_synthetic(6000, seed=21, confounding=1.5)
    lab = cohort.labels(landmarks=[365.0])
    horizon = 1095.0
    code = lab["event"].replace_strict({"MEDS_DEATH": 1, "TRANSPLANT": 2}, default=0, return_dtype=pl.Int64)
    for k, cause in enumerate(CAUSES, start=1):
        ajf = AalenJohansenFitter(calculate_variance=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ajf.fit(lab["duration_days"].to_numpy(), code.to_numpy(), event_of_interest=k)
        curve = ajf.cumulative_density_.iloc[:, 0]
        empirical = float(curve[curve.index <= horizon].iloc[-1])
        risk = cohort.truth.risk(lab["subject_id"], lab["prediction_time"], [horizon], event=cause)["risk"]
        exact = float(risk.to_numpy().mean())
        assert abs(empirical - exact) < 0.015, (cause, empirical, exact)  # ~3 standard errors


def test_counterfactual_none_equals_risk_where_the_policy_never_treats(syn: SyntheticCohort) -> None:
    truth, h = syn.truth, 1826.0
    landmark = syn.labels(landmarks=[400.0])  # after the first review, so some subjects are treated
    t = 400.0 / YEAR
    state = landmark.join(truth.subjects, on="subject_id")
    first, last = np.floor(t) + 1, np.floor(t + h / YEAR)
    never = state.filter(
        (pl.col("start_years") > t)
        & (pl.col("z1_level") + pl.col("z1_slope") * first < 0)
        & (pl.col("z1_level") + pl.col("z1_slope") * last < 0)
    )
    treated = state.filter(pl.col("start_years") <= t)
    maybe = state.filter((pl.col("start_years") > t) & (pl.col("z1_level") + pl.col("z1_slope") * last > 0.5))
    assert never.height > 50 and treated.height > 50 and maybe.height > 50
    for frame in (never, treated):
        nat = truth.risk(frame["subject_id"], frame["prediction_time"], h)["risk"].to_numpy()
        cf = truth.counterfactual_risk(frame["subject_id"], frame["prediction_time"], h, option="none")
        assert np.abs(nat - cf["risk"].to_numpy()).max() < 1e-12
    own = treated.with_columns(opt=pl.col("start_option"))
    for option_index, option in ((1, "drug_a"), (2, "drug_b")):
        part = own.filter(pl.col("opt") == option_index)
        same = truth.counterfactual_risk(part["subject_id"], part["prediction_time"], h, option=option)
        nat = truth.risk(part["subject_id"], part["prediction_time"], h)["risk"].to_numpy()
        assert np.abs(nat - same["risk"].to_numpy()).max() < 1e-12
    nat = truth.risk(maybe["subject_id"], maybe["prediction_time"], h)["risk"].to_numpy()
    cf = truth.counterfactual_risk(maybe["subject_id"], maybe["prediction_time"], h, option="none")
    assert np.abs(nat - cf["risk"].to_numpy()).max() > 1e-3  # future starts do change the natural course


def test_treatment_effects_are_heterogeneous_by_subtype(syn: SyntheticCohort) -> None:
    truth = syn.truth
    rows = truth.subjects.filter(pl.col("start_years") > 1.0)
    risks = {
        option: truth.counterfactual_risk(rows["subject_id"], 365.0, 1826.0, option=option)["risk"].to_numpy()
        for option in ("none", "drug_a", "drug_b")
    }
    subtype = rows["subtype"].to_numpy()
    best = np.argmin(np.stack([risks["none"], risks["drug_a"], risks["drug_b"]]), axis=0)
    assert np.all(best[subtype == 0] == 1) and np.all(best[subtype == 2] == 2)
    assert np.all(risks["drug_b"][subtype == 0] > risks["none"][subtype == 0])


def test_future_values_are_noise_free_means_of_the_labs(syn: SyntheticCohort) -> None:
    truth = syn.truth
    for code in ("LAB//bilirubin", "LAB//albumin", "LAB//platelets"):
        labs = syn.events.filter(pl.col("code") == code)
        mean = truth.future_values(labs["subject_id"], labs["time"], 0.0, code=code)["value"].to_numpy()
        observed = labs["numeric_value"].to_numpy().astype(np.float64)
        resid = observed - mean
        assert abs(resid.mean()) < 4 * resid.std() / np.sqrt(resid.size), code  # unbiased
        assert np.corrcoef(observed, mean)[0, 1] > 0.5, code
    # Under "none" an untreated subject's bilirubin follows exp(0.7 (a + b u)) exactly.
    row = truth.subjects.filter(pl.col("start_years") > 10).row(0, named=True)
    days = np.array([0.0, 200.0, 900.0])
    got = truth.future_values(row["subject_id"], 100.0, days, code="LAB//bilirubin", option="none")["value"]
    u = (100.0 + days) / YEAR
    assert np.allclose(got.to_numpy(), np.exp(0.7 * (row["z1_level"] + row["z1_slope"] * u)), rtol=1e-12)
    natural = truth.future_values(row["subject_id"], 100.0, days, code="LAB//bilirubin")["value"].to_numpy()
    treated = truth.future_values(row["subject_id"], 100.0, days, code="LAB//bilirubin", option="drug_a")
    assert natural[0] == pytest.approx(got[0]) and treated["value"][2] != pytest.approx(got[2])


@settings(max_examples=25, deadline=None)
@given(
    index=st.integers(0, 1999),
    t=st.floats(0.0, 3000.0),
    horizons=st.lists(st.floats(0.0, 4000.0), min_size=1, max_size=4),
    option=st.sampled_from([None, "none", "drug_a", "drug_b"]),
)
def test_truth_invariants_hold_for_any_query(
    syn: SyntheticCohort, index: int, t: float, horizons: list[float], option: str | None
) -> None:
    truth = syn.truth
    sid = index + 1
    if option is None:
        death = truth.risk(sid, t, horizons)["risk"].to_numpy()
        transplant = truth.risk(sid, t, horizons, event="TRANSPLANT")["risk"].to_numpy()
    else:
        death = truth.counterfactual_risk(sid, t, horizons, option=option)["risk"].to_numpy()
        transplant = truth.counterfactual_risk(sid, t, horizons, option=option, event="TRANSPLANT")["risk"].to_numpy()
    surv = truth.survival(sid, t, horizons, option=option)["survival"].to_numpy()
    assert np.all((death >= 0) & (death <= 1) & (transplant >= 0) & (surv >= 0))
    assert np.abs(death + transplant + surv - 1).max() < 1e-9
    order = np.argsort(horizons, kind="stable")
    assert np.all(np.diff(death[order]) >= -1e-12) and np.all(np.diff(surv[order]) <= 1e-12)


def test_finer_grid_changes_the_truth_by_less_than_1e_5(syn: SyntheticCohort, landmark: pl.DataFrame) -> None:
    sample = landmark.head(300)
    fine = SyntheticTruth(syn.truth.subjects, params=syn.truth.params, confounding=1.0, grid_days=1.0)
    for cause in CAUSES:
        a = syn.truth.risk(sample["subject_id"], sample["prediction_time"], [365.0, 1826.0], event=cause)
        b = fine.risk(sample["subject_id"], sample["prediction_time"], [365.0, 1826.0], event=cause)
        assert np.abs(a["risk"].to_numpy() - b["risk"].to_numpy()).max() < 1e-5


def test_latent_state_follows_the_documented_lines(syn: SyntheticCohort) -> None:
    row = syn.truth.subjects.filter(pl.col("start_years") == 2.0).row(0, named=True)
    state = syn.truth.latent(row["subject_id"], [0.0, 2.0 * YEAR, 4.0 * YEAR])
    delta = SimulatorParams().slope_effect[row["subtype"]][row["start_option"] - 1]
    z1 = [row["z1_level"], row["z1_level"] + 2 * row["z1_slope"], row["z1_level"] + 4 * row["z1_slope"] - 2 * delta]
    assert np.allclose(state["z_severity"].to_numpy(), z1)
    assert state["treatment"].to_list()[0] == "none" and state["treatment"][1] != "none"


# ---------------------------------------------------------------------------------------------- I/O
def test_stream_writes_a_meds_root_equal_to_make_synthetic(tmp_path: Path) -> None:
    root = stream_synthetic(150, tmp_path / "root", seed=4, subjects_per_shard=60)
    assert sorted(p.name for p in (root / "data").glob("*.parquet")) == ["0000.parquet", "0001.parquet", "0002.parquet"]
    cohort = Cohort.from_meds(root, outcomes=CAUSES)
    same = make_synthetic(150, seed=4, block_size=60)
    assert cohort.events.equals(same.events)
    assert cohort.splits.equals(same.splits)
    back = SyntheticCohort.from_meds(root)
    assert back.truth.subjects.equals(same.truth.subjects) and back.truth.confounding == 1.0
    with pytest.raises(DataReadError, match="overwrite=True"):
        stream_synthetic(150, root, seed=4)
    plain = Cohort.to_meds(same, tmp_path / "plain")  # the base writer: no latent table
    with pytest.raises(DataReadError, match="is not a synthetic MEDS root"):
        SyntheticCohort.from_meds(plain)


def test_to_meds_and_subset_keep_the_truth(syn: SyntheticCohort, tmp_path: Path) -> None:
    part = syn.subset(split="held_out")
    assert isinstance(part, SyntheticCohort) and part.n_subjects == 300
    back = SyntheticCohort.from_meds(part.to_meds(tmp_path / "held_out"))
    sid = part.subject_ids()[:5]
    assert back.truth.risk(sid, 100.0, 365.0).equals(syn.truth.risk(sid, 100.0, 365.0))


@pytest.mark.slow  # importing MONAI (and torch) alone takes ~20 s on 2 cores
def test_volumes_hold_a_lesion_that_grows_with_the_latent_state(tmp_path: Path) -> None:
    import nibabel as nib

    cohort = make_synthetic(30, seed=3, volumes=True, volume_dir=tmp_path / "vol")
    images = cohort.events.filter(pl.col("code") == "IMAGE//ct")
    assert images["image_path"].null_count() == 0 and images["embedding"].null_count() == 0
    assert cohort.events.filter(pl.col("code") != "IMAGE//ct")["image_path"].null_count() == (
        cohort.events.height - images.height
    )
    volumes = [nib.Nifti1Image.from_filename(p).get_fdata() for p in images["image_path"].to_list()]
    assert volumes[0].shape == (32, 32, 32)
    size = np.array([(v > 0.5).sum() for v in volumes])
    state = cohort.truth.latent(images["subject_id"], images["time"])
    assert np.corrcoef(size, state["z_severity"] + state["z_image"])[0, 1] > 0.8


# ---------------------------------------------------------------------------------------------- errors
def test_bad_arguments_raise_errors_that_name_them(syn: SyntheticCohort) -> None:
    truth = syn.truth
    with pytest.raises(ValueRangeError, match="'confounding' must be a finite number >= 0"):
        make_synthetic(10, confounding=-1.0)
    with pytest.raises(ConfigError, match="'n_subjects' must be a positive integer"):
        make_synthetic(0)
    with pytest.raises(ConfigError, match="volumes=True needs 'volume_dir'"):
        make_synthetic(10, volumes=True)
    with pytest.raises(ConfigError, match="has no 'MEDS_DEATH' event; use more subjects"):
        make_synthetic(3, seed=0)
    with pytest.raises(SplitError, match="Subject 999999 is not in the synthetic cohort"):
        truth.risk(999999, 0.0, 365.0)
    with pytest.raises(ConfigError, match=r"Unknown option 'drug_c'.*Did you mean .*'drug_a'"):
        truth.counterfactual_risk(1, 0.0, 365.0, option="drug_c")
    with pytest.raises(OutcomeError, match=r"Unknown event 'DEATH'.*Did you mean 'MEDS_DEATH'"):
        truth.risk(1, 0.0, 365.0, event="DEATH")
    with pytest.raises(ValueRangeError, match=r"'horizons_days' must be finite days >= 0; got -1.0"):
        truth.risk(1, 0.0, [-1.0])
    with pytest.raises(ValueRangeError, match="before entry"):
        truth.risk(1, -5.0, 365.0)
    with pytest.raises(ConfigError, match="Dimension mismatch: 'subject_ids' has 2 values but the times have 3"):
        truth.risk([1, 2], [0.0, 1.0, 2.0], 365.0)
    with pytest.raises(ConfigError, match=r"Unknown lab code 'LAB//bili'.*Did you mean 'LAB//bilirubin'"):
        truth.future_values(1, 0.0, 10.0, code="LAB//bili")


def test_simulator_version_is_pinned_to_its_output() -> None:
    """If this fails the generative model or its random stream changed: bump SIMULATOR_VERSION and re-pin."""
    cohort = make_synthetic(300, seed=0)
    assert SIMULATOR_VERSION == "1.0.0"
    assert cohort.metadata["dataset_version"] == SIMULATOR_VERSION
    assert cohort.events.height == PINNED_ROWS
    assert dict(cohort.subjects.group_by("outcome").len().iter_rows()) == PINNED_OUTCOMES
    risk = cohort.truth.risk([1, 2, 3], 0.0, 1826.0)["risk"].to_list()
    assert risk == pytest.approx(PINNED_RISK, abs=1e-9)


PINNED_ROWS = 15458
PINNED_OUTCOMES: dict[str | None, int] = {"MEDS_DEATH": 94, "TRANSPLANT": 37, None: 169}
PINNED_RISK = [0.46608802680316697, 0.5597859152884053, 0.36539372831663586]
