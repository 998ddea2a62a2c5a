"""Histories for treatment suggestions: the options, intervened histories, and "no further start" follow-up.

Three event-level transformations of a validated cohort, all vectorised polars:

* :func:`resolve_options`: the options a fitted model can answer for (treatment codes of its train vocabulary),
  ``"none"`` (no new treatment) first.
* :func:`intervened_cohort`: one *virtual subject* per (prediction row, option): the subject's own events, the
  treatment rows timed exactly at the prediction time removed (they are the decision being evaluated) and, for a
  treatment option, a ``TREATMENT//<option>`` row at the prediction time (available then). Virtual subjects keep
  every query independent (an option added at one landmark must not be visible at the next landmark of the same
  subject).
* :func:`decision_cohort`: the cohort with every treatment row moved 1 µs later, so that the features at a
  decision time ``t`` see the labs of the visit at ``t`` but not the treatment decided at ``t``.
* :func:`censor_at_next_start`: a query's follow-up cut at the first treatment start strictly after its
  prediction time (the "no treatment changes after t" estimand of the counterfactual).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from migpt_traj.data.cohort import DAY_US, Cohort
from migpt_traj.errors import ConfigError, did_you_mean

__all__ = [
    "NO_NEW_TREATMENT",
    "censor_at_next_start",
    "decision_cohort",
    "intervened_cohort",
    "resolve_options",
    "treatment_starts",
]

#: The option name of "no new treatment" (a treatment already in force before the prediction time continues).
NO_NEW_TREATMENT = "none"


def resolve_options(
    vocabulary: Sequence[str], prefix: str, options: Sequence[str] | None
) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    """Option names and their codes (``None`` for ``"none"``), ``"none"`` first.

    Args:
        vocabulary: the model's train vocabulary (codes).
        prefix: the treatment prefix (``CodeConventions.treatment_prefix``).
        options: names (``"drug_a"``), full codes (``"TREATMENT//drug_a"``) or ``"none"``; None = all seen in
            training. ``"none"`` is always added (it is every comparison's reference).

    Raises:
        ConfigError: an option that is not a treatment code of the train vocabulary (the message lists them).
    """
    seen = [c[len(prefix) :] for c in vocabulary if c.startswith(prefix)]
    if isinstance(options, str):
        raise ConfigError(f"'options' must be a list of option names, not the string {options!r}; e.g. [{options!r}].")
    wanted = seen if options is None else [o[len(prefix) :] if o.startswith(prefix) else o for o in options]
    valid = [NO_NEW_TREATMENT, *seen]
    for name in wanted:
        if name not in valid:
            raise ConfigError(
                f"Unknown treatment option {name!r}: the model saw no {prefix}{name} in its train split. Valid "
                f"options are {valid}.{did_you_mean(name, valid)}"
            )
    names = [NO_NEW_TREATMENT, *dict.fromkeys(o for o in wanted if o != NO_NEW_TREATMENT)]
    return tuple(names), tuple(None if n == NO_NEW_TREATMENT else prefix + n for n in names)


def _trusted(cohort: Cohort, events: pl.DataFrame, splits: pl.DataFrame) -> Cohort:
    """A cohort from events derived from a validated one (sorted by subject and time, statics first)."""
    events = events.sort("subject_id", "time", nulls_last=False, maintain_order=True)
    return Cohort(
        events=events,
        splits=splits,
        outcomes=cohort.outcomes,
        conventions=cohort.conventions,
        metadata=dict(cohort.metadata),
        codes=None,
    )


def intervened_cohort(cohort: Cohort, rows: pl.DataFrame, codes: Sequence[str | None]) -> tuple[Cohort, pl.DataFrame]:
    """Virtual subjects: ``rows`` (``subject_id, prediction_time``) x ``codes``, each history intervened at t.

    Returns:
        ``(cohort, samples)``: ``samples`` has ``subject_id`` (virtual), ``cutoff_time`` (= the prediction time),
        ``row`` (index into ``rows``) and ``option_index`` (index into ``codes``), ordered row-major.
    """
    n_opt = len(codes)
    grid = (
        rows.select("subject_id", "prediction_time")
        .with_row_index("row")
        .join(pl.DataFrame({"option_index": np.arange(n_opt)}, schema={"option_index": pl.Int64}), how="cross")
        .with_columns(virtual_id=(pl.col("row").cast(pl.Int64) * n_opt + pl.col("option_index") + 1))
        .sort("row", "option_index")
    )
    prefix = cohort.conventions.treatment_prefix
    own = (
        cohort.events.join(grid.select("subject_id", "prediction_time", "virtual_id"), on="subject_id", how="inner")
        .filter(~(pl.col("code").str.starts_with(prefix) & (pl.col("time") == pl.col("prediction_time"))))
        .drop("subject_id", "prediction_time")
        .rename({"virtual_id": "subject_id"})
    )
    option_codes = pl.Series("code", list(codes), dtype=pl.String)
    added = (
        grid.with_columns(code=option_codes.gather(grid["option_index"]))
        .filter(pl.col("code").is_not_null())
        .select(pl.col("virtual_id").alias("subject_id"), pl.col("prediction_time").alias("time"), "code")
    )
    if "available_time" in cohort.events.columns:
        added = added.with_columns(available_time=pl.col("time"))
    events = pl.concat([own.select(cohort.events.columns), added], how="diagonal_relaxed").select(cohort.events.columns)
    split = cohort.splits.join(grid.select("subject_id", "virtual_id"), on="subject_id", how="inner")
    splits = split.select(pl.col("virtual_id").alias("subject_id"), "split").sort("subject_id")
    samples = grid.select(
        pl.col("virtual_id").alias("subject_id"), pl.col("prediction_time").alias("cutoff_time"), "row", "option_index"
    )
    return _trusted(cohort, events, splits), samples


def decision_cohort(cohort: Cohort) -> Cohort:
    """The cohort with each treatment row (time and availability) 1 µs later: a decision at t is not its own input."""
    is_treatment = pl.col("code").str.starts_with(cohort.conventions.treatment_prefix) & pl.col("time").is_not_null()
    shift = pl.duration(microseconds=1)
    cols = [pl.when(is_treatment).then(pl.col("time") + shift).otherwise(pl.col("time")).alias("time")]
    if "available_time" in cohort.events.columns:
        cols.append(
            pl.when(is_treatment)
            .then(pl.col("available_time") + shift)
            .otherwise(pl.col("available_time"))
            .alias("available_time")
        )
    return _trusted(cohort, cohort.events.with_columns(cols), cohort.splits)


def treatment_starts(cohort: Cohort) -> pl.DataFrame:
    """First start of each treatment code per subject: ``subject_id, code, start_time`` (sorted by time)."""
    prefix = cohort.conventions.treatment_prefix
    return (
        cohort.events.filter(pl.col("code").str.starts_with(prefix) & pl.col("time").is_not_null())
        .group_by("subject_id", "code")
        .agg(start_time=pl.col("time").min())
        .sort("start_time", "subject_id")
    )


def censor_at_next_start(
    cohort: Cohort, queries: pl.DataFrame, *, duration: np.ndarray, cause: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Durations (days) and causes with follow-up cut at the first treatment start strictly after each query.

    Args:
        queries: ``subject_id, prediction_time`` per query (any order).
        duration, cause: the query labels (days; 0 = censored, k = outcome k, -1 = unlabelled, left as is).

    Returns:
        ``(duration, cause)``: where a start at ``s`` falls strictly before the labelled time, the duration is
        ``s - t`` days and the cause 0 (censored there); an outcome at the start time itself is kept.
    """
    prefix = cohort.conventions.treatment_prefix
    starts = (
        cohort.events.filter(pl.col("code").str.starts_with(prefix) & pl.col("time").is_not_null())
        .select("subject_id", pl.col("time").alias("start_time"))
        .unique()
        .sort("start_time")
    )
    q = queries.select("subject_id", pl.col("prediction_time").cast(pl.Datetime("us"))).with_row_index("_q")
    nxt = (
        q.sort("prediction_time")
        .join_asof(
            starts,
            left_on="prediction_time",
            right_on="start_time",
            by="subject_id",
            strategy="forward",
            allow_exact_matches=False,
            check_sortedness=False,  # both sides are sorted by time just above
        )
        .sort("_q")
    )
    gap = (nxt["start_time"] - nxt["prediction_time"]).dt.total_microseconds().to_numpy().astype(np.float64) / DAY_US
    gap = np.where(np.isnan(gap), np.inf, gap)
    cut = (cause >= 0) & (gap < duration)
    return np.where(cut, gap, duration).astype(np.float32), np.where(cut, 0, cause).astype(np.int64)
