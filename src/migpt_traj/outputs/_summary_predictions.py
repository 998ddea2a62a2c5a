"""What the model predicts for a patient state: the risk trajectory over the past and the lab forecasts.

Both are thin calls of the model's own public methods (``predict_risk`` with explicit prediction times, and
``forecast`` when the model has one), so a summary's numbers are the numbers a user would get from them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

import polars as pl

from migpt_traj.data.cohort import DAY_US, Cohort
from migpt_traj.errors import ModelStateError
from migpt_traj.outputs._summary_records import ForecastPoint, RiskPoint

if TYPE_CHECKING:
    from migpt_traj.api import TrajectoryModel

__all__ = ["days_between", "lab_forecasts", "risk_trajectory"]


def days_between(t: dt.datetime, tz: dt.datetime) -> float:
    """``t - tz`` in days (float, microsecond precision)."""
    return (t - tz) / dt.timedelta(microseconds=1) / DAY_US


def risk_trajectory(
    model: TrajectoryModel,
    cohort: Cohort,
    events: pl.DataFrame,
    *,
    sid: int,
    t: dt.datetime,
    tz: dt.datetime,
    horizons: list[float],
    excluded: list[str],
) -> list[RiskPoint]:
    """Risk as of every distinct availability time of an input event in ``[time zero, t]``, and at ``t``."""
    inputs = events.filter(pl.col("time").is_not_null() & ~pl.col("code").is_in(excluded) & (pl.col("avail") >= tz))
    times = sorted({*inputs["avail"].to_list(), t})
    frame = pl.DataFrame({"subject_id": [sid] * len(times), "prediction_time": times}).cast(
        {"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")}
    )
    risk = model.predict_risk(cohort, horizons=horizons, prediction_times=frame)
    order = {e: i for i, e in enumerate(model.outcomes)}
    risk = risk.with_columns(k=pl.col("event").replace_strict(order, return_dtype=pl.Int64)).sort(
        "prediction_time", "k", "horizon_days"
    )
    return [
        RiskPoint(time=p, days=days_between(p, tz), event=e, horizon_days=float(h), risk=float(r))
        for p, e, h, r in risk.select("prediction_time", "event", "horizon_days", "risk").iter_rows()
    ]


def lab_forecasts(
    model: TrajectoryModel,
    cohort: Cohort,
    *,
    sid: int,
    t: dt.datetime,
    codes: list[str],
    forecast_days: Sequence[float],
    level: float,
) -> tuple[dict[str, tuple[ForecastPoint, ...]] | None, str]:
    """The model's lab forecasts at ``forecast_days`` after ``t`` (None, with the reason, when it has none)."""
    forecast = getattr(model, "forecast", None)
    if forecast is None:
        return None, "No forecasts: this model has no forecast method."
    if not codes:
        return None, "No forecasts: no lab measured by the prediction time."
    frame = pl.DataFrame({"subject_id": [sid], "prediction_time": [t]}).cast(
        {"subject_id": pl.Int64, "prediction_time": pl.Datetime("us")}
    )
    try:
        fut = forecast(cohort, at=list(forecast_days), prediction_times=frame, codes=None, level=level)
    except (ModelStateError, NotImplementedError) as err:
        return None, f"No forecasts: {err}"
    if "dim" in fut.columns:
        fut = fut.filter(pl.col("dim").is_null())
    fut = fut.filter(pl.col("code").is_in(codes)).sort("code", "target_days")
    out: dict[str, tuple[ForecastPoint, ...]] = {}
    for (code,), group in fut.group_by("code", maintain_order=True):
        out[str(code)] = tuple(
            ForecastPoint(
                target_days=float(d),
                mean=float(m),
                lower=None if lo is None else float(lo),
                upper=None if hi is None else float(hi),
            )
            for d, m, lo, hi in group.select("target_days", "mean", "lower", "upper").iter_rows()
        )
    return out, f"Forecasts from the model's forecast head: mean and central {100 * level:g} % interval."
