"""Patient state summary: where one patient stands at a prediction time, and why the model thinks so.

:func:`summarize` (``TrajectoryModel.summarize``) gathers, as of the prediction time ``t`` (only events available
at ``t``, ``<=``, for every modality):

* the current risk of every outcome at each horizon (cumulative incidence in ``(t, t + h]``, higher = worse),
  without intervals: the model is one fit, with no ensemble or posterior to draw an interval for one patient's
  risk from, and none is invented (``interval_note`` says so);
* the risk trajectory: the risk the model gave as of every past availability time of an input event since time
  zero, and at ``t`` (the last point is the current risk);
* per lab: the latest value and time (units of ``numeric_value``), the least-squares trend per year over the last
  year with its number of points, and the model's forecast when the model has ``forecast`` (else None);
* imaging change between consecutive studies of each imaging code (Euclidean and cosine distance of the raw
  embeddings);
* the treatments, studies and notes for the timeline;
* attributions: integrated gradients of the log risk of the primary outcome at the first horizon over the value,
  image and note inputs of every token (see :mod:`migpt_traj.outputs._summary_attributions`).

Every number is a model-based estimate, not a clinical finding.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from migpt_traj.data.cohort import DAY_US, Cohort
from migpt_traj.data.datamodule import TokenDataset, collate_tokens
from migpt_traj.durations import DAYS_PER_YEAR
from migpt_traj.errors import ConfigError, ValueRangeError
from migpt_traj.outputs import _summary_text
from migpt_traj.outputs._summary_attributions import integrated_gradients, token_attributions, token_events
from migpt_traj.outputs._summary_history import imaging_changes, lab_summaries, subject_events_as_of, timeline_events
from migpt_traj.outputs._summary_predictions import days_between, lab_forecasts, risk_trajectory
from migpt_traj.outputs._summary_records import (
    AttributionSummary,
    ForecastPoint,
    ImagingChange,
    LabSummary,
    RiskEstimate,
    RiskPoint,
    TimelineEvent,
    TokenAttribution,
    from_jsonable,
    to_jsonable,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from migpt_traj.api import TrajectoryModel

__all__ = [
    "AttributionSummary",
    "ForecastPoint",
    "ImagingChange",
    "LabSummary",
    "PatientState",
    "RiskEstimate",
    "RiskPoint",
    "TimelineEvent",
    "TokenAttribution",
    "summarize",
]

_FORMAT_VERSION = 1
NO_INTERVAL_NOTE = (
    "No interval: the model is a single fit, with no ensemble or posterior to draw an interval for one patient's "
    "risk from; refitting on bootstrap samples of subjects would give one."
)


@dataclass(frozen=True)
class PatientState:
    """One patient's state as of ``prediction_time`` (see the module docstring). Times in days unless named.

    Attributes:
        subject_id: the subject.
        split: the subject's split (``train`` means the model saw this subject's outcome: in-sample).
        prediction_time: ``t``; only events available at ``t`` (``<=``) were used.
        time_zero: the subject's first timed event other than birth; ``days_since_time_zero`` = ``t`` minus it.
        age_years: age at ``t`` (None without a visible birth).
        outcomes: the model's outcomes, primary first.
        horizons_days: the risk horizons.
        risks: risk of every outcome at every horizon at ``t`` (outcome-major, then horizon).
        interval_note: how intervals were obtained, or why there are none.
        trajectory: risk as of every past input availability time since time zero, and at ``t`` (time-major).
        labs: one per measurement code seen by ``t``, sorted by code.
        forecast_level: central coverage of the forecast intervals; None without forecasts.
        forecast_note: where the forecasts come from, or why there are none.
        imaging_changes: consecutive-study changes per imaging code.
        timeline: treatments, imaging studies and notes available at ``t``, by time.
        attribution: integrated gradients of the log risk of ``outcomes[0]`` at ``horizons_days[0]``.

    Example:
        >>> state = model.summarize(cohort, subject_id=5, prediction_time=730.5)  # doctest: +SKIP
        >>> print(state.text)  # doctest: +SKIP
        >>> PatientState.from_dict(json.loads(json.dumps(state.to_dict()))) == state  # doctest: +SKIP
        True
    """

    subject_id: int
    split: str
    prediction_time: dt.datetime
    time_zero: dt.datetime
    days_since_time_zero: float
    age_years: float | None
    outcomes: tuple[str, ...]
    horizons_days: tuple[float, ...]
    risks: tuple[RiskEstimate, ...]
    interval_note: str
    trajectory: tuple[RiskPoint, ...]
    labs: tuple[LabSummary, ...]
    forecast_level: float | None
    forecast_note: str
    imaging_changes: tuple[ImagingChange, ...]
    timeline: tuple[TimelineEvent, ...]
    attribution: AttributionSummary

    @property
    def text(self) -> str:
        """A deterministic paragraph: risks, trajectory, labs, imaging, treatments and the main attributions."""
        return _summary_text.paragraph(self)

    def to_markdown(self) -> str:
        """The paragraph and the tables behind it (risks, labs, imaging change, attributions) as Markdown."""
        return _summary_text.markdown(self)

    def risk(self, event: str | None = None, horizon_days: float | None = None) -> float:
        """The current risk of ``event`` (default: the primary outcome) at ``horizon_days`` (default: the first)."""
        event = self.outcomes[0] if event is None else event
        horizon = self.horizons_days[0] if horizon_days is None else float(horizon_days)
        for r in self.risks:
            if r.event == event and r.horizon_days == horizon:
                return r.risk
        raise ConfigError(
            f"No risk for event {event!r} at horizon {horizon} days; this state has events {list(self.outcomes)} "
            f"and horizons {list(self.horizons_days)}."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (ISO datetimes, no NaN); ``text`` is included for readers and ignored on load."""
        out: dict[str, Any] = {"format_version": _FORMAT_VERSION, "kind": "model-based estimate"}
        out.update(to_jsonable(self))
        out["text"] = self.text
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatientState:
        """Rebuild a state written by :meth:`to_dict` (exactly: ``from_dict(s.to_dict()) == s``)."""
        version = data.get("format_version")
        if version != _FORMAT_VERSION:
            raise ConfigError(f"PatientState format_version {version!r} is not readable; this version reads 1.")
        return from_jsonable(cls, data)

    def save(self, directory: str | Path) -> Path:
        """Write ``summary.json``, ``summary.md`` and ``timeline.png`` into ``directory`` (created if missing)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        (out / "summary.md").write_text(self.to_markdown())
        self.plot(out / "timeline.png")
        return out

    def plot(self, path: str | Path | None = None) -> Figure:
        """Timeline figure: labs (small multiples, forecast band), treatments / studies / notes, risk over the past.

        Drawn on matplotlib's Agg canvas without pyplot (no global state); written to ``path`` (PNG) when given.
        """
        from migpt_traj.outputs._summary_plot import timeline_figure

        fig = timeline_figure(self)
        if path is not None:
            fig.savefig(str(path), dpi=110)
        return fig


# ---------------------------------------------------------------------------------------------------- building
def _subject_row(cohort: Cohort, subject_id: int) -> dict[str, Any]:
    if isinstance(subject_id, bool) or not isinstance(subject_id, int | np.integer):
        raise ConfigError(f"subject_id must be an integer; got {subject_id!r}.")
    row = cohort.subjects.filter(pl.col("subject_id") == int(subject_id))
    if row.is_empty():
        ids = cohort.subjects["subject_id"]
        lo, hi = ids.min(), ids.max()
        raise ConfigError(f"Subject {subject_id} is not in the cohort ({ids.len()} subjects, ids {lo!r} to {hi!r}).")
    return row.row(0, named=True)


def _resolve_time(row: dict[str, Any], prediction_time: dt.datetime | float) -> dt.datetime:
    """A datetime, or days after the subject's time zero; checked against the subject's at-risk window."""
    sid, tz = row["subject_id"], row["time_zero"]
    if tz is None:
        raise ValueRangeError(f"Subject {sid} has no timed event other than birth, so no time zero to summarise from.")
    if isinstance(prediction_time, dt.datetime):
        if prediction_time.tzinfo is not None:
            raise ConfigError(
                f"prediction_time {prediction_time.isoformat()} has a time zone; give a naive datetime like the "
                f"events' 'time' column."
            )
        t = prediction_time
    elif isinstance(prediction_time, int | float | np.floating | np.integer) and not isinstance(prediction_time, bool):
        days = float(prediction_time)
        if not math.isfinite(days):
            raise ValueRangeError(f"prediction_time must be finite days after time zero; got {prediction_time}.")
        t = tz + dt.timedelta(microseconds=round(days * DAY_US))
    else:
        raise ConfigError(
            f"prediction_time must be a datetime or days after time zero (a number); got {prediction_time!r}."
        )
    end, what = row["end_of_followup"], "end of follow-up"
    if row["outcome_time"] is not None and row["outcome_time"] <= end:
        end, what = row["outcome_time"], f"outcome {row['outcome']}"
    span = (end - tz) / dt.timedelta(days=1)
    valid = (
        f"valid prediction times for subject {sid} are {tz.isoformat()} <= t < {end.isoformat()} (days 0 to "
        f"< {span:g} after time zero)"
    )
    if t < tz:
        raise ValueRangeError(f"prediction_time {t.isoformat()} is before time zero; {valid}.")
    if t >= end:
        raise ValueRangeError(
            f"prediction_time {t.isoformat()} is at or after the {what} ({end.isoformat()}); {valid}."
        )
    return t


def summarize(
    model: TrajectoryModel,
    cohort: Cohort,
    *,
    subject_id: int,
    prediction_time: dt.datetime | float,
    horizons: Sequence[float] | None = None,
    forecast_days: Sequence[float] = (DAYS_PER_YEAR / 2, DAYS_PER_YEAR),
    level: float = 0.8,
    steps: int = 48,
) -> PatientState:
    """Summarise one subject's state as of ``prediction_time`` (module docstring; ``TrajectoryModel.summarize``).

    Args:
        model: a fitted :class:`~migpt_traj.api.TrajectoryModel`.
        cohort: the cohort holding the subject (any split).
        subject_id: the subject.
        prediction_time: a datetime, or days after the subject's time zero (its first timed event other than
            birth). It must lie in ``[time zero, first outcome)`` and before the end of follow-up.
        horizons: risk horizons in days (> 0); default ``model.config.horizons_days``. The first is the
            attribution target's horizon.
        forecast_days: days after ``t`` at which labs are forecast (used when the model has ``forecast``).
        level: central coverage of the forecast intervals.
        steps: midpoint Riemann steps of integrated gradients (completeness error falls as ``1 / steps²``).

    Raises:
        ModelStateError: the model is not fitted.
        ConfigError: unknown subject, bad horizons, ``steps`` < 1 or ``level`` outside (0, 1).
        ValueRangeError: ``prediction_time`` before time zero, at or after the outcome or the end of follow-up.
    """
    module = model._require_fit()
    pre = model.preprocessor
    assert pre is not None
    if steps < 1:
        raise ConfigError(f"steps must be >= 1; got {steps}.")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1); got {level}.")
    hz = [float(h) for h in model._checked_horizons(model.config.horizons_days if horizons is None else horizons)]
    if min(hz) <= 0:
        raise ConfigError(f"Horizons must be > 0 days for a summary; got {hz}.")
    row = _subject_row(cohort, subject_id)
    sid, tz = int(row["subject_id"]), row["time_zero"]
    t = _resolve_time(row, prediction_time)
    conv = cohort.conventions
    excluded = sorted({*pre.excluded_codes, *cohort.outcomes, conv.end_of_followup_code, conv.birth_code})
    events = subject_events_as_of(cohort, sid, t)

    trajectory = risk_trajectory(model, cohort, events, sid=sid, t=t, tz=tz, horizons=hz, excluded=excluded)
    risks = [RiskEstimate(event=p.event, horizon_days=p.horizon_days, risk=p.risk) for p in trajectory if p.time == t]

    labs = lab_summaries(events, t, excluded=excluded)
    forecasts, forecast_note = lab_forecasts(
        model, cohort, sid=sid, t=t, codes=[lab.code for lab in labs], forecast_days=forecast_days, level=level
    )
    if forecasts is not None:
        labs = [dataclasses.replace(lab, forecast=forecasts.get(lab.code)) for lab in labs]

    table = model._tensorize(
        cohort,
        pl.DataFrame({"subject_id": [sid], "cutoff_time": [t]}).cast(
            {"subject_id": pl.Int64, "cutoff_time": pl.Datetime("us")}
        ),
    )
    batch = collate_tokens(TokenDataset(table), [0])
    f_x, f_0, per_position = integrated_gradients(module, batch, cause_index=0, horizon_days=hz[0], steps=steps)
    tokens = token_events(
        events,
        pre,
        notes_used=model.note_identity is not None and model.config.use_notes,
        max_len=model.config.max_len,
        code_ids=table.code_id[table.offsets[0] : table.offsets[1]],
    )
    births = events.filter((pl.col("code") == conv.birth_code) & pl.col("time").is_not_null())["time"]
    age = days_between(t, births.min()) / DAYS_PER_YEAR if births.len() else None  # type: ignore[arg-type]
    return PatientState(
        subject_id=sid,
        split=str(row["split"]),
        prediction_time=t,
        time_zero=tz,
        days_since_time_zero=days_between(t, tz),
        age_years=age,
        outcomes=tuple(model.outcomes),
        horizons_days=tuple(hz),
        risks=tuple(risks),
        interval_note=NO_INTERVAL_NOTE,
        trajectory=tuple(trajectory),
        labs=tuple(labs),
        forecast_level=level if forecasts is not None else None,
        forecast_note=forecast_note,
        imaging_changes=tuple(imaging_changes(events)),
        timeline=tuple(timeline_events(events)),
        attribution=AttributionSummary(
            event=model.outcomes[0],
            horizon_days=hz[0],
            steps=steps,
            log_risk=f_x,
            baseline_log_risk=f_0,
            tokens=tuple(token_attributions(tokens, per_position, batch)),
        ),
    )
