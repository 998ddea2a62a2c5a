"""The records a :class:`~migpt_traj.outputs.summary.PatientState` is made of, and their JSON conversion.

Every record is a frozen dataclass of plain Python values (``int``, ``float``, ``str``, ``None``,
``datetime.datetime``) and tuples of them or of other records, so two states compare with ``==`` and a state
survives ``to_dict`` → ``json`` → ``from_dict`` exactly: datetimes are written as ISO 8601 strings with
microseconds, floats by ``repr`` (JSON numbers), and missing numbers as ``null`` (never NaN).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from dataclasses import dataclass
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = [
    "AttributionSummary",
    "ForecastPoint",
    "ImagingChange",
    "LabSummary",
    "RiskEstimate",
    "RiskPoint",
    "TimelineEvent",
    "TokenAttribution",
    "from_jsonable",
    "to_jsonable",
]

R = TypeVar("R")


@dataclass(frozen=True)
class RiskEstimate:
    """Cumulative incidence of ``event`` in ``(t, t + horizon_days]`` given event-free at ``t`` (higher = worse).

    ``lower`` / ``upper`` are None: the model gives no interval (see ``PatientState.interval_note``).
    """

    event: str
    horizon_days: float
    risk: float
    lower: float | None = None
    upper: float | None = None


@dataclass(frozen=True)
class RiskPoint:
    """The risk the model gave as of ``time`` (a past availability time of an input event, or the prediction time).

    ``days`` is ``time`` in days after the subject's time zero.
    """

    time: dt.datetime
    days: float
    event: str
    horizon_days: float
    risk: float


@dataclass(frozen=True)
class ForecastPoint:
    """A forecast of a lab ``target_days`` after the prediction time: mean and central interval (original units)."""

    target_days: float
    mean: float
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class LabSummary:
    """One numeric measurement code as of the prediction time, in the units of ``numeric_value``.

    Attributes:
        code: the measurement code.
        latest_value, latest_time: the last measurement available at the prediction time.
        n_measurements: measurements available at the prediction time.
        trend_per_year: least-squares slope of value on time (units per year) over the measurements taken in
            ``(t - trend_window_days, t]``; None with fewer than 2 points or a single time.
        trend_points: number of measurements in that window.
        trend_window_days: the window length (days).
        times, values: every available measurement (for the timeline), oldest first.
        forecast: the model's forecast after ``t``; None when the model gives none.
    """

    code: str
    latest_value: float
    latest_time: dt.datetime
    n_measurements: int
    trend_per_year: float | None
    trend_points: int
    trend_window_days: float
    times: tuple[dt.datetime, ...]
    values: tuple[float, ...]
    forecast: tuple[ForecastPoint, ...] | None = None


@dataclass(frozen=True)
class ImagingChange:
    """Change of the image embedding between two consecutive studies of one imaging code (raw embedding scale).

    ``euclidean`` = ‖b − a‖₂; ``cosine`` = 1 − a·b / (‖a‖ ‖b‖) (0 = same direction, 2 = opposite; None when an
    embedding is all zeros).
    """

    code: str
    from_time: dt.datetime
    to_time: dt.datetime
    days_between: float
    euclidean: float
    cosine: float | None


@dataclass(frozen=True)
class TimelineEvent:
    """A treatment start, imaging study or note available at the prediction time (for the timeline).

    ``value``: the dose of a treatment (None without one); ``text``: the start of a note's text.
    """

    kind: str
    code: str
    time: dt.datetime
    value: float | None = None
    text: str | None = None


@dataclass(frozen=True)
class TokenAttribution:
    """The integrated-gradients attribution of one input token (see ``PatientState.attribution_*``).

    Attributes:
        position: index of the token in the model's input sequence (0 is the start token).
        kind: modality of the token (``measurement``, ``image``, ``note``, ``static``, ``treatment``, ``event``).
        code: the event's code.
        time: the event time (None for static rows); ``available_time`` when it became known.
        value: the event's ``numeric_value`` in original units (None without one).
        text: the start of a note's text (None otherwise).
        attribution: contribution to the target, in log-risk units; positive = raises the risk.
    """

    position: int
    kind: str
    code: str
    time: dt.datetime | None
    available_time: dt.datetime | None
    value: float | None
    text: str | None
    attribution: float


@dataclass(frozen=True)
class AttributionSummary:
    """Integrated gradients of ``log CIF_event(horizon_days)`` as of the prediction time (``_summary_attributions``).

    Attributes:
        event, horizon_days: the target: log of the risk of ``event`` within ``horizon_days``.
        steps: midpoint Riemann steps along the straight path from the baseline to the input.
        log_risk: the target at the patient's input, ``f(x)``.
        baseline_log_risk: the target at the baseline, ``f(x0)``: every value at its train median (normal score
            0), every image embedding at the train mean, every note embedding zero, with the same codes, times and
            ages as the record (what the record's structure alone says).
        tokens: one entry per input token with a value, an image or a note, in input order.
    """

    event: str
    horizon_days: float
    steps: int
    log_risk: float
    baseline_log_risk: float
    tokens: tuple[TokenAttribution, ...]

    @property
    def total(self) -> float:
        """Sum of the token attributions (≈ ``log_risk - baseline_log_risk``: completeness)."""
        return float(sum(t.attribution for t in self.tokens))

    @property
    def completeness_gap(self) -> float:
        """``log_risk - baseline_log_risk - total``: the Riemann error of the path integral (0 when exact)."""
        return self.log_risk - self.baseline_log_risk - self.total

    def top(self, k: int) -> tuple[TokenAttribution, ...]:
        """The ``k`` tokens with the largest absolute attribution (ties: earlier position first)."""
        return tuple(sorted(self.tokens, key=lambda t: (-abs(t.attribution), t.position))[:k])


# ---------------------------------------------------------------------------------------------------- JSON
def to_jsonable(value: Any) -> Any:
    """Records → dicts, tuples → lists, datetimes → ISO strings; everything else as is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="microseconds")
    return value


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        return _convert(inner[0], value)
    if origin is tuple:
        item = get_args(hint)[0]
        return tuple(_convert(item, v) for v in value)
    if hint is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if hint is float:
        return float(value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_jsonable(hint, value)
    return value


def from_jsonable(cls: type[R], data: typing.Mapping[str, Any]) -> R:
    """Rebuild the record ``cls`` from :func:`to_jsonable` output (unknown keys are ignored)."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: _convert(hints[name], data.get(name)) for name in names})
