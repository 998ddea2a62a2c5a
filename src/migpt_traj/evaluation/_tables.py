"""Descriptive tables of an evaluation (TRIPOD+AI items 20a/20b): cohort per split, flow of subjects at each landmark,
measurement missingness at each landmark, and subgroup membership.

All vectorised polars over subjects; the only Python loops are over splits, landmarks, horizons and outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import numpy as np
import polars as pl
from numpy.typing import NDArray

from migpt_traj.data.cohort import SPLITS, Cohort, duration_to_days
from migpt_traj.errors import ConfigError, did_you_mean

__all__ = ["AGE_SUBGROUP", "cohort_description", "flow_table", "missingness_table", "subgroup_levels"]

AGE_SUBGROUP = "age_years"
_DAYS_PER_YEAR = 365.25
_MISSINGNESS_MODALITIES = ("measurement", "image", "note")
Masks = dict[tuple[str, str], NDArray[np.bool_]]


def cohort_description(cohort: Cohort) -> pl.DataFrame:
    """:meth:`Cohort.describe` (one row per split and ``all``), float nulls as NaN."""
    table = cohort.describe()
    floats = [c for c, t in table.schema.items() if t.is_float()]
    return table.with_columns(pl.col(floats).fill_null(float("nan")))


def _at_risk(cohort: Cohort, landmarks: Sequence[float]) -> pl.DataFrame:
    return cohort.labels(landmarks=list(landmarks)).join(cohort.splits, on="subject_id", how="left")


def _grid(landmarks: Sequence[float]) -> pl.DataFrame:
    return pl.DataFrame({"split": list(SPLITS)}).join(
        pl.DataFrame({"landmark_days": list(landmarks)}, schema={"landmark_days": pl.Float64}), how="cross"
    )


def flow_table(
    cohort: Cohort, *, landmarks: Sequence[float], horizons: Sequence[float], outcomes: Sequence[str]
) -> pl.DataFrame:
    """Subjects at risk at each landmark per split, and what happened to them by each horizon.

    Columns: ``split, landmark_days, horizon_days, event, n_at_risk, n_events`` (that outcome by the horizon,
    ``<=``), ``n_competing`` (another outcome first), ``n_censored`` (follow-up ended before the horizon, no
    outcome) and ``n_event_free`` (followed beyond the horizon without an outcome).
    """
    lab = _at_risk(cohort, landmarks)
    dur, ev = pl.col("duration_days"), pl.col("event")
    frames = []
    for h in horizons:
        by_h = dur <= h
        for outcome in outcomes:
            counts = lab.group_by("split", "landmark_days").agg(
                n_at_risk=pl.len().cast(pl.Int64),
                n_events=(by_h & (ev == outcome)).sum().cast(pl.Int64),
                n_competing=(by_h & ev.is_not_null() & (ev != outcome)).sum().cast(pl.Int64),
                n_censored=(by_h & ev.is_null()).sum().cast(pl.Int64),
                n_event_free=(dur > h).sum().cast(pl.Int64),
            )
            frames.append(
                _grid(landmarks)
                .join(counts, on=["split", "landmark_days"], how="left")
                .with_columns(pl.exclude("split", "landmark_days").fill_null(0))
                .with_columns(horizon_days=pl.lit(float(h)), event=pl.lit(outcome))
            )
    cols = ["split", "landmark_days", "horizon_days", "event", "n_at_risk", "n_events", "n_competing"]
    return pl.concat(frames).select(*cols, "n_censored", "n_event_free").sort("split", "landmark_days", "horizon_days")


def missingness_table(cohort: Cohort, *, landmarks: Sequence[float]) -> pl.DataFrame:
    """Share of the subjects at risk at each landmark (per split) with no value of each code by then.

    Codes are the measurement, image and note codes of the cohort; a value counts when it is available
    (``available_time``, else ``time``) at or before the prediction time.

    Columns: ``split, landmark_days, code, n_at_risk, n_missing, share_missing``.
    """
    ev = cohort.events
    avail = pl.coalesce("available_time", "time") if "available_time" in ev.columns else pl.col("time")
    inputs = (
        ev.lazy()
        .filter(pl.col("time").is_not_null())
        .with_columns(modality=cohort.conventions.modality_expr(), _avail=avail)
        .filter(pl.col("modality").is_in(_MISSINGNESS_MODALITIES))
        .select("subject_id", "code", "_avail")
    )
    codes = inputs.select(pl.col("code").unique()).collect().sort("code")
    lab = _at_risk(cohort, landmarks).select("subject_id", "prediction_time", "landmark_days", "split")
    seen = (
        lab.lazy()
        .join(inputs, on="subject_id", how="inner")
        .filter(pl.col("_avail") <= pl.col("prediction_time"))
        .group_by("split", "landmark_days", "code")
        .agg(n_with=pl.col("subject_id").n_unique().cast(pl.Int64))
        .collect()
    )
    at_risk = lab.group_by("split", "landmark_days").agg(n_at_risk=pl.len().cast(pl.Int64))
    return (
        _grid(landmarks)
        .join(at_risk, on=["split", "landmark_days"], how="left")
        .with_columns(pl.col("n_at_risk").fill_null(0))
        .join(codes, how="cross")
        .join(seen, on=["split", "landmark_days", "code"], how="left")
        .with_columns(n_missing=pl.col("n_at_risk") - pl.col("n_with").fill_null(0))
        .with_columns(
            share_missing=pl.when(pl.col("n_at_risk") > 0)
            .then(pl.col("n_missing") / pl.col("n_at_risk"))
            .otherwise(float("nan"))
        )
        .select("split", "landmark_days", "code", "n_at_risk", "n_missing", "share_missing")
        .sort("split", "landmark_days", "code")
    )


def _band_labels(cuts: Sequence[float]) -> list[str]:
    edges = [f"{c:g}" for c in cuts]
    return [f"<{edges[0]}", *[f"{a}-{b}" for a, b in pairwise(edges)], f">={edges[-1]}"]


def subgroup_levels(
    cohort: Cohort, subgroups: Sequence[str] | None, *, age_bands: Sequence[float]
) -> Callable[[pl.DataFrame], Masks]:
    """Subgroup membership of label rows: ``{(subgroup, level): mask}``.

    A code subgroup holds the subjects with that code as a static row or as a timed event at or before time zero
    (level ``"yes"``; the others ``"no"``). The age subgroup (:data:`AGE_SUBGROUP`) bands age in years at the
    prediction time by ``age_bands`` (``[lo, hi)``), ``"unknown"`` without a birth code.

    Raises:
        ConfigError: a code that does not occur in the cohort, or age bands that are not increasing numbers.
    """
    cuts = [float(c) for c in age_bands]
    if not cuts or any(b <= a for a, b in pairwise(cuts)) or not np.all(np.isfinite(cuts)):
        raise ConfigError(f"'age_bands' must be increasing finite ages in years; got {list(age_bands)}.")
    codes = [subgroups] if isinstance(subgroups, str) else list(subgroups or [])
    present = set(cohort.events["code"].unique().to_list())
    members: dict[str, NDArray[np.int64]] = {}
    for code in codes:
        if code not in present:
            raise ConfigError(f"Subgroup code {code!r} does not occur in the cohort.{did_you_mean(code, present)}")
        ids = (
            cohort.events.lazy()
            .filter(pl.col("code") == code)
            .join(cohort.subjects.lazy().select("subject_id", "time_zero"), on="subject_id", how="left")
            .filter(pl.col("time").is_null() | (pl.col("time") <= pl.col("time_zero")))
            .select(pl.col("subject_id").unique())
            .collect()["subject_id"]
        )
        members[code] = np.sort(ids.to_numpy())
    births = cohort.subjects.select("subject_id", "birth_time")
    labels = _band_labels(cuts)

    def masks(rows: pl.DataFrame) -> Masks:
        sid = rows["subject_id"].to_numpy()
        out: Masks = {}
        for code, ids in members.items():
            yes = np.isin(sid, ids)
            out[(code, "yes")], out[(code, "no")] = yes, ~yes
        age = (
            rows.select("subject_id", "prediction_time")
            .join(births, on="subject_id", how="left", maintain_order="left")
            .select(duration_to_days(pl.col("prediction_time") - pl.col("birth_time")) / _DAYS_PER_YEAR)
            .to_series()
            .to_numpy()
            .astype(np.float64)
        )
        known = np.isfinite(age)
        band = np.searchsorted(np.asarray(cuts), np.where(known, age, 0.0), side="right")
        for i, label in enumerate(labels):
            out[(AGE_SUBGROUP, label)] = known & (band == i)
        if not known.all():
            out[(AGE_SUBGROUP, "unknown")] = ~known
        return out

    return masks
