"""The MEDS event schema, the code conventions, and validation of event frames at the boundary.

The event columns follow DESIGN.md: ``subject_id`` int64, ``time`` timestamp[us] (null = static fact),
``code`` string, ``numeric_value`` float32 (nullable), ``text_value`` string (nullable), and the optional
extensions ``embedding`` list<float32>, ``image_path`` string and ``available_time`` timestamp[us] (when the
fact became known; defaults to ``time``).

Validation happens once, here; everything downstream trusts the canonical frame it returns. Every check is a
vectorised polars expression over the whole frame (no per-subject Python loops).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from migpt_traj.errors import (
    DuplicateEventError,
    EventOrderError,
    MigptTrajWarning,
    SchemaError,
    ValueRangeError,
)

__all__ = [
    "EVENT_SCHEMA",
    "MODALITY_IDS",
    "OPTIONAL_COLUMNS",
    "CodeConventions",
    "Modality",
    "cast_to_schema",
    "sort_events",
    "validate_events",
]

#: Required MEDS columns and their canonical dtypes.
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "time": pl.Datetime("us"),
    "code": pl.String(),
    "numeric_value": pl.Float32(),
    "text_value": pl.String(),
}

#: Optional extension columns and their canonical dtypes.
OPTIONAL_COLUMNS: dict[str, pl.DataType] = {
    "embedding": pl.List(pl.Float32()),
    "image_path": pl.String(),
    "available_time": pl.Datetime("us"),
}

Modality = Literal["static", "measurement", "note", "image", "treatment", "event"]

#: Integer ids of the modalities in tensors (0 is padding).
MODALITY_IDS: dict[str, int] = {
    "static": 1,
    "measurement": 2,
    "note": 3,
    "image": 4,
    "treatment": 5,
    "event": 6,
}

_FLOAT32_MAX = 3.4028234663852886e38
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class CodeConventions:
    """Which codes mean what. Every default follows DESIGN.md and can be changed.

    Attributes:
        birth_code: code whose ``time`` is the date of birth (gives age at any time).
        end_of_followup_code: code marking the end of follow-up; the latest one counts.
        death_code: terminal outcome; no event may be timed after it.
        note_prefix: prefix of clinical-note codes (with ``text_value``).
        image_prefix: prefix of imaging-study codes (with ``embedding`` or ``image_path``).
        treatment_prefix: prefix of treatment-start codes (optional ``numeric_value`` = dose).
    """

    birth_code: str = "MEDS_BIRTH"
    end_of_followup_code: str = "END_OF_FOLLOWUP"
    death_code: str = "MEDS_DEATH"
    note_prefix: str = "NOTE//"
    image_prefix: str = "IMAGE//"
    treatment_prefix: str = "TREATMENT//"

    def modality_expr(self) -> pl.Expr:
        """A polars expression giving each event's modality (see :data:`Modality`)."""
        code = pl.col("code")
        return (
            pl.when(pl.col("time").is_null())
            .then(pl.lit("static"))
            .when(code.str.starts_with(self.note_prefix))
            .then(pl.lit("note"))
            .when(code.str.starts_with(self.image_prefix))
            .then(pl.lit("image"))
            .when(code.str.starts_with(self.treatment_prefix))
            .then(pl.lit("treatment"))
            .when(pl.col("numeric_value").is_not_null())
            .then(pl.lit("measurement"))
            .otherwise(pl.lit("event"))
        )

    def to_dict(self) -> dict[str, str]:
        """The conventions as a plain ``{field: code}`` dict (for JSON)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _describe_row(row: dict[str, object]) -> str:
    return f"subject {row.get('subject_id')}, time {row.get('time')}, code {row.get('code')!r}"


def _format_value(value: object) -> str:
    return f"{value:.7g}" if isinstance(value, float) else str(value)


def _castable(dtype: pl.DataType, target: pl.DataType) -> bool:
    """Whether ``dtype`` converts to ``target`` without changing what the values mean."""
    if dtype == pl.Null:
        return True  # an all-null column: the null checks below report it if nulls are not allowed
    if isinstance(target, pl.Int64):
        return dtype.is_integer()
    if isinstance(target, pl.Datetime):
        return isinstance(dtype, pl.Datetime | pl.Date)
    if isinstance(target, pl.Float32):
        return dtype.is_numeric()
    if isinstance(target, pl.String):
        return dtype == pl.String or dtype == pl.Categorical or isinstance(dtype, pl.Enum)
    if isinstance(target, pl.List):
        return isinstance(dtype, pl.List | pl.Array) and dtype.inner is not None and dtype.inner.is_numeric()
    return False


_HINTS = {
    "time": " Parse strings with pl.col('time').str.to_datetime().",
    "available_time": " Parse strings with pl.col('available_time').str.to_datetime().",
    "code": " Codes are strings such as 'LAB//bilirubin'; cast with pl.col('code').cast(pl.String).",
}


def cast_to_schema(df: pl.DataFrame, *, source: str) -> pl.DataFrame:
    """Check the columns and dtypes of an event frame and cast them losslessly to the canonical schema.

    Accepted casts keep the meaning of every value: any integer ``subject_id`` (range-checked), ``Date`` or
    any naive ``Datetime`` unit for ``time``/``available_time`` (nanoseconds are truncated to microseconds),
    any numeric ``numeric_value`` (range-checked against float32), ``Categorical``/``Enum`` codes, numeric
    ``List``/``Array`` embeddings, and all-null columns. Columns come back in canonical order (required,
    then the optional extensions present, then any other column unchanged).

    Args:
        df: the events.
        source: where the frame came from (a path), used in messages.

    Raises:
        SchemaError: a missing required column, a dtype with no lossless cast, a time zone-aware timestamp,
            or an integer ``subject_id`` outside int64.
        ValueRangeError: a finite ``numeric_value`` too large for float32.
    """
    missing = [c for c in EVENT_SCHEMA if c not in df.columns]
    if missing:
        raise SchemaError(
            f"{source} is missing required column(s) {missing}; MEDS events need "
            f"{list(EVENT_SCHEMA)} (found {df.columns})."
        )
    casts: list[pl.Expr] = []
    for name, target in {**EVENT_SCHEMA, **OPTIONAL_COLUMNS}.items():
        if name not in df.columns:
            continue
        dtype = df.schema[name]
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            raise SchemaError(
                f"Column {name!r} in {source} has a time zone ({dtype.time_zone}); MEDS times are naive "
                f"timestamp[us]. Convert with .dt.convert_time_zone('UTC').dt.replace_time_zone(None)."
            )
        if not _castable(dtype, target):
            raise SchemaError(
                f"Column {name!r} in {source} has dtype {dtype}; expected {target} (or a type that casts to "
                f"it without loss).{_HINTS.get(name, '')}"
            )
        if dtype == pl.UInt64 and df.select((pl.col(name) > _INT64_MAX).any()).item():
            raise SchemaError(
                f"Column {name!r} in {source} holds {df[name].max()!r}, beyond the int64 range of MEDS ids."
            )
        if dtype != target:
            casts.append(pl.col(name).cast(target))
    out = df.with_columns(casts) if casts else df

    original = df["numeric_value"]
    if original.dtype != pl.Float32 and original.dtype.is_numeric():
        overflow = out["numeric_value"].is_infinite() & original.cast(pl.Float64).is_finite()
        if overflow.any():
            row = out.filter(overflow).row(0, named=True)
            raise ValueRangeError(
                f"Column 'numeric_value' in {source} holds {original.filter(overflow)[0]} at "
                f"{_describe_row(row)}, outside the float32 range ±{_FLOAT32_MAX:.4g} ({overflow.sum()} such "
                f"row(s)); rescale the values."
            )
    order = [c for c in (*EVENT_SCHEMA, *OPTIONAL_COLUMNS) if c in out.columns]
    order += [c for c in out.columns if c not in order]
    return out.select(order) if order != out.columns else out


def _caller_stacklevel() -> int:
    """The ``stacklevel`` pointing a warning at the first frame outside migpt_traj (the user's call)."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


def _first_unsorted_row(df: pl.DataFrame) -> int | None:
    """Index of the first row out of (subject_id, time) order (static rows first), or None when sorted."""
    if df.height < 2:
        return None
    sid, time = pl.col("subject_id"), pl.col("time")
    prev_sid, prev_time = sid.shift(1), time.shift(1)
    out_of_order = (sid < prev_sid) | (
        (sid == prev_sid) & ((time.is_null() & prev_time.is_not_null()) | (time < prev_time))
    )
    first = df.select(out_of_order.fill_null(False).arg_true().first()).item()
    return None if first is None else int(first)


def sort_events(df: pl.DataFrame, *, source: str | None) -> pl.DataFrame:
    """Sort events by ``subject_id`` then ``time`` (static rows first), keeping input order among ties.

    An already sorted frame is returned as is (an O(n) check, no sort).

    Args:
        df: the events, in canonical dtypes.
        source: where the frame came from, named in a :class:`MigptTrajWarning` when it had to be sorted;
            ``None`` sorts silently (used when only the order of files differs).
    """
    first = _first_unsorted_row(df)
    if first is None:
        return df
    if source is not None:
        before, row = df.row(first - 1, named=True), df.row(first, named=True)
        warnings.warn(
            f"Events in {source} are not sorted by subject_id, time (first out of place: row {first}, "
            f"subject {row['subject_id']}, time {row['time']}, after subject {before['subject_id']}, time "
            f"{before['time']}); sorting them. The input is not changed.",
            MigptTrajWarning,
            stacklevel=_caller_stacklevel(),
        )
    # Two stable single-key sorts give the same order as one two-key sort, about twice as fast on millions
    # of rows (polars sorts a two-column key through a slower row encoding).
    return df.sort("time", nulls_last=False, maintain_order=True).sort("subject_id", maintain_order=True)


def validate_events(
    df: pl.DataFrame,
    *,
    source: str,
    conventions: CodeConventions | None = None,
    sort: bool = True,
) -> pl.DataFrame:
    """Check an event frame against the MEDS contract and return it in canonical form.

    Canonical form: the required columns (and any optional extension present) in canonical dtypes and
    canonical order, other columns kept as they are after them, rows sorted by ``subject_id`` then ``time``
    (static rows first) with the input order kept among ties. Unsorted input is sorted with a
    :class:`MigptTrajWarning`; every other defect raises a :class:`~migpt_traj.errors.MigptTrajError`
    naming the column, subject and value. The input frame is never modified.

    Args:
        df: the events (a polars DataFrame; a LazyFrame is collected).
        source: where the frame came from (a path), used in messages.
        conventions: code conventions (for the events-after-death check).
        sort: sort unsorted input (with a warning) instead of leaving it.

    Raises:
        SchemaError: not a polars frame, a missing column, a wrong dtype, a time zone, a null
            ``subject_id``/``code``, or an ``available_time`` on a static row.
        ValueRangeError: a non-finite or float32-overflowing ``numeric_value``, a non-finite or null embedding
            entry, or embeddings of unequal length.
        DuplicateEventError: the same (subject, time, code, numeric_value, text_value, and embedding /
            image_path when present) twice.
        EventOrderError: an event timed after the subject's death (its first ``death_code``), or available
            before it happened.
    """
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    if not isinstance(df, pl.DataFrame):
        raise SchemaError(f"{source} must be a polars DataFrame of MEDS events; got {type(df).__name__}.")
    conventions = conventions or CodeConventions()
    df = cast_to_schema(df, source=source)

    for name in ("subject_id", "code"):
        nulls = df.filter(pl.col(name).is_null())
        if nulls.height:
            raise SchemaError(
                f"Column {name!r} in {source} has {nulls.height} null value(s) (first: "
                f"{_describe_row(nulls.row(0, named=True))}); it must not be null."
            )

    bad = df.filter(pl.col("numeric_value").is_not_null() & ~pl.col("numeric_value").is_finite())
    if bad.height:
        row = bad.row(0, named=True)
        raise ValueRangeError(
            f"Column 'numeric_value' in {source} holds a non-finite value {row['numeric_value']} at "
            f"{_describe_row(row)} ({bad.height} such row(s)); use null for a missing value."
        )

    if "embedding" in df.columns:
        _check_embeddings(df, source=source)
    if "available_time" in df.columns:
        _check_available_time(df, source=source)

    key: list[str] = [
        c
        for c in ("subject_id", "time", "code", "numeric_value", "text_value", "embedding", "image_path")
        if c in df.columns
    ]
    dup = _duplicated_rows(df, key)
    if dup.height:
        row = dup.row(0, named=True)
        raise DuplicateEventError(
            f"{source} holds {dup.height} duplicated event row(s) (same {key}); first: {_describe_row(row)}, "
            f"numeric_value {_format_value(row['numeric_value'])}. Remove the copies; migpt_traj does not drop data."
        )

    if sort:
        df = sort_events(df, source=source)
    _check_after_death(df, source=source, death_code=conventions.death_code)
    return df


def _duplicated_rows(df: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """The rows of ``df`` whose ``key`` columns equal those of another row (exact).

    Row hashes are sorted and compared with their neighbours (about 3x faster than ``is_duplicated`` on
    millions of rows); only rows sharing a hash are compared exactly, so hash collisions cannot give a false
    report.
    """
    hashes = df.select(pl.struct(key).hash())[key[0]]
    ordered = hashes.sort()
    repeated = ordered.filter(ordered == ordered.shift(1))
    if repeated.len() == 0:
        return df.clear()
    candidates = df.filter(hashes.is_in(repeated.unique().implode()))
    return candidates.filter(pl.struct(key).is_duplicated())


def _check_embeddings(df: pl.DataFrame, *, source: str) -> None:
    emb = pl.col("embedding")
    stats = df.select(
        n=emb.list.len(),
        has_null=emb.list.eval(pl.element().is_null().any()).list.first(),
        finite=emb.list.eval(pl.element().is_finite().all()).list.first(),
    )
    lengths = stats["n"]
    present = lengths.drop_nulls()
    if present.len() == 0:
        return
    distinct = present.unique().sort()
    if distinct.len() > 1 or distinct[0] == 0:
        common = int(present.mode().sort()[0])
        odd = df.filter((lengths != common) | (lengths == 0))
        row = odd.row(0, named=True)
        raise ValueRangeError(
            f"Column 'embedding' in {source} has vectors of lengths {distinct.to_list()}; all must have the "
            f"same non-zero length (most have {common}). First odd one: {_describe_row(row)}, length "
            f"{len(row['embedding'])}."
        )
    for mask, what in (
        (stats["has_null"].fill_null(False), "null entries (use a null embedding for a missing one)"),
        (
            ~stats["finite"].fill_null(True),
            "non-finite values (NaN or inf; float64 beyond ±3.4e38 overflows)",
        ),
    ):
        bad = df.filter(mask)
        if bad.height:
            raise ValueRangeError(
                f"Column 'embedding' in {source} holds {what} at {_describe_row(bad.row(0, named=True))} "
                f"({bad.height} such row(s)); embeddings must be finite."
            )


def _check_available_time(df: pl.DataFrame, *, source: str) -> None:
    early = df.filter(pl.col("available_time") < pl.col("time"))
    if early.height:
        row = early.row(0, named=True)
        raise EventOrderError(
            f"Column 'available_time' in {source} is before 'time' at {_describe_row(row)} (available "
            f"{row['available_time']}; {early.height} such row(s)); a fact cannot be known before it happens."
        )
    timed_static = df.filter(pl.col("time").is_null() & pl.col("available_time").is_not_null())
    if timed_static.height:
        row = timed_static.row(0, named=True)
        raise SchemaError(
            f"Column 'available_time' in {source} is set on a static row (null 'time') at "
            f"{_describe_row(row)}; static facts are always available, give them a 'time' instead."
        )


def _check_after_death(df: pl.DataFrame, *, source: str, death_code: str) -> None:
    deaths = (
        df.filter((pl.col("code") == death_code) & pl.col("time").is_not_null())
        .group_by("subject_id")
        .agg(pl.col("time").min().alias("_death"))
    )
    if deaths.height == 0:
        return
    late = df.join(deaths, on="subject_id").filter(pl.col("time") > pl.col("_death"))
    if late.height:
        row = late.sort("subject_id", "time").row(0, named=True)
        raise EventOrderError(
            f"{source}: subject {row['subject_id']} has code {row['code']!r} at {row['time']}, after "
            f"{death_code!r} at {row['_death']} ({late.height} such row(s)); events cannot follow death."
        )
