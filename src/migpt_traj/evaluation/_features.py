"""As-of features of the classical baselines: the vocabulary of feature codes, raw features at prediction times,
the train-only standardisation (:class:`FeatureSpec`), and the long-format ``(start, stop]`` intervals of the
time-varying Cox model.

**Features as of a prediction time** (:func:`raw_features`): only events whose ``available_time`` (else ``time``) is
``<=`` the prediction time. The last value (latest ``time``) of every numeric measurement code seen in the train
split, age in years at the prediction time, 0/1 indicators of the train split's static codes and of treatment
codes started by then, and days since the last measurement of any of those codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from numpy.typing import NDArray

from migpt_traj.data.cohort import Cohort, duration_to_days

__all__ = ["FeatureSpec", "FeatureVocabulary", "interval_starts", "raw_features"]

_KEYS = ("subject_id", "prediction_time")
_AGE = "age_years"
_SINCE = "days_since_last_measurement"
_MISSING = "__missing"


@dataclass(frozen=True)
class FeatureVocabulary:
    """The codes that become features, by role, read from the train split's events only.

    Attributes:
        numeric: timed measurement codes (with a ``numeric_value``; not notes, images or treatments).
        static: codes of static rows (null ``time``), as 0/1 indicators.
        treatment: treatment codes (``TREATMENT//`` prefix by default), as 0/1 "started by then" indicators.
    """

    numeric: tuple[str, ...]
    static: tuple[str, ...]
    treatment: tuple[str, ...]

    @classmethod
    def from_train(cls, cohort: Cohort) -> FeatureVocabulary:
        """Codes of the train split (outcomes, birth and end of follow-up are never inputs)."""
        conv = cohort.conventions
        excluded = [*cohort.outcomes, conv.birth_code, conv.end_of_followup_code]
        ev = (
            cohort.events.lazy()
            .join(cohort.splits.lazy().filter(pl.col("split") == "train"), on="subject_id", how="semi")
            .filter(~pl.col("code").is_in(excluded))
            .select("code", modality=conv.modality_expr())
            .unique()
            .collect()
        )

        def codes(modality: str) -> tuple[str, ...]:
            return tuple(sorted(ev.filter(pl.col("modality") == modality)["code"].to_list()))

        numeric, treatment = codes("measurement"), codes("treatment")
        static = tuple(c for c in codes("static") if c not in numeric and c not in treatment)
        return cls(numeric=numeric, static=static, treatment=treatment)


def raw_features(cohort: Cohort, samples: pl.DataFrame, vocabulary: FeatureVocabulary) -> pl.DataFrame:
    """As-of features of ``samples`` (rows ``subject_id, prediction_time``), before imputation and scaling.

    Vectorised: one join of the samples with the events of the vocabulary's codes, one group-by. Only events
    available at or before the prediction time (``available_time`` if the column exists and is set, else ``time``)
    enter; static rows always.

    Returns:
        ``subject_id, prediction_time`` in the order of ``samples``, then one Float64 column per numeric code (its
        latest value, null if never measured), ``age_years`` (null without a birth code),
        ``days_since_last_measurement`` (null if none) and a 0/1 column per static and treatment code.
    """
    ev = cohort.events
    avail = pl.coalesce("available_time", "time") if "available_time" in ev.columns else pl.col("time")
    keys = samples.select(*_KEYS).unique()
    code, numeric = pl.col("code"), list(vocabulary.numeric)
    used = ev.lazy().filter(pl.col("time").is_not_null() & code.is_in([*numeric, *vocabulary.treatment]))
    timed = (
        keys.lazy()
        .join(used, on="subject_id", how="inner")
        .filter(avail <= pl.col("prediction_time"))
        .sort("subject_id", "prediction_time", "time", avail, maintain_order=True)
    )
    is_meas = code.is_in(numeric) & pl.col("numeric_value").is_not_null()
    value = pl.col("numeric_value").cast(pl.Float64)
    agg = timed.group_by(*_KEYS).agg(
        *[value.filter(code == c).last().alias(c) for c in vocabulary.numeric],
        pl.col("time").filter(is_meas).max().alias("_last"),
        *[(code == c).any().cast(pl.Float64).alias(c) for c in vocabulary.treatment],
    )
    static = (
        ev.lazy()
        .filter(pl.col("time").is_null())
        .group_by("subject_id")
        .agg(*[(code == c).any().cast(pl.Float64).alias(c) for c in vocabulary.static])
    )
    birth = cohort.subjects.lazy().select("subject_id", "birth_time")
    t = pl.col("prediction_time")
    flags = [*vocabulary.static, *vocabulary.treatment]
    return (
        samples.lazy()
        .select(*_KEYS)
        .join(agg, on=list(_KEYS), how="left", maintain_order="left")
        .join(static, on="subject_id", how="left", maintain_order="left")
        .join(birth, on="subject_id", how="left", maintain_order="left")
        .with_columns(
            duration_to_days(t - pl.col("birth_time")).truediv(365.25).alias(_AGE),
            duration_to_days(t - pl.col("_last")).alias(_SINCE),
            *[pl.col(c).fill_null(0.0) for c in flags],
        )
        .select(*_KEYS, *numeric, _AGE, _SINCE, *flags)
        .collect()
    )


@dataclass(frozen=True)
class FeatureSpec:
    """Train-only statistics that turn :func:`raw_features` into a standardised design matrix (one landmark).

    Continuous columns (numeric codes, age, days since the last measurement) that are strictly positive in train
    with train skewness above a threshold are log-transformed (renamed ``log(<column>)``); a missing value becomes
    the train median (after the log), plus a 0/1 ``<column>__missing`` indicator for columns with missing values in
    train (a column complete in train gets no indicator: held-out gaps are imputed silently). Every column is then
    centred and scaled by its train mean and standard deviation; columns constant in train, and columns equal to
    an earlier one or its complement in train (``SEX//male`` after ``SEX//female``), are dropped.

    Attributes:
        vocabulary: codes by role, from the train split.
        continuous: the raw continuous columns considered.
        log_columns: the ones log-transformed.
        medians: train median of each continuous column (after the log; 0 if never observed).
        missing_indicators: continuous columns that get a missing indicator.
        columns: the design's columns, in order.
        means: train mean of each design column.
        scales: train standard deviation (ddof 0) of each design column.
    """

    vocabulary: FeatureVocabulary
    continuous: tuple[str, ...]
    log_columns: tuple[str, ...]
    medians: tuple[float, ...]
    missing_indicators: tuple[str, ...]
    columns: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    log_floors: tuple[float, ...] = ()

    @classmethod
    def fit(cls, raw: pl.DataFrame, vocabulary: FeatureVocabulary, *, log_skew_threshold: float = 1.0) -> FeatureSpec:
        """Fit on the raw features of train samples only (the caller's responsibility: see ``_Landmarks.fit``)."""
        continuous = (*vocabulary.numeric, _AGE, _SINCE)
        logs = tuple(c for c in continuous if _positive_and_skewed(raw[c], log_skew_threshold))
        floors = tuple(float(raw[c].min()) for c in logs)  # type: ignore[arg-type]
        logged = raw.with_columns(pl.col(c).log() for c in logs)
        medians = tuple(_median(logged[c]) for c in continuous)
        indicators = tuple(c for c in continuous if logged[c].null_count())
        full = cls(vocabulary, continuous, logs, medians, indicators, (), (), (), floors)._expand(raw)
        values = full.to_numpy().astype(np.float64).reshape(full.height, full.width)
        mean, std = values.mean(axis=0), values.std(axis=0)
        z = (values - mean) / np.where(std > 1e-12, std, 1.0)
        keep: list[int] = []
        for i in range(full.width):  # a few dozen columns: drop constants and exact (anti-)copies of a kept one
            copy = any(abs(z[:, i] @ z[:, j]) >= (1 - 1e-9) * full.height for j in keep)
            if std[i] > 1e-12 and not copy:
                keep.append(i)
        return cls(
            vocabulary,
            continuous,
            logs,
            medians,
            indicators,
            tuple(full.columns[i] for i in keep),
            tuple(float(mean[i]) for i in keep),
            tuple(float(std[i]) for i in keep),
            floors,
        )

    def _expand(self, raw: pl.DataFrame) -> pl.DataFrame:
        """Log, impute and add indicators (unscaled), every candidate column. Before the log, values are clipped
        at the column's train minimum (positive by construction), so a later value <= 0 cannot give NaN."""
        floor = dict(zip(self.log_columns, self.log_floors, strict=False))
        logs = set(self.log_columns)
        named = {c: f"log({c})" if c in logs else c for c in self.continuous}
        flags = [*self.vocabulary.static, *self.vocabulary.treatment]
        return raw.select(
            *[
                (pl.col(c).clip(lower_bound=floor.get(c)).log() if c in logs else pl.col(c))
                .fill_null(m)
                .alias(named[c])
                for c, m in zip(self.continuous, self.medians, strict=True)
            ],
            *[pl.col(c).is_null().cast(pl.Float64).alias(f"{named[c]}{_MISSING}") for c in self.missing_indicators],
            *[pl.col(c).cast(pl.Float64) for c in flags],
        )

    def design(self, raw: pl.DataFrame) -> pl.DataFrame:
        """The standardised design (columns :attr:`columns`) of raw features computed with this vocabulary."""
        full = self._expand(raw)
        return full.select(
            ((pl.col(c) - m) / s).alias(c) for c, m, s in zip(self.columns, self.means, self.scales, strict=True)
        )

    def matrix(self, raw: pl.DataFrame) -> NDArray[np.float64]:
        return self.design(raw).to_numpy().astype(np.float64, copy=False).reshape(raw.height, len(self.columns))


def _positive_and_skewed(column: pl.Series, threshold: float) -> bool:
    values = column.drop_nulls().cast(pl.Float64)
    if values.len() < 3 or float(values.min()) <= 0:  # type: ignore[arg-type]
        return False
    skew = values.skew()
    return skew is not None and bool(np.isfinite(skew)) and float(skew) > threshold


def _median(column: pl.Series) -> float:
    value = column.drop_nulls().cast(pl.Float64).median()
    return 0.0 if value is None else float(value)  # type: ignore[arg-type]


def interval_starts(cohort: Cohort, labels: pl.DataFrame, vocabulary: FeatureVocabulary) -> pl.DataFrame:
    """Long-format ``(start, stop]`` intervals from time zero, split wherever an as-of feature can change.

    Vectorised: one join of the subjects' labels with their feature events. An interval starts at time zero and at
    every distinct availability time (``available_time``, else ``time``) of a feature event (a numeric code with a
    value, or a treatment code) strictly inside ``(time zero, event_time)``; it stops at the next start, the last one
    at ``event_time`` (the outcome or the end of follow-up). The features of an interval are those as of its start
    (:func:`raw_features` at ``prediction_time = start``): last observation carried forward, so age and days since
    the last measurement are frozen at the start too.

    Args:
        cohort: the cohort whose events are read.
        labels: :meth:`Cohort.labels` at landmark 0 (``prediction_time`` = time zero), one row per subject.
        vocabulary: the feature codes.

    Returns:
        ``subject_id, prediction_time`` (the start), ``start_days, stop_days`` (days after time zero, ``start <
        stop``), ``event`` (the subject's outcome on its last interval, else null), sorted by subject and start.
    """
    ev = cohort.events.lazy()
    avail = pl.coalesce("available_time", "time") if "available_time" in cohort.events.columns else pl.col("time")
    code = pl.col("code")
    is_feature = code.is_in(list(vocabulary.treatment)) | (
        code.is_in(list(vocabulary.numeric)) & pl.col("numeric_value").is_not_null()
    )
    base = labels.lazy().select("subject_id", "event", t0="prediction_time", end="event_time")
    dtype = labels.schema["prediction_time"]
    changes = (
        ev.filter(pl.col("time").is_not_null() & is_feature)
        .select("subject_id", start=avail.cast(dtype))
        .join(base, on="subject_id", how="inner")
        .filter((pl.col("start") > pl.col("t0")) & (pl.col("start") < pl.col("end")))
        .select("subject_id", "start")
    )
    starts = pl.concat([base.select("subject_id", start="t0"), changes]).unique()
    t0 = pl.col("t0")
    return (
        starts.join(base, on="subject_id", how="inner")
        .sort("subject_id", "start")
        .with_columns(stop=pl.col("start").shift(-1).over("subject_id"))
        .with_columns(
            start_days=duration_to_days(pl.col("start") - t0),
            stop_days=duration_to_days(pl.coalesce("stop", "end") - t0),
            event=pl.when(pl.col("stop").is_null()).then("event"),
        )
        .select("subject_id", pl.col("start").alias("prediction_time"), "start_days", "stop_days", "event")
        .collect()
    )
