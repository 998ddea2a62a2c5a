"""The Cohort: a validated MEDS event table with subjects, splits, outcomes and as-of labels.

Conventions (DESIGN.md, "As of"):

* A sample is ``(subject_id, prediction_time)``. Inputs are events whose ``available_time`` (else ``time``) is
  ``<= prediction_time``; static rows (null ``time``) are always available.
* Time zero is the subject's first timed event other than the birth code (entry into the cohort), by
  ``time`` (not ``available_time``). Subjects with only static rows or only a birth have none.
* End of follow-up is the latest ``END_OF_FOLLOWUP``; without one, the subject's last timed event other than
  birth. When the first outcome is recorded after that, follow-up extends to the outcome (an observed event is
  never dropped). Events after an ``END_OF_FOLLOWUP`` do not extend it.
* A subject is at risk at ``t`` if no outcome happened at or before ``t`` (``<=``) and follow-up ends strictly
  after ``t``. Subjects without time zero are never at risk.
* The label is the first outcome (any of ``outcomes``) strictly after ``t``, else censoring at the end of
  follow-up. Outcomes compete: the first one ends follow-up for all; outcomes at the same instant go to the
  one listed first in ``outcomes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from migpt_traj.data.meds import read_meds, write_meds
from migpt_traj.data.schema import CodeConventions, validate_events
from migpt_traj.errors import ConfigError, OutcomeError, SchemaError, SplitError, did_you_mean

__all__ = ["SPLITS", "Cohort", "Split"]

Split = Literal["train", "tuning", "held_out"]
SPLITS: tuple[str, ...] = ("train", "tuning", "held_out")
DAY_US = 86_400_000_000  # microseconds in a day
_MODALITIES = ("static", "measurement", "note", "image", "treatment", "event")


def days_to_duration(days: pl.Expr) -> pl.Expr:
    """Float days → polars Duration (microsecond precision)."""
    return pl.duration(microseconds=(days * DAY_US).round(0).cast(pl.Int64))


def duration_to_days(expr: pl.Expr) -> pl.Expr:
    """Polars Duration → float days (correctly rounded, the same whatever the frame's length).

    Polars divides a column by a scalar as a multiplication by its reciprocal, whose last bit depends on the
    code path (one row or many), so the same sample could get two different durations; numpy's true
    division is used instead.
    """
    return expr.dt.total_microseconds().map_batches(_microseconds_to_days, pl.Float64, is_elementwise=True)


def _microseconds_to_days(microseconds: pl.Series) -> pl.Series:
    days = microseconds.cast(pl.Float64).to_numpy() / DAY_US  # nulls become NaN here and null again below
    return pl.Series(microseconds.name, days, dtype=pl.Float64).fill_nan(None)


class Cohort:
    """Validated longitudinal events of a set of subjects, with splits and outcomes.

    Build one with :meth:`from_meds` (a MEDS root on disk) or :meth:`from_events` (a polars frame). The first
    outcome in ``outcomes`` is the primary event; the others compete with it.

    Example:
        >>> import polars as pl, datetime as dt
        >>> import migpt_traj as mt
        >>> ev = pl.DataFrame({
        ...     "subject_id": [1, 1, 1, 2, 2],
        ...     "time": [dt.datetime(2000, 1, 1), dt.datetime(2000, 6, 1), dt.datetime(2001, 1, 1),
        ...              dt.datetime(2000, 1, 1), dt.datetime(2003, 1, 1)],
        ...     "code": ["LAB//x", "LAB//x", "MEDS_DEATH", "LAB//x", "END_OF_FOLLOWUP"],
        ...     "numeric_value": [1.0, 2.0, None, 1.5, None],
        ...     "text_value": [None] * 5,
        ... })
        >>> cohort = mt.Cohort.from_events(ev, outcomes=["MEDS_DEATH"], splits={1: "train", 2: "train"})
        >>> cohort.labels(landmarks=[100]).select("subject_id", "event", "duration_days").rows()
        [(1, 'MEDS_DEATH', 266.0), (2, None, 996.0)]
    """

    def __init__(
        self,
        *,
        events: pl.DataFrame,
        splits: pl.DataFrame,
        outcomes: tuple[str, ...],
        conventions: CodeConventions,
        metadata: dict[str, Any],
        codes: pl.DataFrame | None = None,
    ) -> None:
        # Private: use from_meds / from_events, which validate. Inputs here are trusted.
        self.events = events
        self.splits = splits
        self.outcomes = outcomes
        self.conventions = conventions
        self.metadata = metadata
        self._codes = codes
        self.subjects = self._subject_table()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_meds(
        cls,
        root: str | Path,
        *,
        outcomes: Sequence[str] = ("MEDS_DEATH",),
        conventions: CodeConventions | None = None,
        split_seed: int = 0,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    ) -> Cohort:
        """Load and validate a MEDS root.

        Splits come from ``metadata/subject_splits.parquet`` when present, else a seeded subject-level split
        with ``split_fractions`` (train, tuning, held_out). The files under ``root`` are never modified.

        Raises:
            DataReadError, SchemaError, ValueRangeError, DuplicateEventError, EventOrderError, OutcomeError,
            SplitError: see :func:`migpt_traj.data.schema.validate_events` and :meth:`from_events`.
        """
        tables = read_meds(root)
        return cls.from_events(
            tables.events,
            outcomes=outcomes,
            splits=tables.splits,
            metadata=tables.metadata,
            codes=tables.codes,
            conventions=conventions,
            split_seed=split_seed,
            split_fractions=split_fractions,
            source=f"MEDS root {str(root)!r}",
        )

    @classmethod
    def from_events(
        cls,
        events: pl.DataFrame,
        *,
        outcomes: Sequence[str] = ("MEDS_DEATH",),
        splits: pl.DataFrame | dict[int, str] | None = None,
        metadata: dict[str, Any] | None = None,
        codes: pl.DataFrame | None = None,
        conventions: CodeConventions | None = None,
        split_seed: int = 0,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        source: str = "events frame",
    ) -> Cohort:
        """Validate an in-memory MEDS event frame and build a cohort (see :meth:`from_meds`).

        Args:
            events: MEDS events (see :func:`~migpt_traj.data.schema.validate_events`); not modified.
            outcomes: outcome codes, primary first; each must occur as a timed event.
            splits: ``subject_id, split`` (a frame or ``{subject_id: split}``) naming every subject exactly
                once; None draws a seeded split with ``split_fractions``.
            metadata: dataset metadata (``dataset_name``, ``dataset_version``, ...).
            codes: ``code, description, parent_codes`` descriptions to keep.
            conventions: code conventions.
            split_seed: seed of the drawn split.
            split_fractions: (train, tuning, held_out) fractions of the drawn split, summing to 1.
            source: what ``events`` is, named in messages.

        Raises:
            SchemaError, ValueRangeError, DuplicateEventError, EventOrderError: see
                :func:`~migpt_traj.data.schema.validate_events`.
            OutcomeError: no, repeated, reserved or absent outcome codes, or an outcome on a static row.
            SplitError: splits naming unknown subjects, a subject twice or not at all, or an unknown split.
            ConfigError: invalid ``split_fractions``.
        """
        conventions = conventions or CodeConventions()
        events = validate_events(events, source=source, conventions=conventions)
        outcomes = _check_outcomes(events, outcomes, conventions)
        subject_ids = events["subject_id"].unique().sort()
        if isinstance(splits, dict):
            splits = pl.DataFrame(
                {"subject_id": list(splits), "split": list(splits.values())},
                schema={"subject_id": pl.Int64, "split": pl.String},
            )
        if splits is None:
            splits = seeded_split(subject_ids, seed=split_seed, fractions=split_fractions)
        else:
            splits = _check_splits(splits, subject_ids, source=source)
        meta = {"dataset_name": "unnamed", "dataset_version": "unknown", **(metadata or {})}
        return cls(
            events=events,
            splits=splits,
            outcomes=outcomes,
            conventions=conventions,
            metadata=meta,
            codes=None if codes is None else _check_codes(codes, source=source),
        )

    def to_meds(self, root: str | Path, *, overwrite: bool = False, subjects_per_shard: int = 50_000) -> Path:
        """Write the cohort as a MEDS root; :meth:`from_meds` reads it back identically.

        Raises:
            DataReadError: ``root`` is not empty and ``overwrite`` is false (see
                :func:`~migpt_traj.data.meds.write_meds`).
        """
        return write_meds(
            root,
            events=self.events,
            splits=self.splits,
            codes=self.codes,
            metadata=self.metadata,
            subjects_per_shard=subjects_per_shard,
            overwrite=overwrite,
        )

    # ------------------------------------------------------------------ views
    @property
    def codes(self) -> pl.DataFrame:
        """``code, description, parent_codes`` for every code in the events (descriptions kept from input)."""
        present = self.events.select(pl.col("code").unique().sort())
        if self._codes is not None:
            return present.join(self._codes, on="code", how="left")
        return present.with_columns(
            description=pl.lit(None, dtype=pl.String), parent_codes=pl.lit(None, dtype=pl.List(pl.String))
        )

    @property
    def name(self) -> str:
        return str(self.metadata.get("dataset_name", "unnamed"))

    @property
    def primary_outcome(self) -> str:
        return self.outcomes[0]

    @property
    def n_subjects(self) -> int:
        return self.subjects.height

    def subject_ids(self, split: Split | None = None) -> list[int]:
        """Subject ids, sorted, optionally of one split."""
        frame = self.splits if split is None else self.splits.filter(pl.col("split") == _check_split(split))
        return sorted(frame["subject_id"].to_list())

    def statics(self) -> pl.DataFrame:
        """The static rows (null ``time``)."""
        return self.events.filter(pl.col("time").is_null())

    def events_with_modality(self) -> pl.DataFrame:
        """Events plus a ``modality`` column from the code conventions."""
        return self.events.with_columns(modality=self.conventions.modality_expr())

    def subset(self, subject_ids: Iterable[int] | None = None, *, split: Split | None = None) -> Cohort:
        """A cohort restricted to some subjects (or one split, or those of them in one split).

        Splits, outcomes, conventions and metadata are kept; the events are not re-validated.

        Raises:
            SplitError: ``subject_ids`` names a subject that is not in the cohort, or ``split`` is unknown.
        """
        ids = set(self.subject_ids(split)) if split is not None else set(self.subject_ids())
        if subject_ids is not None:
            wanted = {int(s) for s in subject_ids}
            unknown = sorted(wanted - set(self.subject_ids()))
            if unknown:
                raise SplitError(
                    f"subset() names subject {unknown[0]} ({len(unknown)} unknown in all), which is not in the cohort."
                )
            ids &= wanted
        keep = pl.Series("subject_id", sorted(ids), dtype=pl.Int64)
        return Cohort(
            events=self.events.filter(pl.col("subject_id").is_in(keep.implode())),
            splits=self.splits.filter(pl.col("subject_id").is_in(keep.implode())),
            outcomes=self.outcomes,
            conventions=self.conventions,
            metadata=dict(self.metadata),
            codes=self._codes,
        )

    def with_events(self, events: pl.DataFrame) -> Cohort:
        """A new cohort with other events (validated) and the same splits, outcomes and conventions."""
        return Cohort.from_events(
            events,
            outcomes=self.outcomes,
            splits=self.splits.filter(pl.col("subject_id").is_in(events["subject_id"].unique().implode())),
            metadata=self.metadata,
            codes=self._codes,
            conventions=self.conventions,
        )

    # ------------------------------------------------------------------ subjects and labels
    def _subject_table(self) -> pl.DataFrame:
        """One row per subject (sorted): split, birth, time zero, end of follow-up and first outcome.

        Columns: ``subject_id``, ``split``, ``birth_time`` (first birth code; null without one), ``time_zero``
        (first timed event other than birth; null for subjects with only static rows or birth),
        ``end_of_followup`` (latest end-of-follow-up code, else the last timed event other than birth,
        extended to ``outcome_time`` when that is later), ``outcome`` (the first outcome code; ties at the
        same time go to the earlier code in ``outcomes``; null = none) and ``outcome_time``.
        """
        conv = self.conventions
        code, time = pl.col("code"), pl.col("time")
        is_outcome = code.is_in(list(self.outcomes))
        not_birth = code != conv.birth_code
        per_subject = (
            self.events.lazy()
            .filter(time.is_not_null())
            .group_by("subject_id")
            .agg(
                birth_time=time.filter(code == conv.birth_code).min(),
                time_zero=time.filter(not_birth).min(),
                _last_time=time.filter(not_birth).max(),
                _eof=time.filter(code == conv.end_of_followup_code).max(),
                outcome_time=time.filter(is_outcome).min(),
            )
        )
        rank = code.replace_strict(list(self.outcomes), list(range(len(self.outcomes))), return_dtype=pl.Int32)
        first_outcome = (
            self.events.lazy()
            .filter(is_outcome & time.is_not_null())
            .sort("subject_id", "time", rank)
            .group_by("subject_id")
            .agg(outcome=code.first())
        )
        table = (
            self.splits.lazy()
            .join(per_subject, on="subject_id", how="left")
            .join(first_outcome, on="subject_id", how="left")
            .with_columns(end_of_followup=pl.max_horizontal(pl.coalesce("_eof", "_last_time"), pl.col("outcome_time")))
            .select("subject_id", "split", "birth_time", "time_zero", "end_of_followup", "outcome", "outcome_time")
            .sort("subject_id")
        )
        return table.collect()

    def labels(
        self,
        *,
        landmarks: Sequence[float] | None = None,
        prediction_times: pl.DataFrame | None = None,
        split: Split | None = None,
    ) -> pl.DataFrame:
        """As-of labels for every sample whose subject is at risk at its prediction time.

        Give exactly one of ``landmarks`` (days after each subject's time zero; duplicates are dropped) or
        ``prediction_times`` (a frame with ``subject_id`` and ``prediction_time``; duplicate rows are
        dropped). A subject is at risk at ``t`` when no outcome happened at or before ``t`` (``<=``) and
        follow-up ends strictly after ``t``. Explicit prediction times are taken as given, also before time
        zero (the subject is then labelled from ``t`` although it entered the cohort later).

        Returns:
            polars frame sorted by subject, prediction time and landmark with ``subject_id``,
            ``prediction_time``, ``landmark_days`` (null for explicit prediction times), ``event`` (the first
            outcome code strictly after the prediction time, null if censored), ``event_time`` (that outcome's
            time, or the censoring time = end of follow-up when ``event`` is null) and ``duration_days``
            (``event_time - prediction_time`` in days, always > 0). Samples not at risk are left out; subjects
            without a timed event other than birth never get landmark samples.

        Raises:
            ConfigError: neither or both of ``landmarks`` / ``prediction_times``, a negative or non-finite
                landmark, or a malformed ``prediction_times`` frame.
            SplitError: ``prediction_times`` names a subject not in the cohort, or ``split`` is unknown.

        Example:
            >>> import polars as pl, datetime as dt
            >>> import migpt_traj as mt
            >>> ev = pl.DataFrame({
            ...     "subject_id": [1, 1], "time": [dt.datetime(2000, 1, 1), dt.datetime(2000, 1, 11)],
            ...     "code": ["LAB//x", "MEDS_DEATH"], "numeric_value": [1.0, None],
            ...     "text_value": [None, None],
            ... })
            >>> c = mt.Cohort.from_events(ev, splits={1: "train"})
            >>> c.labels(landmarks=[2.5, 10]).select("landmark_days", "event", "duration_days").rows()
            [(2.5, 'MEDS_DEATH', 7.5)]
        """
        samples = self._samples(landmarks=landmarks, prediction_times=prediction_times, split=split)
        t = pl.col("prediction_time")
        at_risk = (pl.col("outcome_time").is_null() | (pl.col("outcome_time") > t)) & (pl.col("end_of_followup") > t)
        return (
            samples.join(self.subjects, on="subject_id", how="inner")
            .filter(at_risk)
            .with_columns(event=pl.col("outcome"), event_time=pl.coalesce("outcome_time", "end_of_followup"))
            .with_columns(duration_days=duration_to_days(pl.col("event_time") - t))
            .select("subject_id", "prediction_time", "landmark_days", "event", "event_time", "duration_days")
            .sort("subject_id", "prediction_time", "landmark_days", nulls_last=True)
        )

    def _samples(
        self,
        *,
        landmarks: Sequence[float] | None,
        prediction_times: pl.DataFrame | None,
        split: Split | None,
    ) -> pl.DataFrame:
        if (landmarks is None) == (prediction_times is None):
            raise ConfigError("Give exactly one of 'landmarks' (days after time zero) or 'prediction_times'.")
        subjects = self.subjects
        if split is not None:
            subjects = subjects.filter(pl.col("split") == _check_split(split))
        if landmarks is not None:
            if isinstance(landmarks, str | bytes):
                raise ConfigError(f"'landmarks' must be a sequence of days; got the string {landmarks!r}.")
            try:
                values = np.asarray(list(landmarks), dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"'landmarks' must be numbers of days; got {list(landmarks)}.") from err
            bad = values[~np.isfinite(values) | (values < 0)]
            if bad.size:
                raise ConfigError(f"Landmarks must be finite days >= 0 after time zero; got {bad[0]}.")
            lm = pl.DataFrame({"landmark_days": np.unique(values)}, schema={"landmark_days": pl.Float64})
            return (
                subjects.filter(pl.col("time_zero").is_not_null())
                .select("subject_id", "time_zero")
                .join(lm, how="cross")
                .with_columns(prediction_time=pl.col("time_zero") + days_to_duration(pl.col("landmark_days")))
                .select("subject_id", "prediction_time", "landmark_days")
            )
        assert prediction_times is not None
        if not isinstance(prediction_times, pl.DataFrame):
            raise ConfigError(f"'prediction_times' must be a polars DataFrame; got {type(prediction_times).__name__}.")
        missing = sorted({"subject_id", "prediction_time"} - set(prediction_times.columns))
        if missing:
            raise ConfigError(f"'prediction_times' needs columns subject_id, prediction_time; missing {missing}.")
        sid_type, time_type = (
            prediction_times.schema["subject_id"],
            prediction_times.schema["prediction_time"],
        )
        if not sid_type.is_integer():
            raise ConfigError(f"'prediction_times' column 'subject_id' must be integer; got {sid_type}.")
        if not isinstance(time_type, pl.Datetime | pl.Date) or getattr(time_type, "time_zone", None):
            raise ConfigError(
                f"'prediction_times' column 'prediction_time' must be a naive Datetime (like the events' "
                f"'time'); got {time_type}."
            )
        pt = prediction_times.select(
            pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us"))
        )
        nulls = pt.filter(pl.col("subject_id").is_null() | pl.col("prediction_time").is_null())
        if nulls.height:
            raise ConfigError(
                f"'prediction_times' has a null subject_id or prediction_time (first: subject "
                f"{nulls['subject_id'][0]}, time {nulls['prediction_time'][0]}); both are required."
            )
        unknown = pt.join(self.subjects, on="subject_id", how="anti")
        if unknown.height:
            raise SplitError(
                f"'prediction_times' names subject {unknown['subject_id'][0]} "
                f"({unknown['subject_id'].n_unique()} unknown in all), which is not in the cohort."
            )
        return (
            pt.join(subjects.select("subject_id"), on="subject_id", how="semi")
            .unique(maintain_order=True)
            .with_columns(landmark_days=pl.lit(None, dtype=pl.Float64))
        )

    # ------------------------------------------------------------------ description
    def describe(self) -> pl.DataFrame:
        """One row per split (and ``all``): subjects, outcomes, censored, follow-up and events by modality.

        Columns: ``split``, ``subjects``, ``events``, ``n_<outcome>`` per outcome code (subjects whose first
        outcome it is), ``n_censored`` (subjects without an outcome), ``median_followup_days`` (end of
        follow-up minus time zero), ``n_<modality>`` per modality (events) and ``measurement_codes``
        (distinct codes of measurement events).
        """
        modality = pl.col("modality")
        event_stats = [
            pl.len().alias("events"),
            *[(modality == m).sum().alias(f"n_{m}") for m in _MODALITIES],
            pl.col("code").filter(modality == "measurement").n_unique().alias("measurement_codes"),
        ]
        ev = (
            self.events.lazy()
            .select("subject_id", "code", modality=self.conventions.modality_expr())
            .join(self.splits.lazy(), on="subject_id")
        )
        by_split, overall = pl.collect_all(
            [ev.group_by("split").agg(event_stats), ev.select(event_stats).with_columns(split=pl.lit("all"))]
        )
        events = {r["split"]: r for r in pl.concat([by_split, overall], how="diagonal_relaxed").iter_rows(named=True)}
        subj = self.subjects.with_columns(
            followup_days=duration_to_days(pl.col("end_of_followup") - pl.col("time_zero"))
        )
        rows = []
        for name in (*SPLITS, "all"):  # four small per-split summaries of the subject table, not per subject
            s = subj if name == "all" else subj.filter(pl.col("split") == name)
            e = events.get(name, {})
            row: dict[str, Any] = {"split": name, "subjects": s.height, "events": int(e.get("events") or 0)}
            for outcome in self.outcomes:
                row[f"n_{outcome}"] = s.filter(pl.col("outcome") == outcome).height
            row["n_censored"] = s.filter(pl.col("outcome").is_null()).height
            row["median_followup_days"] = s["followup_days"].median()
            for m in _MODALITIES:
                row[f"n_{m}"] = int(e.get(f"n_{m}") or 0)
            row["measurement_codes"] = int(e.get("measurement_codes") or 0)
            rows.append(row)
        return pl.DataFrame(rows, schema_overrides={"median_followup_days": pl.Float64})

    def __repr__(self) -> str:
        counts = dict(self.splits.group_by("split").len().iter_rows())
        parts = ", ".join(f"{k}={counts.get(k, 0)}" for k in SPLITS)
        return (
            f"Cohort({self.name!r}: {self.n_subjects} subjects ({parts}), {self.events.height} events, "
            f"outcomes={list(self.outcomes)})"
        )


def seeded_split(
    subject_ids: pl.Series, *, seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> pl.DataFrame:
    """A reproducible subject-level split: a seeded permutation cut at the cumulative ``fractions``.

    The permutation is drawn over the sorted ids, so the split depends only on the set of ids and the seed.
    Group sizes are ``round(f * n)`` for train and tuning, the rest held out (each within one subject of
    ``f * n``).

    Args:
        subject_ids: the subjects (unique).
        seed: seed of numpy's default generator.
        fractions: (train, tuning, held_out), each >= 0, summing to 1.

    Returns:
        ``subject_id`` (Int64, sorted), ``split`` (String).

    Raises:
        ConfigError: ``fractions`` is not three non-negative numbers summing to 1.
    """
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"split_fractions must be three numbers (train, tuning, held_out); got {fractions}.") from err
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) < 0 or not np.isclose(sum(values), 1.0):
        raise ConfigError(
            f"split_fractions must be three non-negative numbers (train, tuning, held_out) summing to 1; "
            f"got {fractions}."
        )
    ids = np.sort(subject_ids.to_numpy())
    order = np.random.default_rng(seed).permutation(ids.size)
    n_train = round(values[0] * ids.size)
    n_tune = min(round(values[1] * ids.size), ids.size - n_train)
    labels = np.empty(ids.size, dtype=object)
    labels[order[:n_train]] = "train"
    labels[order[n_train : n_train + n_tune]] = "tuning"
    labels[order[n_train + n_tune :]] = "held_out"
    return pl.DataFrame(
        {"subject_id": ids, "split": labels.tolist()}, schema={"subject_id": pl.Int64, "split": pl.String}
    )


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise SplitError(f"Unknown split {split!r}; valid splits are {list(SPLITS)}.{did_you_mean(str(split), SPLITS)}")
    return split


def _check_splits(splits: pl.DataFrame, subject_ids: pl.Series, *, source: str) -> pl.DataFrame:
    where = f"The subject splits of {source}"
    if not isinstance(splits, pl.DataFrame):
        raise SplitError(f"{where} must be a polars DataFrame or a dict; got {type(splits).__name__}.")
    missing = sorted({"subject_id", "split"} - set(splits.columns))
    if missing:
        raise SplitError(f"{where} miss column(s) {missing}; need subject_id, split (found {splits.columns}).")
    sid_type = splits.schema["subject_id"]
    if not (sid_type.is_integer() or sid_type == pl.Null):
        raise SplitError(f"{where} have subject_id of dtype {sid_type}; expected an integer type.")
    try:
        splits = splits.select(pl.col("subject_id").cast(pl.Int64), pl.col("split").cast(pl.String))
    except pl.exceptions.PolarsError as err:
        raise SplitError(f"{where} have unusable dtypes {dict(splits.schema)}: {err}") from err
    nulls = splits.filter(pl.col("subject_id").is_null())
    if nulls.height:
        raise SplitError(f"{where} have {nulls.height} row(s) with a null subject_id; every row needs one.")
    dup = splits.filter(pl.col("subject_id").is_duplicated())
    if dup.height:
        sid = int(dup["subject_id"].min())  # type: ignore[arg-type]
        names = dup.filter(pl.col("subject_id") == sid)["split"].to_list()
        raise SplitError(
            f"{where} name subject {sid} more than once ({names}; {dup['subject_id'].n_unique()} such "
            f"subject(s)); each subject belongs to exactly one split."
        )
    bad = splits.filter(~pl.col("split").is_in(list(SPLITS)) | pl.col("split").is_null())
    if bad.height:
        value = bad["split"][0]
        raise SplitError(
            f"{where} give subject {bad['subject_id'][0]} the split {value!r}; valid splits are "
            f"{list(SPLITS)}.{did_you_mean(str(value), SPLITS)}"
        )
    known = pl.DataFrame({"subject_id": subject_ids.cast(pl.Int64)})
    unknown = splits.join(known, on="subject_id", how="anti").sort("subject_id")
    if unknown.height:
        raise SplitError(
            f"{where} name subject {unknown['subject_id'][0]} ({unknown.height} such subject(s)), which has no events."
        )
    unassigned = known.join(splits, on="subject_id", how="anti").sort("subject_id")
    if unassigned.height:
        raise SplitError(
            f"Subject {unassigned['subject_id'][0]} ({unassigned.height} such subject(s)) has events but no "
            f"split in the subject splits of {source}; every subject needs one of {list(SPLITS)}."
        )
    return splits.sort("subject_id")


_CODES_SCHEMA = {"code": pl.String(), "description": pl.String(), "parent_codes": pl.List(pl.String())}


def _check_codes(codes: pl.DataFrame, *, source: str) -> pl.DataFrame:
    """``code, description, parent_codes`` in canonical dtypes, one row per code (the first kept)."""
    where = f"The code descriptions (metadata/codes.parquet) of {source}"
    if not isinstance(codes, pl.DataFrame) or "code" not in codes.columns:
        found = codes.columns if isinstance(codes, pl.DataFrame) else type(codes).__name__
        raise SchemaError(f"{where} need a 'code' column (found {found}).")
    columns = []
    for name, dtype in _CODES_SCHEMA.items():
        have = codes.schema.get(name, pl.Null())
        ok = (
            have == pl.Null
            or have == dtype
            or (dtype == pl.String and (have == pl.Categorical or isinstance(have, pl.Enum)))
            or (isinstance(have, pl.List) and have.inner in (pl.String, pl.Null))
        )
        if not ok:
            raise SchemaError(f"{where} have column {name!r} of dtype {have}; expected {dtype}.")
        column = pl.col(name) if name in codes.columns else pl.lit(None)
        columns.append(column.cast(dtype).alias(name))
    return codes.select(columns).filter(pl.col("code").is_not_null()).unique("code", keep="first", maintain_order=True)


def _check_outcomes(events: pl.DataFrame, outcomes: Sequence[str], conventions: CodeConventions) -> tuple[str, ...]:
    if isinstance(outcomes, str):
        outcomes = [outcomes]
    outcomes = tuple(outcomes)
    if not outcomes:
        raise OutcomeError("At least one outcome code is needed (the first is the primary event).")
    if not all(isinstance(code, str) for code in outcomes):
        raise OutcomeError(f"Outcome codes must be strings; got {list(outcomes)}.")
    if len(set(outcomes)) != len(outcomes):
        raise OutcomeError(f"Outcome codes must be distinct; got {list(outcomes)}.")
    reserved = {conventions.birth_code, conventions.end_of_followup_code}
    present = set(events.filter(pl.col("time").is_not_null())["code"].unique().to_list())
    for code in outcomes:
        if code in reserved:
            raise OutcomeError(f"Outcome {code!r} is a reserved code (birth / end of follow-up), not an outcome.")
        if code not in present:
            raise OutcomeError(
                f"Outcome {code!r} never occurs as a timed event in the data.{did_you_mean(code, present)}"
            )
    static = events.filter(pl.col("time").is_null() & pl.col("code").is_in(list(outcomes)))
    if static.height:
        raise OutcomeError(
            f"Outcome {static['code'][0]!r} appears on a static row (null time) for subject "
            f"{static['subject_id'][0]} ({static.height} such row(s)); an outcome needs the time it happened."
        )
    return outcomes
