"""The train-only Preprocessor: leakage, serialisation, quantile normal scores, vocabulary."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy.special import ndtr, ndtri
from scipy.stats import rankdata

from migpt_traj.data.cohort import Cohort
from migpt_traj.data.preprocess import PAD_ID, START_ID, UNK_ID, Preprocessor
from migpt_traj.data.tensorize import tensorize
from migpt_traj.errors import ConfigError


def _perturb_subjects(cohort: Cohort, subject_ids: list[int], seed: int) -> Cohort:
    """Change every value, drop a third of the rows and add new codes and embeddings for ``subject_ids``."""
    rng = np.random.default_rng(seed)
    ev = cohort.events
    sel = pl.col("subject_id").is_in(subject_ids)
    other, mine = ev.filter(~sel), ev.filter(sel)
    keep_outcome = pl.col("code").is_in([*cohort.outcomes, "END_OF_FOLLOWUP", "MEDS_BIRTH"]) | pl.col("time").is_null()
    drop = pl.Series(rng.random(mine.height) < 0.33)
    mine = mine.filter(keep_outcome | ~drop)
    mine = mine.with_columns(
        numeric_value=pl.col("numeric_value") * 100 + 7,
        embedding=pl.when(pl.col("embedding").is_not_null()).then(pl.col("embedding").list.eval(pl.element() * 50 - 3)),
    )
    extra = mine.filter(pl.col("code") == "LAB//a").with_columns(
        code=pl.lit("LAB//held_out_only"), numeric_value=pl.lit(123.0, dtype=pl.Float32)
    )
    static = mine.filter(pl.col("time").is_null()).with_columns(code=pl.lit("SEX//other"))
    return cohort.with_events(pl.concat([other, mine, extra, static]).sort("subject_id", "time", maintain_order=True))


@pytest.mark.parametrize("split", ["held_out", "tuning"])
def test_fit_ignores_everything_about_non_train_subjects(tiny: Any, split: str) -> None:
    cohort = tiny.cohort(40, images=True, lag_days=3.0)
    base = Preprocessor.fit(cohort).to_dict()
    changed = _perturb_subjects(cohort, cohort.subject_ids(split), seed=1)
    assert changed.events.height != cohort.events.height  # the perturbation did something
    assert Preprocessor.fit(changed).to_dict() == base
    # Removing them altogether changes nothing either.
    assert Preprocessor.fit(cohort.subset(split="train")).to_dict() == base


def test_fit_does_see_train_subjects(tiny: Any) -> None:
    """Positive control for the leakage test: the same perturbation of train subjects changes the statistics."""
    cohort = tiny.cohort(40, images=True)
    base = Preprocessor.fit(cohort).to_dict()
    changed = Preprocessor.fit(_perturb_subjects(cohort, cohort.subject_ids("train")[:3], seed=1)).to_dict()
    assert changed["codes"] != base["codes"]
    assert changed["quantiles"]["LAB//a"] != base["quantiles"]["LAB//a"]
    assert changed["image_mean"] != base["image_mean"]


def test_vocabulary_specials_first_outcomes_and_birth_excluded(tiny: Any) -> None:
    cohort = tiny.cohort(40)
    pre = Preprocessor.fit(cohort)
    assert pre.codes[:3] == ["<pad>", "<unk>", "<start>"] and (PAD_ID, UNK_ID, START_ID) == (0, 1, 2)
    train_codes = set(cohort.subset(split="train").events["code"].to_list())
    excluded = {*cohort.outcomes, "END_OF_FOLLOWUP", "MEDS_BIRTH"}
    assert set(pre.codes[3:]) == train_codes - excluded
    assert pre.codes[3:] == sorted(pre.codes[3:])
    assert set(pre.excluded_codes) == excluded
    assert not set(pre.quantiles) & excluded


def test_min_code_count_sends_rare_codes_to_unknown(tiny: Any) -> None:
    cohort = tiny.cohort(40)
    counts = dict(cohort.subset(split="train").events.group_by("code").len().iter_rows())
    pre = Preprocessor.fit(cohort, min_code_count=20)
    assert set(pre.codes[3:]) == {c for c, n in counts.items() if n >= 20} - set(pre.excluded_codes)
    assert "TREATMENT//drug" not in pre.codes  # fewer than 20 train subjects got the drug
    samples = pl.DataFrame({"subject_id": cohort.subject_ids("train"), "cutoff_time": [tiny.at(5000)] * 24})
    table = tensorize(cohort, samples, pre)
    train_inputs = cohort.subset(split="train").events.filter(~pl.col("code").is_in(pre.excluded_codes))
    rare = train_inputs.filter(~pl.col("code").is_in(pre.codes))
    assert rare.height > 0
    assert (table.code_id == UNK_ID).sum() == rare.height
    assert (table.code_id == pre.codes.index("LAB//a")).sum() == train_inputs.filter(pl.col("code") == "LAB//a").height


def test_unknown_codes_map_to_id_1(tiny: Any) -> None:
    cohort = tiny.cohort(40)
    pre = Preprocessor.fit(cohort)
    sid = cohort.subject_ids("held_out")[0]
    novel = tiny.event_frame(
        [
            {"subject_id": sid, "time": tiny.at(10), "code": "LAB//never_seen", "numeric_value": 3.0},
            {"subject_id": sid, "code": "STATIC//never_seen"},
        ]
    )
    changed = cohort.with_events(
        pl.concat([cohort.events, novel.select(cohort.events.columns)]).sort("subject_id", "time", maintain_order=True)
    )
    samples = pl.DataFrame({"subject_id": [sid], "cutoff_time": [tiny.at(10)]})
    before = tensorize(cohort, samples, pre)
    after = tensorize(changed, samples, pre)
    assert after.offsets[-1] == before.offsets[-1] + 2
    assert (after.code_id == UNK_ID).sum() == 2 and (before.code_id == UNK_ID).sum() == 0
    frame = pre.code_frame()
    assert frame["code_id"].to_list() == list(range(len(pre.codes)))
    # A code never measured in train normalises to 0 (not NaN), so its value token stays defined.
    assert after.value[after.code_id == UNK_ID].tolist() == [0.0, 0.0]
    assert sorted(after.has_value[after.code_id == UNK_ID].tolist()) == [0.0, 1.0]


def test_json_round_trip_is_exact(tiny: Any) -> None:
    pre = Preprocessor.fit(tiny.cohort(40, images=True))
    text = json.dumps(pre.to_dict())
    back = Preprocessor.from_dict(json.loads(text))
    assert back.to_dict() == pre.to_dict()
    codes = np.array(["LAB//a"] * 5 + ["LAB//b"] * 3, dtype=object)
    values = np.array([-10, 4.0, 5.5, 7.0, 99, 0.1, 1.0, np.nan])
    np.testing.assert_array_equal(back.normalise_values(codes, values), pre.normalise_values(codes, values))
    mat = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_array_equal(back.normalise_images(mat), pre.normalise_images(mat))


# ---------------------------------------------------------------------------------------------- normal scores
def _single_code_preprocessor(tiny: Any, values: np.ndarray) -> Preprocessor:
    rows = [
        {"subject_id": 1, "time": tiny.at(i), "code": "LAB//v", "numeric_value": float(v)} for i, v in enumerate(values)
    ]
    rows.append({"subject_id": 1, "time": tiny.at(values.size + 1), "code": "MEDS_DEATH"})
    cohort = Cohort.from_events(tiny.event_frame(rows), splits={1: "train"})
    return Preprocessor.fit(cohort)


def _scores(pre: Preprocessor, values: np.ndarray) -> np.ndarray:
    return pre.normalise_values(np.array(["LAB//v"] * values.size, dtype=object), values.astype(np.float64))


def test_normal_scores_follow_the_train_ecdf_and_are_monotone(tiny: Any) -> None:
    train = np.random.default_rng(0).lognormal(1.0, 1.0, size=800).astype(np.float32).astype(np.float64)
    pre = _single_code_preprocessor(tiny, train)
    # Independent reference: the mid-rank empirical CDF of the train values.
    expected_p = (rankdata(train, method="average") - 0.5) / train.size
    got = _scores(pre, train)
    np.testing.assert_allclose(
        ndtr(got[(expected_p > 0.01) & (expected_p < 0.99)]),
        expected_p[(expected_p > 0.01) & (expected_p < 0.99)],
        atol=0.01,
    )
    grid = np.sort(np.concatenate([train, np.linspace(train.min() - 5, train.max() + 5, 500)]))
    s = _scores(pre, grid)
    assert np.all(np.diff(s) >= 0), "normal score is not monotone in the value"
    inside = (grid > np.quantile(train, 0.01)) & (grid < np.quantile(train, 0.99))
    assert np.all(np.diff(s[inside]) > -1e-7) and np.unique(s[inside]).size > 300  # increasing, not a few steps


def test_ties_get_the_mid_rank(tiny: Any) -> None:
    train = np.array([0.0] * 700 + [1.0] * 300)
    pre = _single_code_preprocessor(tiny, train)
    s = _scores(pre, np.array([0.0, 0.0, 1.0, 1.0]))
    assert s[0] == s[1] and s[2] == s[3]
    # Mid-ranks: zeros occupy (0, 0.7] of the ECDF → 0.35; ones (0.7, 1] → 0.85.
    np.testing.assert_allclose(ndtr(s), [0.35, 0.35, 0.85, 0.85], atol=0.01)
    assert s[0] == pytest.approx(ndtri(0.35), abs=0.03)


def test_values_outside_the_train_range_clip(tiny: Any) -> None:
    train = np.linspace(10.0, 20.0, 200)
    pre = _single_code_preprocessor(tiny, train)
    s = _scores(pre, np.array([-1e6, 9.999, 10.0, 15.0, 20.0, 20.001, 1e9]))
    assert s[0] == s[1] == pytest.approx(-3.1) and s[-1] == s[-2] == pytest.approx(3.1)
    assert s[2] >= s[1] and s[4] <= s[5]
    assert s[3] == pytest.approx(0.0, abs=0.02)
    assert np.all(np.abs(s) <= 3.1 + 1e-6)


def test_missing_values_stay_nan_and_unmeasured_codes_score_zero(tiny: Any) -> None:
    pre = _single_code_preprocessor(tiny, np.linspace(0, 1, 50))
    got = pre.normalise_values(np.array(["LAB//v", "LAB//w", "LAB//v"], dtype=object), np.array([np.nan, 5.0, 0.5]))
    assert np.isnan(got[0]) and got[1] == 0.0 and got[2] == pytest.approx(0.0, abs=0.05)
    assert np.isnan(pre.normalise_values(np.array(["LAB//v"], dtype=object), np.array([np.nan]))).all()


def test_image_statistics_standardise_train_embeddings(tiny: Any) -> None:
    cohort = tiny.cohort(40, images=True)
    pre = Preprocessor.fit(cohort)
    mat = np.asarray(
        cohort.subset(split="train").events.filter(pl.col("embedding").is_not_null())["embedding"].to_list()
    )
    assert pre.image_dim == 3
    z = pre.normalise_images(mat)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "split_name", "match"),
    [
        pytest.param({"min_code_count": 0}, "train", "min_code_count must be >= 1; got 0", id="min-count"),
        pytest.param({}, "held_out", "train split is empty", id="empty-train"),
    ],
)
def test_fit_rejects_bad_settings(tiny: Any, kwargs: dict[str, int], split_name: str, match: str) -> None:
    rows = [
        {"subject_id": 1, "time": tiny.at(0), "code": "LAB//v", "numeric_value": 1.0},
        {"subject_id": 1, "time": tiny.at(1), "code": "MEDS_DEATH"},
    ]
    cohort = Cohort.from_events(tiny.event_frame(rows), splits={1: split_name})
    with pytest.raises(ConfigError, match=match):
        Preprocessor.fit(cohort, **kwargs)
