"""Tests of migpt_traj.data.schema: event-level defects, lossless casts and sorting.

Every malformed input is a MEDS root written to tmp_path and read with ``Cohort.from_meds``, the way a user
meets it; each case checks the error type, that the message names the column / subject / value, and that the
input files are byte-identical afterwards.
"""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from migpt_traj.data.cohort import Cohort
from migpt_traj.data.schema import (
    EVENT_SCHEMA,
    OPTIONAL_COLUMNS,
    CodeConventions,
    cast_to_schema,
    sort_events,
    validate_events,
)
from migpt_traj.errors import (
    DuplicateEventError,
    EventOrderError,
    MigptTrajError,
    MigptTrajWarning,
    SchemaError,
    ValueRangeError,
)

Frames = pl.DataFrame | list[pl.DataFrame]


def _replace(column: str, values: list[Any], dtype: Any = None) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda v: v.with_columns(pl.Series(column, values, dtype=dtype))


def _at(code: str, value: Any, column: str, otherwise: str | None = None) -> Callable[[pl.DataFrame], Any]:
    """Set ``column`` to ``value`` on the rows of ``code`` (elsewhere keep ``otherwise`` or the column)."""

    def apply(v: pl.DataFrame) -> pl.DataFrame:
        keep = pl.col(otherwise or column)
        return v.with_columns(pl.when(pl.col("code") == code).then(value).otherwise(keep).alias(column))

    return apply


def _embedding(last: list[float | None]) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """Two-dimensional embeddings on every row, the last row's replaced by ``last``."""
    return lambda v: v.with_columns(
        pl.Series("embedding", [[0.5, 1.5]] * (v.height - 1) + [last], dtype=pl.List(pl.Float64))
    )


