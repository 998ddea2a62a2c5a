"""Input checks shared by the survival metrics: flat arrays, codes, probabilities, horizons.

Every metric validates its inputs here, once, at the boundary. Arrays must be flat (``ndim == 1``): an ``(n, 1)``
column silently broadcasts to ``n × n`` in naive numpy code, which is a known source of wrong Brier scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from migpt_traj.errors import ValueRangeError

__all__ = ["SurvivalData", "as_durations", "as_events", "as_probabilities", "check_cause", "check_horizon"]


def _flat_finite(values: ArrayLike, name: str) -> NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueRangeError(f"Input '{name}' must be numeric; got {err}.") from None
    if arr.ndim != 1:
        raise ValueRangeError(
            f"Input '{name}' must be a flat 1-D array of n samples; got shape {arr.shape}. "
            "Pass e.g. `x.ravel()` instead of an (n, 1) column."
        )
    if arr.size == 0:
        raise ValueRangeError(f"Input '{name}' is empty; at least one sample is needed.")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueRangeError(
            f"Input '{name}' must be finite; found {int(bad.sum())} NaN/inf value(s), first at index {i} ({arr[i]})."
        )
    return arr


def as_durations(values: ArrayLike, name: str = "time") -> NDArray[np.float64]:
    """A flat, finite, non-negative float array of durations in days."""
    arr = _flat_finite(values, name)
    if (arr < 0).any():
        i = int(np.flatnonzero(arr < 0)[0])
        raise ValueRangeError(f"Input '{name}' must be non-negative (days); found {arr[i]} at index {i}.")
    return arr


def as_events(values: ArrayLike, name: str = "event") -> NDArray[np.int64]:
    """A flat array of integer event codes: 0 = censored, 1..K = cause k (booleans become 0/1)."""
    arr = _flat_finite(values, name)
    if (arr < 0).any() or (arr != np.round(arr)).any():
        bad = np.flatnonzero((arr < 0) | (arr != np.round(arr)))
        raise ValueRangeError(
            f"Input '{name}' must hold integer codes 0 (censored) or 1..K (cause k); "
            f"found {arr[bad[0]]} at index {int(bad[0])}."
        )
    return arr.astype(np.int64)


def as_probabilities(values: ArrayLike, name: str = "risk") -> NDArray[np.float64]:
    """A flat array of probabilities in [0, 1] (a predicted cumulative incidence)."""
    arr = _flat_finite(values, name)
    outside = (arr < 0) | (arr > 1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueRangeError(
            f"Input '{name}' must be probabilities in [0, 1] (predicted cumulative incidence, higher = worse); "
            f"found {arr[i]} at index {i}."
        )
    return arr


def check_same_length(reference: str, n: int, **arrays: NDArray[np.generic]) -> None:
    """Raise when any array's length differs from ``n`` (the length of ``reference``)."""
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise ValueRangeError(f"Dimension mismatch: '{name}' has {arr.shape[0]} samples but '{reference}' has {n}.")


def check_cause(cause: int) -> int:
    """The cause of interest: an integer code >= 1."""
    if isinstance(cause, bool) or not isinstance(cause, int | np.integer) or cause < 1:
        raise ValueRangeError(f"'cause' must be an integer event code >= 1 (0 means censored); got {cause!r}.")
    return int(cause)


@dataclass(frozen=True)
class SurvivalData:
    """Validated test sample and the sample on which the censoring distribution is fitted.

    Attributes:
        time: Durations in days from the prediction time, shape (n,).
        event: Event codes, 0 = censored, 1..K = cause k, shape (n,).
        train_time: Durations of the sample used for the censoring distribution (``time`` when none given).
        train_event: Event codes of that sample.
    """

    time: NDArray[np.float64]
    event: NDArray[np.int64]
    train_time: NDArray[np.float64]
    train_event: NDArray[np.int64]

    @classmethod
    def from_inputs(
        cls,
        time: ArrayLike,
        event: ArrayLike,
        train_time: ArrayLike | None = None,
        train_event: ArrayLike | None = None,
    ) -> SurvivalData:
        t = as_durations(time, "time")
        e = as_events(event, "event")
        check_same_length("time", t.shape[0], event=e)
        if (train_time is None) != (train_event is None):
            raise ValueRangeError(
                "Give both 'train_time' and 'train_event', or neither (then the test sample is used)."
            )
        if train_time is None or train_event is None:
            return cls(t, e, t, e)
        tt = as_durations(train_time, "train_time")
        te = as_events(train_event, "train_event")
        check_same_length("train_time", tt.shape[0], train_event=te)
        return cls(t, e, tt, te)


def check_horizon(horizon: float, upper: float, *, name: str = "horizon") -> float:
    """A horizon in days within ``[0, upper)``, the follow-up where the metric is estimable."""
    try:
        h = float(horizon)
    except (TypeError, ValueError):
        raise ValueRangeError(f"'{name}' must be a number of days; got {horizon!r}.") from None
    if not np.isfinite(h) or h < 0 or h >= upper:
        raise ValueRangeError(
            f"'{name}' = {horizon!r} days is outside the follow-up where the censoring distribution is "
            f"estimable and controls remain; valid values are in [0, {upper:g}) days."
        )
    return h
