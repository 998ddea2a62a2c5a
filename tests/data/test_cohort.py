"""Tests of migpt_traj.data.cohort: outcomes and splits at the boundary, as-of labels, splits, views.

Labels are checked against hand-written tables and, in a hypothesis property test, against a naive
pure-Python reference implementation of the DESIGN.md "As of" rules written here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from migpt_traj.data.cohort import SPLITS, Cohort, days_to_duration, duration_to_days, seeded_split
from migpt_traj.data.schema import EVENT_SCHEMA
from migpt_traj.errors import ConfigError, MigptTrajError, OutcomeError, SplitError

BASE = dt.datetime(2020, 1, 1)
OUTCOMES = ("MEDS_DEATH", "TRANSPLANT")

# ------------------------------------------------------------------ outcome and split defects (MEDS roots)


def _splits(rows: list[tuple[Any, Any]]) -> pl.DataFrame:
    return pl.DataFrame({"subject_id": [r[0] for r in rows], "split": [r[1] for r in rows]})


# (id, splits table or None, from_meds kwargs, error, message pattern); the events are meds.valid_events().
COHORT_DEFECTS: list[tuple[str, pl.DataFrame | None, dict[str, Any], type[MigptTrajError], str]] = [
    (
        "outcome_never_occurs_near_miss",
        None,
        {"outcomes": ["MEDS_DAETH"]},
        OutcomeError,
        r"Outcome 'MEDS_DAETH' never occurs as a timed event in the data\. Did you mean 'MEDS_DEATH'",
    ),
    (
        "competing_outcome_never_occurs",
        None,
        {"outcomes": ["MEDS_DEATH", "TRANSPLANTED"]},
        OutcomeError,
        r"Outcome 'TRANSPLANTED' never occurs.*Did you mean 'TRANSPLANT'",
    ),
    (
        "outcome_far_from_any_code",
        None,
        {"outcomes": ["XYZ"]},
        OutcomeError,
        r"Outcome 'XYZ' never occurs as a timed event in the data\.$",
    ),
    ("outcome_is_static_only", None, {"outcomes": ["SEX//male"]}, OutcomeError, r"'SEX//male' never occurs"),
    ("no_outcome", None, {"outcomes": []}, OutcomeError, r"At least one outcome code is needed"),
    ("outcome_twice", None, {"outcomes": ["MEDS_DEATH"] * 2}, OutcomeError, r"must be distinct"),
    ("outcome_is_reserved", None, {"outcomes": ["END_OF_FOLLOWUP"]}, OutcomeError, r"'END_OF_FOLLOWUP' is a reserved"),
    (
        "splits_name_unknown_subject",
        _splits([(1, "train"), (2, "train"), (3, "held_out"), (99, "tuning")]),
        {},
        SplitError,
        r"name subject 99 \(1 such subject\(s\)\), which has no events",
    ),
    (
        "subject_twice_in_splits",
        _splits([(1, "train"), (2, "train"), (3, "held_out"), (2, "tuning")]),
        {},
        SplitError,
        r"name subject 2 more than once \(\['train', 'tuning'\]",
    ),
    (
        "unknown_split_name",
        _splits([(1, "train"), (2, "held-out"), (3, "tuning")]),
        {},
        SplitError,
        r"give subject 2 the split 'held-out'; valid splits are \['train', 'tuning', 'held_out'\]\. "
        r"Did you mean 'held_out'\?",
    ),
    (
        "null_split",
        _splits([(1, "train"), (2, None), (3, "tuning")]),
        {},
        SplitError,
        r"give subject 2 the split None",
    ),
    (
        "subject_with_no_split",
        _splits([(1, "train"), (3, "tuning")]),
        {},
        SplitError,
        r"Subject 2 \(1 such subject\(s\)\) has events but no split",
    ),
    (
        "null_subject_in_splits",
        _splits([(1, "train"), (2, "train"), (3, "tuning"), (None, "train")]),
        {},
        SplitError,
        r"1 row\(s\) with a null subject_id",
    ),
    (
        "string_subject_ids_in_splits",
        _splits([("1", "train"), ("2", "train"), ("3", "tuning")]),
        {},
        SplitError,
        r"subject_id of dtype String; expected an integer type",
    ),
    (
        "splits_without_split_column",
        pl.DataFrame({"subject_id": [1, 2, 3], "fold": ["train"] * 3}),
        {},
        SplitError,
        r"miss column\(s\) \['split'\]",
    ),
]


@pytest.mark.parametrize(
    ("splits", "kwargs", "error", "match"), [c[1:] for c in COHORT_DEFECTS], ids=[c[0] for c in COHORT_DEFECTS]
)
def test_malformed_outcomes_and_splits_are_rejected_and_files_untouched(
    meds: Any,
    tmp_path: Path,
    splits: pl.DataFrame | None,
    kwargs: dict[str, Any],
    error: type,
    match: str,
) -> None:
    root = meds.write_root(tmp_path / "root", meds.valid_events(), splits=splits)
    meds.assert_rejected(root, error, match, **kwargs)


def test_outcome_on_a_static_row_is_rejected(meds: Any, tmp_path: Path) -> None:
    events = pl.concat([meds.valid_events(), meds.events([(3, None, "MEDS_DEATH")])]).sort(
        "subject_id", "time", maintain_order=True, nulls_last=False
    )
    root = meds.write_root(tmp_path / "root", events, splits=meds.VALID_SPLITS)
    meds.assert_rejected(
        root, OutcomeError, r"'MEDS_DEATH' appears on a static row \(null time\) for subject 3", outcomes=["MEDS_DEATH"]
    )


def test_a_single_outcome_string_is_accepted(meds: Any) -> None:
    cohort = Cohort.from_events(meds.valid_events(), outcomes="TRANSPLANT", splits=meds.VALID_SPLITS)
    assert cohort.outcomes == ("TRANSPLANT",)


# ------------------------------------------------------------------ labels on hand-built subjects


def _cohort(meds: Any, rows: list[tuple[Any, ...]], splits: dict[int, str] | None = None) -> Cohort:
    """A cohort of hand-written rows; outcomes are those of OUTCOMES that occur (both must be known codes)."""
    frame = meds.events(rows)
    ids = sorted(set(frame["subject_id"].to_list()))
    outcomes = [o for o in OUTCOMES if o in frame["code"].to_list()]
    return Cohort.from_events(frame, outcomes=outcomes, splits=splits or {i: "train" for i in ids})


def _day(t: dt.datetime) -> float:
    return (t - BASE) / dt.timedelta(days=1)


def _table(labels: pl.DataFrame) -> list[tuple[Any, ...]]:
    """(subject, landmark or prediction day, event, event day, duration days), times as days after BASE."""
    return [
        (
            r["subject_id"],
            r["landmark_days"] if r["landmark_days"] is not None else round(_day(r["prediction_time"]), 9),
            r["event"],
            round(_day(r["event_time"]), 9),
            round(r["duration_days"], 9),
        )
        for r in labels.iter_rows(named=True)
    ]


def test_label_table_for_hand_built_subjects(meds: Any) -> None:
    cohort = _cohort(
        meds,
        [
            # 1: dies on day 10
            (1, 0, "LAB//x", 1.0),
            (1, 10, "MEDS_DEATH"),
            # 2: censored at END_OF_FOLLOWUP on day 100 (a later EOF-less lab does not extend it)
            (2, 0, "LAB//x", 1.0),
            (2, 30, "LAB//x", 2.0),
            (2, 100, "END_OF_FOLLOWUP"),
            (2, 120, "LAB//x", 3.0),
            # 3: competing outcome first: transplant on day 20, death on day 60 is ignored
            (3, 0, "LAB//x", 1.0),
            (3, 20, "TRANSPLANT"),
            (3, 60, "MEDS_DEATH"),
            # 4: no END_OF_FOLLOWUP: censored at the last timed event (day 70)
            (4, 0, "LAB//x", 1.0),
            (4, 70, "LAB//x", 2.0),
            # 5: time zero is day 3, not the birth 10 000 days earlier; two EOFs, the latest counts
            (5, None, "SEX//f"),
            (5, -10_000, "MEDS_BIRTH"),
            (5, 3, "LAB//x", 1.0),
            (5, 40, "END_OF_FOLLOWUP"),
            (5, 103, "END_OF_FOLLOWUP"),
            # 6: dies after its END_OF_FOLLOWUP: follow-up extends to the death
            (6, 0, "LAB//x", 1.0),
            (6, 50, "END_OF_FOLLOWUP"),
            (6, 80, "MEDS_DEATH"),
        ],
    )
    got = _table(cohort.labels(landmarks=[0, 0.25, 10, 50, 100]))
    expected = [
        (1, 0.0, "MEDS_DEATH", 10.0, 10.0),
        (1, 0.25, "MEDS_DEATH", 10.0, 9.75),
        # landmark 10: death exactly at the prediction time -> not at risk
        (2, 0.0, None, 100.0, 100.0),
        (2, 0.25, None, 100.0, 99.75),
        (2, 10.0, None, 100.0, 90.0),
        (2, 50.0, None, 100.0, 50.0),
        # landmark 100: follow-up ends at (not after) the prediction time -> not at risk
        (3, 0.0, "TRANSPLANT", 20.0, 20.0),
        (3, 0.25, "TRANSPLANT", 20.0, 19.75),
        (3, 10.0, "TRANSPLANT", 20.0, 10.0),
        # landmark 50: transplanted on day 20 -> not at risk, although death (day 60) is still ahead
        (4, 0.0, None, 70.0, 70.0),
        (4, 0.25, None, 70.0, 69.75),
        (4, 10.0, None, 70.0, 60.0),
        (4, 50.0, None, 70.0, 20.0),
        (5, 0.0, None, 103.0, 100.0),
        (5, 0.25, None, 103.0, 99.75),
        (5, 10.0, None, 103.0, 90.0),
        (5, 50.0, None, 103.0, 50.0),
        # landmark 100 = day 103 = end of follow-up -> not at risk
        (6, 0.0, "MEDS_DEATH", 80.0, 80.0),
        (6, 0.25, "MEDS_DEATH", 80.0, 79.75),
        (6, 10.0, "MEDS_DEATH", 80.0, 70.0),
        (6, 50.0, "MEDS_DEATH", 80.0, 30.0),
    ]
    assert got == expected
    subjects = cohort.subjects.select(
        "subject_id", time_zero=pl.col("time_zero"), end=pl.col("end_of_followup"), outcome=pl.col("outcome")
    )
    assert [(s, _day(z), _day(e), o) for s, z, e, o in subjects.rows()] == [
        (1, 0.0, 10.0, "MEDS_DEATH"),
        (2, 0.0, 100.0, None),
        (3, 0.0, 60.0, "TRANSPLANT"),
        (4, 0.0, 70.0, None),
        (5, 3.0, 103.0, None),
        (6, 0.0, 80.0, "MEDS_DEATH"),
    ]


def test_outcome_just_after_the_prediction_time(meds: Any) -> None:
    cohort = _cohort(meds, [(1, 0, "LAB//x", 1.0), (1, 10, "MEDS_DEATH")])
    one_second = 1 / 86_400
    labels = cohort.labels(landmarks=[10 - one_second, 10, 10 + one_second])
    assert labels["landmark_days"].to_list() == [10 - one_second]
    assert labels["event"].to_list() == ["MEDS_DEATH"]
    assert labels["duration_days"][0] == pytest.approx(one_second, rel=1e-9)
    assert labels["prediction_time"][0] == BASE + dt.timedelta(days=10, seconds=-1)


def test_outcome_at_time_zero_means_never_at_risk(meds: Any) -> None:
    cohort = _cohort(meds, [(1, 0, "MEDS_DEATH"), (2, 0, "LAB//x", 1.0), (2, 5, "TRANSPLANT")])
    assert _table(cohort.labels(landmarks=[0])) == [(2, 0.0, "TRANSPLANT", 5.0, 5.0)]


def test_outcome_ties_go_to_the_earlier_outcome_code(meds: Any) -> None:
    # The input order (TRANSPLANT first) must not matter: MEDS_DEATH is listed first in the outcomes.
    cohort = _cohort(meds, [(1, 0, "LAB//x", 1.0), (1, 9, "TRANSPLANT"), (1, 9, "MEDS_DEATH")])
    assert cohort.labels(landmarks=[1])["event"].to_list() == ["MEDS_DEATH"]


def test_explicit_prediction_times(meds: Any) -> None:
    cohort = _cohort(
        meds,
        [
            (1, 0, "LAB//x", 1.0),
            (1, 10, "MEDS_DEATH"),
            (5, -10_000, "MEDS_BIRTH"),
            (5, 3, "LAB//x", 1.0),
            (5, 103, "END_OF_FOLLOWUP"),
        ],
    )
    pt = pl.DataFrame(
        {
            "subject_id": [5, 1, 1, 5, 1],
            # day 0 is before subject 5's time zero (day 3): at risk by the rules, labelled from day 0
            "prediction_time": [BASE, BASE + dt.timedelta(days=2.5), BASE + dt.timedelta(days=10), BASE, BASE],
        }
    ).with_columns(pl.col("subject_id").cast(pl.Int32))
    got = cohort.labels(prediction_times=pt)
    assert got["landmark_days"].null_count() == got.height
    assert _table(got) == [
        (1, 0.0, "MEDS_DEATH", 10.0, 10.0),
        (1, 2.5, "MEDS_DEATH", 10.0, 7.5),
        # day 10: death at the prediction time -> left out; the duplicated (5, day 0) row counts once
        (5, 0.0, None, 103.0, 103.0),
    ]
    assert got.schema["prediction_time"] == pl.Datetime("us")


@pytest.mark.parametrize(
    ("prediction_times", "error", "match"),
    [
        (pl.DataFrame({"subject_id": [1, 999], "prediction_time": [BASE, BASE]}), SplitError, r"names subject 999"),
        (pl.DataFrame({"subject_id": [1]}), ConfigError, r"missing \['prediction_time'\]"),
        (
            pl.DataFrame({"subject_id": [1], "prediction_time": ["2020-01-01"]}),
            ConfigError,
            r"'prediction_time' must be a naive Datetime.*got String",
        ),
        (
            pl.DataFrame({"subject_id": [1], "prediction_time": [BASE]}).with_columns(
                pl.col("prediction_time").dt.replace_time_zone("UTC")
            ),
            ConfigError,
            r"must be a naive Datetime",
        ),
        (
            pl.DataFrame({"subject_id": ["1"], "prediction_time": [BASE]}),
            ConfigError,
            r"'subject_id' must be integer; got String",
        ),
        (
            pl.DataFrame({"subject_id": [1, 1], "prediction_time": [BASE, None]}),
            ConfigError,
            r"null subject_id or prediction_time \(first: subject 1, time None\)",
        ),
    ],
    ids=["unknown_subject", "missing_column", "string_times", "zoned_times", "string_ids", "null_time"],
)
def test_bad_prediction_times(meds: Any, prediction_times: pl.DataFrame, error: type, match: str) -> None:
    cohort = _cohort(meds, [(1, 0, "LAB//x", 1.0), (1, 10, "MEDS_DEATH")])
    with pytest.raises(error, match=match):
        cohort.labels(prediction_times=prediction_times)


def test_subjects_with_only_static_rows_or_only_birth_are_never_at_risk(meds: Any) -> None:
    cohort = _cohort(
        meds,
        [
            (1, 0, "LAB//x", 1.0),
            (1, 10, "MEDS_DEATH"),
            (2, None, "SEX//f"),
            (3, None, "SEX//m"),
            (3, -5, "MEDS_BIRTH"),
        ],
    )
    assert cohort.labels(landmarks=[0, 1, 100])["subject_id"].unique().to_list() == [1]
    pt = pl.DataFrame({"subject_id": [2, 3, 3], "prediction_time": [BASE, BASE - dt.timedelta(days=10), BASE]})
    assert cohort.labels(prediction_times=pt).height == 0
    sub = cohort.subjects.filter(pl.col("subject_id") > 1)
    assert sub["time_zero"].null_count() == 2 and sub["end_of_followup"].null_count() == 2
    assert sub["birth_time"].to_list() == [None, BASE - dt.timedelta(days=5)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"landmarks": [10, -1]}, r"Landmarks must be finite days >= 0 after time zero; got -1"),
        ({"landmarks": [float("nan")]}, r"got nan"),
        ({"landmarks": [float("inf")]}, r"got inf"),
        ({"landmarks": "365"}, r"must be a sequence of days; got the string '365'"),
        ({"landmarks": ["a year"]}, r"must be numbers of days"),
        ({}, r"Give exactly one of 'landmarks'"),
        (
            {"landmarks": [1], "prediction_times": pl.DataFrame({"subject_id": [1], "prediction_time": [BASE]})},
            r"Give exactly one of 'landmarks'",
        ),
    ],
    ids=["negative", "nan", "inf", "string", "non_numeric", "neither", "both"],
)
def test_bad_landmarks(meds: Any, kwargs: dict[str, Any], match: str) -> None:
    cohort = _cohort(meds, [(1, 0, "LAB//x", 1.0), (1, 10, "MEDS_DEATH")])
    with pytest.raises(ConfigError, match=match):
        cohort.labels(**kwargs)


def test_duplicate_landmarks_count_once(meds: Any) -> None:
    cohort = _cohort(meds, [(1, 0, "LAB//x", 1.0), (1, 10, "MEDS_DEATH")])
    assert cohort.labels(landmarks=[5, 1, 5])["landmark_days"].to_list() == [1.0, 5.0]


def test_split_filtering(meds: Any) -> None:
    rows = [r for i in range(1, 5) for r in [(i, 0, "LAB//x", 1.0), (i, 10, "MEDS_DEATH")]]
    cohort = _cohort(meds, rows, splits={1: "train", 2: "held_out", 3: "tuning", 4: "held_out"})
    assert cohort.labels(landmarks=[1], split="held_out")["subject_id"].to_list() == [2, 4]
    assert cohort.labels(landmarks=[1], split="train")["subject_id"].to_list() == [1]
    pt = pl.DataFrame({"subject_id": [1, 2], "prediction_time": [BASE, BASE]})
    assert cohort.labels(prediction_times=pt, split="held_out")["subject_id"].to_list() == [2]
    with pytest.raises(SplitError, match=r"Unknown split 'heldout'.*Did you mean 'held_out'"):
        cohort.labels(landmarks=[1], split="heldout")  # type: ignore[arg-type]


def test_labels_on_an_empty_result_keep_the_schema(meds: Any) -> None:
    cohort = _cohort(meds, [(1, 0, "LAB//x", 1.0), (1, 10, "MEDS_DEATH")])
    got = cohort.labels(landmarks=[500])
    assert got.height == 0
    assert dict(got.schema) == {
        "subject_id": pl.Int64,
        "prediction_time": pl.Datetime("us"),
        "landmark_days": pl.Float64,
        "event": pl.String,
        "event_time": pl.Datetime("us"),
        "duration_days": pl.Float64,
    }


def test_duration_to_days_is_correctly_rounded_whatever_the_length() -> None:
    microseconds = 430_200_000_000  # 4.979166...: x / 86.4e9 and x * (1 / 86.4e9) differ in the last bit
    for n in (1, 2, 17):
        frame = pl.DataFrame({"d": [dt.timedelta(microseconds=microseconds)] * n + [None]})
        got = frame.select(duration_to_days(pl.col("d")))["d"].to_list()
        assert got == [microseconds / 86_400_000_000] * n + [None]


def test_duration_helpers_round_trip() -> None:
    days = [0.0, 0.25, 1 / 86_400, 365.25, 10_000.5]
    frame = pl.DataFrame({"d": days}).with_columns(back=duration_to_days(days_to_duration(pl.col("d"))))
    assert frame["back"].to_list() == pytest.approx(days, abs=1e-11)


# ------------------------------------------------------------------ property test against a reference

LABS = ("LAB//a", "LAB//b")
CODES = (*LABS, "MEDS_BIRTH", "END_OF_FOLLOWUP", *OUTCOMES)


def _reference_subjects(rows: Sequence[tuple[int, dt.datetime | None, str]]) -> dict[int, dict[str, Any]]:
    """Naive reading of DESIGN.md: time zero, end of follow-up and the first outcome of each subject."""
    out: dict[int, dict[str, Any]] = {}
    for sid in sorted({r[0] for r in rows}):
        timed = [(t, c) for s, t, c in rows if s == sid and t is not None]
        not_birth = [t for t, c in timed if c != "MEDS_BIRTH"]
        eofs = [t for t, c in timed if c == "END_OF_FOLLOWUP"]
        outcome_events = sorted((t, OUTCOMES.index(c), c) for t, c in timed if c in OUTCOMES)
        first = (outcome_events[0][0], outcome_events[0][2]) if outcome_events else None
        end = max(eofs) if eofs else (max(not_birth) if not_birth else None)
        if first is not None and end is not None and first[0] > end:
            end = first[0]
        out[sid] = {"zero": min(not_birth) if not_birth else None, "end": end, "first": first}
    return out


def _reference_label(subject: dict[str, Any], t: dt.datetime) -> tuple[str | None, dt.datetime, float] | None:
    """(event, event_time, duration_days) of a subject at t, or None when it is not at risk."""
    first, end = subject["first"], subject["end"]
    if first is not None and first[0] <= t:
        return None
    if end is None or not end > t:
        return None
    event, when = (first[1], first[0]) if first is not None else (None, end)
    return event, when, (when - t) / dt.timedelta(days=1)


def _frame(rows: Sequence[tuple[int, dt.datetime | None, str]]) -> pl.DataFrame:
    # Every lab gets a distinct value, so no two generated rows are duplicates.
    values = [float(i) if c in LABS else None for i, (_, _, c) in enumerate(rows)]
    return pl.DataFrame(
        {
            "subject_id": [r[0] for r in rows],
            "time": [r[1] for r in rows],
            "code": [r[2] for r in rows],
            "numeric_value": values,
            "text_value": [None] * len(rows),
        },
        schema=EVENT_SCHEMA,
    )


@st.composite
def event_streams(draw: st.DrawFn) -> list[tuple[int, dt.datetime | None, str]]:
    """Small random streams; subject 0 guarantees both outcomes occur. Nothing is timed after a death."""
    rows: list[tuple[int, dt.datetime | None, str]] = [
        (0, BASE, "LAB//a"),
        (0, BASE + dt.timedelta(days=5), "TRANSPLANT"),
        (0, BASE + dt.timedelta(days=7), "MEDS_DEATH"),
    ]
    for sid in range(1, draw(st.integers(1, 5)) + 1):
        if draw(st.booleans()):
            rows.append((sid, None, "SEX//x"))
        day = st.integers(-5, 40)  # half days, so ties and fractional durations are common
        events = draw(st.lists(st.tuples(day, st.sampled_from(CODES)), max_size=8, unique=True))
        # Extra END_OF_FOLLOWUPs and outcomes, so several per subject are common, and optionally both
        # outcomes at the same time in random input order.
        events += [(d, "END_OF_FOLLOWUP") for d in draw(st.lists(day, max_size=2, unique=True))]
        events += draw(st.lists(st.tuples(day, st.sampled_from(OUTCOMES)), max_size=2, unique=True))
        tie = draw(st.none() | st.tuples(day, st.permutations(OUTCOMES)))
        if tie is not None:
            events += [(tie[0], c) for c in tie[1]]
        events = list(dict.fromkeys(events))  # distinct (day, code), first drawn order kept
        deaths = [d for d, c in events if c == "MEDS_DEATH"]
        death = min(deaths) if deaths else None
        for d, c in sorted(events, key=lambda e: e[0]):  # ties keep the drawn order (not the code order)
            if death is None or d <= death:
                rows.append((sid, BASE + dt.timedelta(days=d / 2), c))
    return rows


def _labels_by_key(labels: pl.DataFrame) -> dict[tuple[int, dt.datetime], tuple[Any, ...]]:
    return {
        (r["subject_id"], r["prediction_time"]): (r["event"], r["event_time"], r["duration_days"])
        for r in labels.iter_rows(named=True)
    }


def _assert_matches_reference(
    got: dict[tuple[int, dt.datetime], tuple[Any, ...]],
    reference: dict[int, dict[str, Any]],
    samples: list[tuple[int, dt.datetime]],
) -> None:
    expected = {}
    for sid, t in samples:
        label = _reference_label(reference[sid], t)
        if label is not None:
            expected[(sid, t)] = label
    assert set(got) == set(expected)
    for key, (event, when, duration) in expected.items():
        assert got[key][:2] == (event, when), key
        assert got[key][2] == pytest.approx(duration, rel=1e-12, abs=1e-9), key


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=event_streams(),
    minutes=st.lists(st.integers(0, 30 * 1440) | st.integers(0, 60).map(lambda k: 720 * k), min_size=1, max_size=4),
    offsets=st.lists(st.integers(-6 * 48, 25 * 48), min_size=1, max_size=4),
)
def test_labels_agree_with_a_naive_reference(
    rows: list[tuple[int, dt.datetime | None, str]], minutes: list[int], offsets: list[int]
) -> None:
    cohort = Cohort.from_events(_frame(rows), outcomes=OUTCOMES, split_seed=0)
    reference = _reference_subjects(rows)

    # Landmarks, in whole minutes after each subject's time zero.
    got = _labels_by_key(cohort.labels(landmarks=[m / 1440 for m in minutes]))
    samples = [
        (sid, ref["zero"] + dt.timedelta(minutes=m))
        for sid, ref in reference.items()
        if ref["zero"] is not None
        for m in set(minutes)
    ]
    _assert_matches_reference(got, reference, samples)

    # Explicit prediction times on a half-hour grid (also before time zero and after follow-up), and exactly
    # at every event time (the boundaries of "at or before" and "after").
    explicit = [(sid, BASE + dt.timedelta(minutes=30 * o)) for sid in reference for o in offsets]
    explicit += [(sid, t) for sid, t, _ in rows if t is not None]
    pt = pl.DataFrame({"subject_id": [s for s, _ in explicit], "prediction_time": [t for _, t in explicit]})
    _assert_matches_reference(_labels_by_key(cohort.labels(prediction_times=pt)), reference, explicit)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=event_streams(),
    offsets=st.lists(st.integers(-48, 12 * 48), min_size=7, max_size=7),
    added=st.lists(st.tuples(st.integers(1, 30 * 48), st.sampled_from(LABS)), max_size=4),
    change_values=st.booleans(),
)
def test_events_after_the_prediction_time_do_not_change_the_label(
    rows: list[tuple[int, dt.datetime | None, str]],
    offsets: list[int],
    added: list[tuple[int, str]],
    change_values: bool,
) -> None:
    """Appending labs after t, or changing the labs after t, leaves labels as they were, except that
    censoring may move later when the new events extend follow-up (no END_OF_FOLLOWUP)."""
    frame = _frame(rows)
    ref_before = _reference_subjects(rows)
    sids = sorted(ref_before)
    # One prediction time per subject, in half hours around its time zero, so most are inside follow-up.
    t_of = {sid: (ref_before[sid]["zero"] or BASE) + dt.timedelta(minutes=30 * offsets[sid]) for sid in sids}
    pt = pl.DataFrame({"subject_id": sids, "prediction_time": [t_of[sid] for sid in sids]})

    deaths = frame.filter(pl.col("code") == "MEDS_DEATH").group_by("subject_id").agg(pl.col("time").min())
    death_of = dict(deaths.iter_rows())
    extra = []  # labs strictly after each subject's t, never after its death
    for sid in sids:
        for k, code in added:
            when = t_of[sid] + dt.timedelta(minutes=30 * k)
            if death_of.get(sid) is None or when <= death_of[sid]:
                extra.append((sid, when, code))
    changed = frame
    if change_values:
        later = pl.col("time") > pl.col("subject_id").replace_strict(t_of, return_dtype=pl.Datetime("us"))
        changed = frame.with_columns(
            numeric_value=pl.when(later & pl.col("code").is_in(list(LABS)))
            .then(-pl.col("numeric_value") - 1)
            .otherwise(pl.col("numeric_value"))
        )
    extra_frame = _frame(extra).with_columns(pl.col("numeric_value") + 10_000)  # distinct from the rest
    perturbed = pl.concat([changed, extra_frame]).sort("subject_id", "time", maintain_order=True, nulls_last=False)

    before = _labels_by_key(Cohort.from_events(frame, outcomes=OUTCOMES).labels(prediction_times=pt))
    after = _labels_by_key(Cohort.from_events(perturbed, outcomes=OUTCOMES).labels(prediction_times=pt))
    ref_after = _reference_subjects([*rows, *extra])
    for sid in sids:
        t = t_of[sid]
        key, end_before, end_after = (sid, t), ref_before[sid]["end"], ref_after[sid]["end"]
        if end_after == end_before:
            assert after.get(key) == before.get(key), sid
            continue
        # Only labs after t were added: follow-up can only grow (or start, for a subject with static rows only).
        assert end_after is not None and (end_before is None or end_after > end_before)
        expected = _reference_label(ref_after[sid], t)
        if key in before:
            event, when, _ = before[key]
            if event is None:  # censored, now later
                assert after[key][:2] == (None, end_after) and end_after > when, sid
            else:  # an observed outcome is never changed by later labs
                assert after[key] == before[key], sid
        else:  # not at risk before: now at risk exactly when follow-up used to end at or before t
            assert (key in after) == (expected is not None), sid
            if expected is not None:
                assert end_before is None or end_before <= t < end_after
                assert after[key][:2] == expected[:2], sid


# ------------------------------------------------------------------ seeded split


@pytest.mark.parametrize("n", [1, 2, 7, 10, 33, 100, 1001])
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (1 / 3, 1 / 3, 1 / 3), (1.0, 0.0, 0.0)])
def test_seeded_split_respects_fractions(n: int, fractions: tuple[float, float, float]) -> None:
    ids = pl.Series(np.arange(n) * 7 + 3)
    split = seeded_split(ids, seed=0, fractions=fractions)
    assert split["subject_id"].to_list() == sorted(ids.to_list())  # every subject exactly once
    assert split["split"].is_in(list(SPLITS)).all()
    counts = dict(split.group_by("split").len().iter_rows())
    for name, fraction in zip(SPLITS, fractions, strict=True):
        assert abs(counts.get(name, 0) - fraction * n) <= 1, (name, counts)


def test_seeded_split_is_deterministic_and_seed_dependent() -> None:
    ids = pl.Series(np.arange(200))
    a = seeded_split(ids, seed=0)
    assert_frame_equal(a, seeded_split(ids, seed=0))
    assert_frame_equal(a, seeded_split(ids.reverse(), seed=0))  # only the set of ids matters
    assert not a["split"].equals(seeded_split(ids, seed=1)["split"])


def test_seeded_split_via_from_events(meds: Any) -> None:
    rows = [(i, 0, "LAB//x", 1.0) for i in range(40)] + [(0, 3, "MEDS_DEATH")]
    frame = meds.events(rows).sort("subject_id", "time")
    a = Cohort.from_events(frame, split_seed=5)
    assert_frame_equal(a.splits, Cohort.from_events(frame, split_seed=5).splits)
    assert not a.splits.equals(Cohort.from_events(frame, split_seed=6).splits)
    assert a.splits.height == 40 and a.splits["subject_id"].n_unique() == 40


@pytest.mark.parametrize(
    "fractions",
    [(0.5, 0.5), (0.7, 0.2, 0.2), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5), (0.5, 0.5, 0.0, 0.0), ("a", 0, 1)],
    ids=["two", "sum_above_one", "negative", "nan", "four", "string"],
)
def test_invalid_split_fractions(meds: Any, fractions: Any) -> None:
    with pytest.raises(ConfigError, match=r"split_fractions must be three"):
        Cohort.from_events(meds.valid_events(), split_fractions=fractions)


# ------------------------------------------------------------------ describe and subset


def _describe_cohort(meds: Any) -> Cohort:
    rows = [
        (1, None, "SEX//f"),
        (1, 0, "LAB//x", 1.0),
        (1, 1, "NOTE//n", None, "text"),
        (1, 10, "MEDS_DEATH"),
        (2, 0, "LAB//y", 2.0),
        (2, 2, "IMAGE//ct"),
        (2, 30, "END_OF_FOLLOWUP"),
        (3, 0, "TREATMENT//d", 5.0),
        (3, 4, "LAB//x", 3.0),
        (3, 20, "TRANSPLANT"),
        (4, None, "SEX//m"),
    ]
    return _cohort(meds, rows, splits={1: "train", 2: "train", 3: "held_out", 4: "tuning"})


def test_describe_counts_match_a_hand_count(meds: Any) -> None:
    d = _describe_cohort(meds).describe()
    assert d["split"].to_list() == ["train", "tuning", "held_out", "all"]
    rows = {r["split"]: r for r in d.iter_rows(named=True)}
    # train: subjects 1, 2; 7 events; 1 death, 1 censored; follow-up 10 and 30 days.
    columns = ["subjects", "events", "n_MEDS_DEATH", "n_TRANSPLANT", "n_censored", "median_followup_days"]
    columns += ["n_static", "n_measurement", "n_note", "n_image", "n_treatment", "n_event", "measurement_codes"]
    expect = {
        # train: subjects 1 (death, day 10) and 2 (censored, day 30): 4 + 3 events
        "train": (2, 7, 1, 0, 1, 20.0, 1, 2, 1, 1, 0, 2, 2),
        # tuning: subject 4, a single static row, no follow-up
        "tuning": (1, 1, 0, 0, 1, None, 1, 0, 0, 0, 0, 0, 0),
        # held_out: subject 3 (transplant, day 20)
        "held_out": (1, 3, 0, 1, 0, 20.0, 0, 1, 0, 0, 1, 1, 1),
        "all": (4, 11, 1, 1, 2, 20.0, 2, 3, 1, 1, 1, 3, 2),
    }
    for split, values in expect.items():
        assert tuple(rows[split][k] for k in columns) == values, split


def test_subset_keeps_only_those_subjects(meds: Any) -> None:
    cohort = _describe_cohort(meds)
    sub = cohort.subset([3, 1])
    assert sub.subject_ids() == [1, 3]
    assert_frame_equal(sub.events, cohort.events.filter(pl.col("subject_id").is_in([1, 3])))
    assert_frame_equal(sub.splits, cohort.splits.filter(pl.col("subject_id").is_in([1, 3])))
    assert_frame_equal(sub.subjects, cohort.subjects.filter(pl.col("subject_id").is_in([1, 3])))
    assert sub.outcomes == cohort.outcomes and sub.metadata == cohort.metadata
    assert cohort.subset(split="train").subject_ids() == [1, 2]
    assert cohort.subset([1, 3], split="train").subject_ids() == [1]
    assert cohort.n_subjects == 4  # the original is unchanged
    with pytest.raises(SplitError, match=r"subset\(\) names subject 99 \(1 unknown in all\)"):
        cohort.subset([1, 99])


def test_views(meds: Any) -> None:
    cohort = _describe_cohort(meds)
    assert cohort.statics()["code"].to_list() == ["SEX//f", "SEX//m"]
    assert cohort.subject_ids("train") == [1, 2]
    assert cohort.primary_outcome == "MEDS_DEATH"
    assert "modality" in cohort.events_with_modality().columns
    assert repr(cohort).startswith("Cohort('unnamed': 4 subjects (train=2, tuning=1, held_out=1), 11 events")
    with pytest.raises(SplitError, match="Unknown split 'test'"):
        cohort.subject_ids("test")  # type: ignore[arg-type]


def test_with_events_revalidates(meds: Any) -> None:
    cohort = _describe_cohort(meds)
    fewer = cohort.with_events(cohort.events.filter(pl.col("subject_id") != 4))
    assert fewer.subject_ids() == [1, 2, 3]
    with pytest.raises(SplitError, match=r"Subject 9 .* has events but no split"):
        cohort.with_events(pl.concat([cohort.events, meds.events([(9, 0, "LAB//x", 1.0)])]))


# ------------------------------------------------------------------ scale


@pytest.mark.slow
def test_five_million_events(capsys: pytest.CaptureFixture[str]) -> None:
    """from_events on 5 million events (50 000 subjects): correct subject table; prints the time taken."""
    import time

    rng = np.random.default_rng(0)
    n_subjects, per = 50_000, 100
    sid = np.repeat(np.arange(n_subjects, dtype=np.int64), per)
    start = np.datetime64("2000-01-01", "us").astype(np.int64) + rng.integers(0, 3650, n_subjects) * 86_400_000_000
    offsets = np.sort(rng.integers(1, 3650 * 86_400_000_000, (n_subjects, per)), axis=1)
    offsets[:, 0] = 0
    time_us = (start[:, None] + offsets).ravel()
    codes = np.array(["LAB//a", "LAB//b", "TREATMENT//x", "NOTE//n"], dtype=object)[rng.integers(0, 4, sid.size)]
    dies = rng.random(n_subjects) < 0.3
    codes[per - 1 :: per] = np.where(dies, "MEDS_DEATH", "END_OF_FOLLOWUP")
    frame = pl.DataFrame(
        {
            "subject_id": sid,
            "time": pl.Series(time_us).cast(pl.Datetime("us")),
            "code": pl.Series(codes, dtype=pl.String),
            "numeric_value": rng.normal(size=sid.size).astype(np.float32),
            "text_value": pl.Series([None] * sid.size, dtype=pl.String),
        }
    )
    began = time.perf_counter()
    cohort = Cohort.from_events(frame)
    elapsed = time.perf_counter() - began
    with capsys.disabled():
        print(f"\nCohort.from_events on {frame.height:,} events: {elapsed:.2f} s")
    assert cohort.n_subjects == n_subjects
    assert cohort.subjects["outcome"].drop_nulls().len() == int(dies.sum())
    ends = (start + offsets[:, -1]).astype("datetime64[us]")
    assert (cohort.subjects["end_of_followup"].to_numpy() == ends).all()
    assert cohort.labels(landmarks=[0]).height == n_subjects