# (id, transform of the valid events, error, message pattern). valid_events(): subject 1 dies on day 400
# (2021-02-04); LAB//alb is subject 3's (days 5 and 60, the last row); LAB//bili of subject 2 is on day 10.
EVENT_DEFECTS: list[tuple[str, Callable[[pl.DataFrame], Frames], type[MigptTrajError], str]] = [
    (
        "missing_column",
        lambda v: v.drop("text_value"),
        SchemaError,
        r"missing required column\(s\) \['text_value'\]",
    ),
    (
        "missing_column_in_one_of_two_files",
        lambda v: [v.filter(pl.col("subject_id") == 1), v.filter(pl.col("subject_id") > 1).drop("numeric_value")],
        SchemaError,
        r"data/0001\.parquet.* missing required column\(s\) \['numeric_value'\]",
    ),
    (
        "time_as_string",
        lambda v: v.with_columns(pl.col("time").dt.strftime("%Y-%m-%d")),
        SchemaError,
        r"Column 'time' .* has dtype String; expected Datetime.*str\.to_datetime",
    ),
    (
        "code_as_int",
        lambda v: v.with_columns(pl.int_range(pl.len()).alias("code")),
        SchemaError,
        r"Column 'code' .* has dtype Int64; expected String",
    ),
    (
        "subject_id_as_float",
        lambda v: v.with_columns(pl.col("subject_id").cast(pl.Float64)),
        SchemaError,
        r"Column 'subject_id' .* has dtype Float64; expected Int64",
    ),
    (
        "subject_id_beyond_int64",
        lambda v: v.with_columns(pl.col("subject_id").cast(pl.UInt64) + 2**63),
        SchemaError,
        r"Column 'subject_id' .* holds 9223372036854775811, beyond the int64 range",
    ),
    (
        "numeric_value_as_string",
        lambda v: v.with_columns(pl.col("numeric_value").cast(pl.String)),
        SchemaError,
        r"Column 'numeric_value' .* has dtype String; expected Float32",
    ),
    (
        "time_zone_aware_time",
        lambda v: v.with_columns(pl.col("time").dt.replace_time_zone("UTC")),
        SchemaError,
        r"Column 'time' .* has a time zone \(UTC\); MEDS times are naive",
    ),
    (
        "time_zone_aware_available_time",
        lambda v: v.with_columns(available_time=pl.col("time").dt.replace_time_zone("Europe/Paris")),
        SchemaError,
        r"Column 'available_time' .* has a time zone \(Europe/Paris\)",
    ),
    (
        "null_subject_id",
        _at("LAB//alb", None, "subject_id"),
        SchemaError,
        r"Column 'subject_id' .* has 2 null value\(s\) \(first: subject None, time 2020-01-06.*'LAB//alb'\)",
    ),
    (
        "null_code",
        _at("NOTE//progress", None, "code"),
        SchemaError,
        r"Column 'code' .* has 1 null value\(s\) \(first: subject 2, time 2020-01-21",
    ),
    (
        "nan_numeric_value",
        _at("LAB//alb", float("nan"), "numeric_value"),
        ValueRangeError,
        r"'numeric_value' .* non-finite value nan at subject 3, time 2020-01-06 .*'LAB//alb' \(2 such row",
    ),
    (
        "inf_numeric_value",
        _at("NOTE//progress", float("-inf"), "numeric_value"),
        ValueRangeError,
        r"'numeric_value' .* non-finite value -inf at subject 2, time 2020-01-21 .*'NOTE//progress'",
    ),
    (
        "numeric_value_beyond_float32",
        lambda v: _at("LAB//alb", 1e39, "numeric_value")(v.with_columns(pl.col("numeric_value").cast(pl.Float64))),
        ValueRangeError,
        r"'numeric_value' .* holds 1e\+39 at subject 3, .* outside the float32 range",
    ),
    (
        "embeddings_of_inconsistent_length",
        _embedding([0.5, 1.5, 2.5]),
        ValueRangeError,
        r"'embedding' .* lengths \[2, 3\].*most have 2.*subject 3, time 2020-03-01 .*'LAB//alb', length 3",
    ),
    (
        "embedding_of_length_zero",
        lambda v: v.with_columns(pl.Series("embedding", [[]] * v.height, dtype=pl.List(pl.Float32))),
        ValueRangeError,
        r"'embedding' .* lengths \[0\]; all must have the same non-zero length",
    ),
    (
        "non_finite_embedding",
        _embedding([0.5, float("nan")]),
        ValueRangeError,
        r"'embedding' .* non-finite values .* at subject 3, time 2020-03-01 .*'LAB//alb' \(1 such row",
    ),
    (
        "null_inside_embedding",
        _embedding([None, 1.0]),
        ValueRangeError,
        r"'embedding' .* null entries .* at subject 3, time 2020-03-01",
    ),
    (
        "embedding_of_strings",
        lambda v: v.with_columns(pl.Series("embedding", [["a"]] * v.height)),
        SchemaError,
        r"Column 'embedding' .* has dtype List\(String\); expected List\(Float32\)",
    ),
    (
        "duplicate_rows",
        lambda v: pl.concat([v, v.filter(pl.col("code") == "NOTE//progress")]).sort("subject_id", maintain_order=True),
        DuplicateEventError,
        r"2 duplicated event row\(s\) .*first: subject 2, time 2020-01-21 .*'NOTE//progress'",
    ),
    (
        "event_after_death",
        lambda v: pl.concat([v[:5], v[3:4].with_columns(pl.col("time") + pl.duration(days=365)), v[5:]]),
        EventOrderError,
        r"subject 1 has code 'LAB//bili' at 2021-04-10 00:00:00, after 'MEDS_DEATH' at 2021-02-04 00:00:00",
    ),
    (
        "available_time_before_time",
        lambda v: v.with_columns(
            available_time=pl.when(pl.col("code") == "TRANSPLANT")
            .then(pl.col("time") - pl.duration(hours=1))
            .otherwise(pl.col("time"))
        ),
        EventOrderError,
        r"'available_time' .* before 'time' at subject 3, time 2020-02-20 00:00:00, code 'TRANSPLANT' "
        r"\(available 2020-02-19 23:00:00",
    ),
    (
        "available_time_on_static_row",
        lambda v: v.with_columns(available_time=pl.col("time").fill_null(dt.datetime(2020, 1, 1))),
        SchemaError,
        r"'available_time' .* static row .* subject 1, time None, code 'SEX//female'",
    ),
]


@pytest.mark.parametrize(
    ("transform", "error", "match"), [c[1:] for c in EVENT_DEFECTS], ids=[c[0] for c in EVENT_DEFECTS]
)
def test_malformed_events_are_rejected_and_files_untouched(
    meds: Any, tmp_path: Path, transform: Callable[[pl.DataFrame], Frames], error: type, match: str
) -> None:
    root = meds.write_root(tmp_path / "root", transform(meds.valid_events()), splits=meds.VALID_SPLITS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MigptTrajWarning)  # some defects also leave rows unsorted
        meds.assert_rejected(root, error, match, outcomes=["MEDS_DEATH", "TRANSPLANT"])


@pytest.mark.parametrize(
    ("transform", "error", "match"), [c[1:] for c in EVENT_DEFECTS if c[0] != "missing_column_in_one_of_two_files"]
)
def test_the_same_defects_are_rejected_in_memory(
    meds: Any, transform: Callable[[pl.DataFrame], Frames], error: type, match: str
) -> None:
    frame = transform(meds.valid_events())
    assert isinstance(frame, pl.DataFrame)
    snapshot = frame.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MigptTrajWarning)
        with pytest.raises(error, match=match.replace("data/0001\\.parquet", "")):
            validate_events(frame, source="events frame")
    assert_frame_equal(frame, snapshot)  # the caller's frame is never modified


