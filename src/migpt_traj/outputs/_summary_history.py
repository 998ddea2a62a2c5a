"""What a subject's record says as of a prediction time, straight from the events: labs and their trends, imaging
change between studies, and the treatments, studies and notes for the timeline.

Every function sees only the subject's events available at the prediction time (``available_time``, else
``time``, ``<= t``; static rows always), the same as-of rule as the model's inputs. Values are in the units of
``numeric_value`` (nothing normalised).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from migpt_traj.data.cohort import DAY_US, Cohort
from migpt_traj.durations import DAYS_PER_YEAR
from migpt_traj.outputs._summary_records import ImagingChange, LabSummary, TimelineEvent

__all__ = ["imaging_changes", "lab_summaries", "note_snippet", "subject_events_as_of", "timeline_events"]

_NOTE_CHARS = 160


def subject_events_as_of(cohort: Cohort, subject_id: int, prediction_time: dt.datetime) -> pl.DataFrame:
    """The subject's events available at ``prediction_time`` (``<=``; static rows always), in the cohort's order.

    Adds ``row`` (position in ``cohort.events``: input order), ``avail`` (``available_time``, else ``time``) and
    ``modality`` (by the cohort's code conventions).
    """
    avail = pl.coalesce("available_time", "time") if "available_time" in cohort.events.columns else pl.col("time")
    t = pl.lit(prediction_time, dtype=pl.Datetime("us"))
    return (
        cohort.events.with_row_index("row")
        .filter(pl.col("subject_id") == subject_id)
        .with_columns(avail=avail, modality=cohort.conventions.modality_expr())
        .filter(pl.col("time").is_null() | (pl.col("avail") <= t))
    )


def _datetimes(series: pl.Series) -> tuple[dt.datetime, ...]:
    return tuple(series.to_list())


def lab_summaries(
    events: pl.DataFrame,
    prediction_time: dt.datetime,
    *,
    excluded: list[str],
    window_days: float = DAYS_PER_YEAR,
) -> list[LabSummary]:
    """Latest value, count, least-squares trend over the last ``window_days`` and the series of every lab.

    Labs are the timed events of the measurement modality (a ``numeric_value``, no note, image or treatment
    prefix) outside ``excluded`` (outcomes, end of follow-up, birth). The trend is the slope of value on time in
    years (``np.polyfit(years, values, 1)[0]``) over the measurements with ``time`` in
    ``(t - window_days, t]``, computed in closed form per code (``Σ(x - x̄)(y - ȳ) / Σ(x - x̄)²``). Codes are
    sorted by name; within a code, measurements by time then input order (the latest is the last).
    """
    labs = events.filter(
        (pl.col("modality") == "measurement") & ~pl.col("code").is_in(excluded) & pl.col("numeric_value").is_not_null()
    ).sort("code", "time", "row")
    if labs.is_empty():
        return []
    t = pl.lit(prediction_time, dtype=pl.Datetime("us"))
    years = (pl.col("time") - t).dt.total_microseconds().cast(pl.Float64) / (DAY_US * DAYS_PER_YEAR)
    y = pl.col("numeric_value").cast(pl.Float64)
    in_window = (pl.col("time") - t).dt.total_microseconds() > -round(window_days * DAY_US)
    window = labs.filter(in_window).with_columns(x=years, y=y)
    trends = window.group_by("code").agg(
        n=pl.len(),
        sxy=((pl.col("x") - pl.col("x").mean()) * (pl.col("y") - pl.col("y").mean())).sum(),
        sxx=((pl.col("x") - pl.col("x").mean()) ** 2).sum(),
    )
    series = labs.group_by("code", maintain_order=True).agg(pl.col("time"), y.alias("values"))
    table = series.join(trends, on="code", how="left").sort("code")
    out = []
    for row in table.iter_rows(named=True):
        n = int(row["n"] or 0)
        sxx = float(row["sxx"] or 0.0)
        slope = float(row["sxy"]) / sxx if n >= 2 and sxx > 0 else None
        times, values = tuple(row["time"]), tuple(float(v) for v in row["values"])
        out.append(
            LabSummary(
                code=row["code"],
                latest_value=values[-1],
                latest_time=times[-1],
                n_measurements=len(values),
                trend_per_year=slope,
                trend_points=n,
                trend_window_days=float(window_days),
                times=times,
                values=values,
            )
        )
    return out


def imaging_changes(events: pl.DataFrame) -> list[ImagingChange]:
    """Euclidean and cosine distance between consecutive studies (by time) of each imaging code with an embedding.

    Embeddings are compared as given (raw scale); studies of different codes are not compared (their embedding
    spaces need not be the same). Sorted by code, then time.
    """
    if "embedding" not in events.columns:
        return []
    studies = events.filter((pl.col("modality") == "image") & pl.col("embedding").is_not_null()).sort(
        "code", "time", "row"
    )
    out: list[ImagingChange] = []
    for (code,), group in studies.group_by("code", maintain_order=True):
        if group.height < 2:
            continue
        mat = np.asarray(group["embedding"].to_list(), dtype=np.float64)
        a, b = mat[:-1], mat[1:]
        euclid = np.linalg.norm(b - a, axis=1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        cosine = 1.0 - np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)
        times = _datetimes(group["time"])
        for i in range(group.height - 1):
            gap = (times[i + 1] - times[i]) / dt.timedelta(days=1)
            out.append(
                ImagingChange(
                    code=str(code),
                    from_time=times[i],
                    to_time=times[i + 1],
                    days_between=float(gap),
                    euclidean=float(euclid[i]),
                    cosine=float(cosine[i]) if norms[i] > 0 else None,
                )
            )
    return out


def timeline_events(events: pl.DataFrame) -> list[TimelineEvent]:
    """Treatment starts (with dose), imaging studies and notes (with the start of their text), by time."""
    picked = events.filter(pl.col("time").is_not_null() & pl.col("modality").is_in(["treatment", "image", "note"]))
    picked = picked.sort("time", "row")
    out = []
    for row in picked.select("modality", "code", "time", "numeric_value", "text_value").iter_rows():
        kind, code, time, value, text = row
        out.append(
            TimelineEvent(
                kind=str(kind),
                code=str(code),
                time=time,
                value=float(value) if value is not None and kind == "treatment" else None,
                text=note_snippet(text) if kind == "note" else None,
            )
        )
    return out


def note_snippet(text: str | None) -> str | None:
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= _NOTE_CHARS else flat[: _NOTE_CHARS - 1] + "…"
