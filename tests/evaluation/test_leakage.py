"""Tests of migpt_traj.evaluation.leakage: each check passes on clean data and fails on a deliberate leak.

Leaks built here: a model that reads the end of follow-up (future), a lab whose value is the days left to the
outcome, a code recorded one day before every death, a time index counted back from the end of follow-up, and a
preprocessor fitted on every subject (vocabulary and normalisers from held-out subjects).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from _evaluation_standins import AsOfLabModel

import migpt_traj as mt
from migpt_traj.data.cohort import Cohort, days_to_duration
from migpt_traj.data.preprocess import Preprocessor
from migpt_traj.evaluation.baselines import LandmarkCox, NullModel
from migpt_traj.evaluation.leakage import (
    _perturb,
    audit_leakage,
    check_future_perturbation,
    check_outcome_derived,
    check_split_overlap,
    scan_outcome_derived_codes,
)

LANDMARKS = [0.0, 150.0]
HORIZONS = [180.0, 365.0]


@pytest.fixture(scope="module")
def cohort(tiny) -> Cohort:
    return tiny.cohort(120, seed=21)


def _with_rows(cohort: Cohort, rows: pl.DataFrame) -> Cohort:
    extra = rows.select(
        [pl.col(c) if c in rows.columns else pl.lit(None).alias(c) for c in cohort.events.columns]
    ).cast(cohort.events.schema)
    events = pl.concat([cohort.events, extra]).sort("subject_id", "time", nulls_last=False, maintain_order=True)
    return Cohort.from_events(events, outcomes=cohort.outcomes, splits=cohort.splits)


def _shell(preprocessor: Preprocessor) -> mt.TrajectoryModel:
    model = mt.TrajectoryModel(d_model=16, n_layers=1, use_notes=False, progress=False)
    model.preprocessor = preprocessor
    return model


def _visits(cohort: Cohort) -> pl.DataFrame:
    """One row per (subject, LAB//a visit) with the subject's outcome and end of follow-up."""
    return (
        cohort.events.filter(pl.col("code") == "LAB//a")
        .select("subject_id", "time")
        .join(cohort.subjects.select("subject_id", "outcome", "outcome_time", "end_of_followup"), on="subject_id")
    )


# ---------------------------------------------------------------------------------------------------- (a)
def test_an_as_of_model_passes_future_perturbation(cohort: Cohort) -> None:
    row = check_future_perturbation(
        AsOfLabModel().fit(cohort), cohort, landmarks=LANDMARKS, horizons=HORIZONS, split="held_out", n_subjects=6
    )
    assert row["passed"], row["detail"]
    assert row["statistic"] < 1e-12
    assert "96 predictions" in row["detail"]  # 6 subjects × 2 landmarks × 2 outcomes × 2 horizons × 2 perturbations


def test_a_model_reading_the_end_of_follow_up_fails_future_perturbation(cohort: Cohort) -> None:
    cheat = AsOfLabModel(peek="end_of_followup").fit(cohort)
    row = check_future_perturbation(cheat, cohort, landmarks=LANDMARKS, horizons=HORIZONS, split="held_out")
    assert not row["passed"]
    assert row["statistic"] > 1e-3
    assert "max |Δrisk|" in row["detail"]


def test_the_perturbations_really_change_the_future(cohort: Cohort) -> None:
    lab = cohort.labels(landmarks=[150.0], split="held_out").head(5)
    cut = lab.select("subject_id", "prediction_time")
    base = cohort.subset(lab["subject_id"].to_list())
    removed = _perturb(base, cut, "remove")
    later = removed.join(cut, on="subject_id").filter(pl.col("time") > pl.col("prediction_time"))
    assert later["code"].unique().to_list() == ["END_OF_FOLLOWUP"]
    changed = _perturb(base, cut, "change")
    for sid, t in cut.iter_rows():
        before = base.events.filter((pl.col("subject_id") == sid) & (pl.col("time") <= t))
        assert before.equals(changed.filter((pl.col("subject_id") == sid) & (pl.col("time") <= t)))
    # the labels flip: outcomes become censored and censored subjects get the primary outcome
    carriers = (
        cohort.subjects.filter(pl.col("outcome").is_not_null()).group_by("outcome").agg(pl.col("subject_id").min())
    )
    ids = sorted({*lab["subject_id"].to_list(), *carriers["subject_id"].to_list()})
    keep = cohort.subset(ids)
    flipped = keep.with_events(
        pl.concat([changed, keep.events.filter(~pl.col("subject_id").is_in(cut["subject_id"].implode()))]).sort(
            "subject_id", "time", nulls_last=False, maintain_order=True
        )
    )
    new = flipped.labels(landmarks=[150.0], split="held_out").filter(
        pl.col("subject_id").is_in(cut["subject_id"].implode())
    )
    assert new.height == lab.height  # still at risk at the landmark
    assert (new["event"].is_null() != lab["event"].is_null()).all()


@pytest.fixture(scope="module")
def tiny_model(cohort: Cohort) -> mt.TrajectoryModel:
    return mt.TrajectoryModel(d_model=16, n_layers=1, max_epochs=2, use_notes=False, progress=False).fit(cohort)


def test_the_trajectory_model_passes_every_check(cohort: Cohort, tiny_model: mt.TrajectoryModel) -> None:
    audit = audit_leakage({"model": tiny_model}, cohort, landmarks=LANDMARKS, horizons=HORIZONS, n_subjects=5)
    assert audit.passed, audit.checks["detail"].to_list()
    assert audit.checks["check"].to_list() == ["future_perturbation", "outcome_derived_features", "split_overlap"]


# ---------------------------------------------------------------------------------------------------- (b)
def test_clean_codes_are_not_flagged(cohort: Cohort) -> None:
    scan = scan_outcome_derived_codes(cohort)
    assert not scan["flagged"].any(), scan.filter(pl.col("flagged"))
    assert {"LAB//a", "LAB//b", "SIGN//x", "TREATMENT//drug", "SEX//female"} <= set(scan["code"].to_list())
    assert "MEDS_DEATH" not in scan["code"].to_list()


def test_a_lab_valued_as_days_to_death_is_flagged_and_fails_the_model(cohort: Cohort) -> None:
    leak = (
        _visits(cohort)
        .filter(pl.col("outcome") == "MEDS_DEATH")
        .select(
            "subject_id",
            "time",
            code=pl.lit("LAB//leak"),
            numeric_value=((pl.col("outcome_time") - pl.col("time")).dt.total_hours() / 24.0).cast(pl.Float32),
        )
    )
    leaky = _with_rows(cohort, leak)
    scan = scan_outcome_derived_codes(leaky)
    row = scan.filter(pl.col("code") == "LAB//leak").row(0, named=True)
    assert row["flagged"] and row["rho_value_time_to_outcome"] == pytest.approx(1.0)
    assert "tracks the time to the outcome" in row["reason"]
    model = _shell(Preprocessor.fit(leaky))
    failed = check_outcome_derived(model, scan)
    assert not failed["passed"] and "LAB//leak" in failed["detail"] and failed["statistic"] == 1.0
    clean = _shell(Preprocessor.fit(cohort))  # fitted without the code: the flag does not concern it
    passed = check_outcome_derived(clean, scan)
    assert passed["passed"] and "1 flagged code(s) are not model inputs" in passed["detail"]


def test_a_code_recorded_one_day_before_each_death_is_flagged(cohort: Cohort) -> None:
    deaths = cohort.subjects.filter(pl.col("outcome") == "MEDS_DEATH")
    marker = deaths.select(
        "subject_id", time=pl.col("outcome_time") - days_to_duration(pl.lit(1.0)), code=pl.lit("EVENT//preterminal")
    )
    scan = scan_outcome_derived_codes(_with_rows(cohort, marker))
    row = scan.filter(pl.col("code") == "EVENT//preterminal").row(0, named=True)
    assert row["flagged"] and row["anchor_gap_days"] == 1.0 and row["anchor_share"] == 1.0
    assert "last recorded 1.0 days before the outcome" in row["reason"]
    audit = audit_leakage(
        {"lab": AsOfLabModel().fit(cohort)}, _with_rows(cohort, marker), landmarks=[0.0], horizons=[365.0]
    )
    derived = audit.checks.filter(pl.col("check") == "outcome_derived_features").row(0, named=True)
    assert not derived["passed"] and "inputs are unknown" in derived["detail"]  # unknown inputs: every code counts


def test_a_time_index_counted_back_from_the_end_of_follow_up_is_flagged(cohort: Cohort) -> None:
    index = _visits(cohort).select(
        "subject_id",
        "time",
        code=pl.lit("VISIT//remaining"),
        numeric_value=((pl.col("end_of_followup") - pl.col("time")).dt.total_days() // 30).cast(pl.Float32),
    )
    row = scan_outcome_derived_codes(_with_rows(cohort, index)).filter(pl.col("code") == "VISIT//remaining")
    assert row["flagged"][0] and row["rho_value_time_to_end"][0] > 0.99


# ---------------------------------------------------------------------------------------------------- (c)
def test_a_preprocessor_fitted_on_every_subject_fails_split_overlap(cohort: Cohort) -> None:
    held = cohort.subject_ids("held_out")[0]
    rare = pl.DataFrame(
        {"subject_id": [held], "time": [cohort.subjects.filter(pl.col("subject_id") == held)["time_zero"][0]]},
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us")},
    ).with_columns(code=pl.lit("LAB//rare"), numeric_value=pl.lit(3.0, dtype=pl.Float32))
    resplit = _with_rows(cohort, rare)
    everyone = Cohort.from_events(
        resplit.events, outcomes=resplit.outcomes, splits=dict.fromkeys(resplit.subject_ids(), "train")
    )
    row = check_split_overlap(_shell(Preprocessor.fit(everyone)), resplit)
    assert not row["passed"]
    assert "LAB//rare" in row["detail"] and "seen only in tuning/held-out subjects" in row["detail"]
    assert "value normalisers" in row["detail"]  # LAB//a's range includes held-out values
    assert row["statistic"] >= 2
    clean = check_split_overlap(_shell(Preprocessor.fit(resplit)), resplit)
    assert clean["passed"], clean["detail"]


def test_baseline_vocabularies_are_checked(cohort: Cohort) -> None:
    cox = LandmarkCox(landmarks=[0.0]).fit(cohort.subset(split="train"))
    row = check_split_overlap(cox, cohort)
    assert row["passed"] and "vocabulary (" in row["detail"]


# ---------------------------------------------------------------------------------------------------- PBC2
def test_clean_pbc2_passes_all_three_checks_with_the_baselines() -> None:
    pbc2 = mt.datasets.load_pbc2()
    train = pbc2.subset(split="train")
    models = {"null": NullModel(landmarks=[365.25]).fit(train), "cox": LandmarkCox(landmarks=[365.25]).fit(train)}
    audit = audit_leakage(models, pbc2, landmarks=[365.25], horizons=[365.25, 1826.25], n_subjects=8)
    assert audit.passed, audit.checks.filter(~pl.col("passed"))["detail"].to_list()
    assert audit.checks.height == 6
    assert not audit.codes["flagged"].any()


@pytest.mark.slow
def test_clean_pbc2_passes_all_three_checks_with_a_trajectory_model() -> None:
    pbc2 = mt.datasets.load_pbc2()
    model = mt.TrajectoryModel(d_model=16, n_layers=1, max_epochs=2, use_notes=False, progress=False).fit(pbc2)
    audit = audit_leakage({"model": model}, pbc2, landmarks=[365.25, 1095.75], horizons=[1095.75], n_subjects=10)
    assert audit.passed, audit.checks["detail"].to_list()
    assert np.all(audit.checks["statistic"].to_numpy() < 1e-6)