def test_errors_are_value_errors(meds: Any) -> None:
    with pytest.raises(ValueError, match="missing required column"):
        validate_events(meds.valid_events().drop("code"), source="x")


def test_not_a_dataframe_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="must be a polars DataFrame of MEDS events; got dict"):
        validate_events({"subject_id": [1]}, source="x")  # type: ignore[arg-type]


def test_lazy_frame_is_collected(meds: Any) -> None:
    assert_frame_equal(
        validate_events(meds.valid_events().lazy(), source="x"), validate_events(meds.valid_events(), source="x")
    )


# ------------------------------------------------------------------ unsorted input


def _is_sorted(frame: pl.DataFrame) -> bool:
    """Independent check: (subject_id, static first, time) never decreases from row to row."""
    keys = [(s, t is not None, t or dt.datetime.min) for s, t in frame.select("subject_id", "time").iter_rows()]
    return all(a <= b for a, b in itertools.pairwise(keys))


def test_unsorted_events_are_sorted_with_a_warning_and_the_file_is_untouched(meds: Any, tmp_path: Path) -> None:
    valid = meds.valid_events()
    shuffled = valid.sample(fraction=1.0, shuffle=True, seed=7)
    assert not _is_sorted(shuffled)
    root = meds.write_root(tmp_path / "root", shuffled, splits=meds.VALID_SPLITS)
    before = meds.tree_hashes(root)
    with pytest.warns(MigptTrajWarning, match=r"data/0000\.parquet.* not sorted by subject_id, time"):
        cohort = Cohort.from_meds(root, outcomes=["MEDS_DEATH"])
    assert meds.tree_hashes(root) == before
    assert _is_sorted(cohort.events)
    # Same rows as the sorted original; the valid stream has no ties, so the order is fully determined.
    assert_frame_equal(cohort.events, valid)


def test_the_sort_warning_points_at_the_caller(meds: Any, tmp_path: Path) -> None:
    shuffled = meds.valid_events().reverse()
    with pytest.warns(MigptTrajWarning, match="not sorted") as record:
        Cohort.from_events(shuffled, splits=meds.VALID_SPLITS)
    root = meds.write_root(tmp_path / "root", shuffled, splits=meds.VALID_SPLITS)
    with pytest.warns(MigptTrajWarning, match="not sorted") as record_meds:
        Cohort.from_meds(root)
    assert [w.filename for w in [*record, *record_meds]] == [__file__, __file__]


def test_sort_keeps_input_order_among_ties(meds: Any) -> None:
    frame = meds.events([(2, 1, "B"), (1, 3, "X"), (1, None, "S2"), (1, 3, "A"), (1, None, "S1"), (1, 2, "Y")])
    with pytest.warns(MigptTrajWarning, match=r"first out of place: row 1, subject 1"):
        out = validate_events(frame, source="frame")
    assert out.select("subject_id", "code").rows() == [(1, "S2"), (1, "S1"), (1, "Y"), (1, "X"), (1, "A"), (2, "B")]


def test_sorted_events_raise_no_warning(meds: Any) -> None:
    frame = meds.valid_events()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = validate_events(frame, source="frame")
    assert out is frame or out.equals(frame)


def test_sort_false_leaves_order(meds: Any) -> None:
    frame = meds.valid_events().reverse()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = validate_events(frame, source="frame", sort=False)
    assert_frame_equal(out, frame)


def test_sort_events_silent_without_source(meds: Any) -> None:
    frame = meds.valid_events().reverse()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _is_sorted(sort_events(frame, source=None))


# ------------------------------------------------------------------ lossless casts


def _loose_dtypes(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.col("subject_id").cast(pl.Int32),
        pl.col("time").cast(pl.Datetime("ns")),
        pl.col("code").cast(pl.Categorical),
        pl.col("numeric_value").cast(pl.Float64),
        pl.Series("embedding", [[1, 2]] * frame.height, dtype=pl.Array(pl.Int16, 2)),
        available_time=pl.col("time").cast(pl.Datetime("ms")),
    )


def test_lossless_casts_are_accepted_from_disk(meds: Any, tmp_path: Path) -> None:
    valid = meds.valid_events()
    root = meds.write_root(tmp_path / "root", _loose_dtypes(valid), splits=meds.VALID_SPLITS)
    assert pl.read_parquet_schema(root / "data" / "0000.parquet")["subject_id"] == pl.Int32
    cohort = Cohort.from_meds(root)
    assert dict(cohort.events.schema) == {
        **EVENT_SCHEMA,
        "embedding": OPTIONAL_COLUMNS["embedding"],
        "available_time": OPTIONAL_COLUMNS["available_time"],
    }
    expected = valid.with_columns(
        pl.Series("embedding", [[1.0, 2.0]] * valid.height, dtype=pl.List(pl.Float32)),
        available_time=pl.col("time"),
    )
    assert_frame_equal(cohort.events, expected)


def test_lossless_casts_are_accepted_in_memory(meds: Any) -> None:
    valid = meds.valid_events()
    out = validate_events(_loose_dtypes(valid).with_columns(image_path=pl.lit(None)), source="frame")
    assert dict(out.schema) == {**EVENT_SCHEMA, **OPTIONAL_COLUMNS}
    assert out["numeric_value"].to_list() == valid["numeric_value"].to_list()


def test_date_time_and_all_null_columns_cast(meds: Any) -> None:
    frame = pl.DataFrame(
        {
            "subject_id": [1, 1],
            "time": [dt.date(2020, 1, 1), dt.date(2020, 1, 2)],
            "code": ["A", "B"],
            "numeric_value": [None, None],
            "text_value": [None, None],
        }
    )
    assert frame.schema["numeric_value"] == pl.Null
    out = validate_events(frame, source="frame")
    assert dict(out.schema) == EVENT_SCHEMA
    assert out["time"].to_list() == [dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 2)]


def test_canonical_column_order_and_extra_columns_kept(meds: Any) -> None:
    valid = meds.valid_events()
    shuffled_columns = valid.with_columns(site=pl.lit("A"), image_path=pl.lit(None, pl.String)).select(
        "site", "code", "image_path", "time", "text_value", "subject_id", "numeric_value"
    )
    out = cast_to_schema(shuffled_columns, source="frame")
    assert out.columns == [*EVENT_SCHEMA, "image_path", "site"]


# ------------------------------------------------------------------ other rules


def test_death_code_comes_from_the_conventions(meds: Any) -> None:
    frame = meds.events([(1, 0, "LAB//x", 1.0), (1, 5, "DIED"), (1, 9, "LAB//x", 2.0)])
    validate_events(frame, source="f")  # 'DIED' is not the default death code
    with pytest.raises(EventOrderError, match=r"subject 1 has code 'LAB//x' .* after 'DIED'"):
        validate_events(frame, source="f", conventions=CodeConventions(death_code="DIED"))


def test_events_at_the_death_time_are_allowed(meds: Any) -> None:
    frame = meds.events([(1, 0, "LAB//x", 1.0), (1, 5, "MEDS_DEATH"), (1, 5, "LAB//x", 2.0)])
    assert validate_events(frame, source="f").height == 3


def test_rows_differing_only_in_embedding_or_image_are_not_duplicates(meds: Any) -> None:
    frame = meds.events(
        [(1, 0, "IMAGE//ct"), (1, 0, "IMAGE//ct")], embedding=[[1.0, 2.0], [3.0, 4.0]], image_path=["a", "b"]
    )
    assert validate_events(frame, source="f").height == 2
    with pytest.raises(DuplicateEventError, match=r"2 duplicated event row\(s\)"):
        validate_events(frame.with_columns(embedding=pl.lit([1.0, 2.0]), image_path=pl.lit("a")), source="f")


def test_duplicate_detection_is_exact_on_many_rows(meds: Any) -> None:
    n = 20_000
    frame = pl.DataFrame(
        {
            "subject_id": pl.int_range(n, eager=True) // 10,
            "time": pl.datetime_range(
                dt.datetime(2000, 1, 1), dt.datetime(2000, 1, 1) + dt.timedelta(hours=n - 1), "1h", eager=True
            ),
            "code": ["LAB//x"] * n,
            "numeric_value": pl.int_range(n, eager=True).cast(pl.Float32),
            "text_value": [None] * n,
        }
    )
    assert validate_events(frame, source="f").height == n
    doubled = pl.concat([frame, frame[[123, 4567]]]).sort("subject_id", "time")
    with pytest.raises(DuplicateEventError, match=r"4 duplicated event row\(s\).*first: subject 12,"):
        validate_events(doubled, source="f")


def test_null_embedding_rows_are_allowed(meds: Any) -> None:
    frame = meds.events([(1, 0, "IMAGE//ct"), (1, 1, "LAB//x", 1.0)], embedding=[[1.0, 2.0], None])
    assert validate_events(frame, source="f")["embedding"].null_count() == 1


def test_modality_expression(meds: Any) -> None:
    frame = meds.events(
        [
            (1, None, "SEX//f"),
            (1, 0, "LAB//x", 1.0),
            (1, 1, "NOTE//a", None, "t"),
            (1, 2, "IMAGE//ct"),
            (1, 3, "TREATMENT//d", 5.0),
            (1, 4, "MEDS_DEATH"),
        ]
    )
    got = frame.select(CodeConventions().modality_expr())["literal"].to_list()
    assert got == ["static", "measurement", "note", "image", "treatment", "event"]
