"""Non-parametric estimators: Kaplan–Meier, the censoring distribution, Aalen–Johansen, pseudo-observations.

Conventions:

* ``time`` is days from the prediction time (flat float array, >= 0); ``event`` holds integer codes,
  0 = censored, 1..K = cause k.
* Step functions are right-continuous (the value at ``t`` includes what happens at ``t``); ``left_limit(t)``
  excludes it. Before the first time the value is the initial one (1 for a survival curve, 0 for a cumulative
  incidence); after the last observed time the last value is carried forward (as lifelines and R's ``survfit``).
* Ties between an event and a censoring at the same time: the event is taken to happen first (the censored
  subject was still at risk of it). The censoring distribution therefore removes the events at ``t`` from the risk
  set before counting the censorings at ``t``, as scikit-survival does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from migpt_traj.evaluation._validate import (
    SurvivalData,
    as_durations,
    as_events,
    check_cause,
    check_same_length,
)

__all__ = [
    "StepFunction",
    "aalen_johansen",
    "aj_curve",
    "censoring_survival",
    "cif_pseudo_observations",
    "fit_censoring",
    "kaplan_meier",
]


@dataclass(frozen=True, eq=False)
class StepFunction:
    """A right-continuous step function of time in days, e.g. a survival curve.

    Attributes:
        times: Sorted unique jump candidates (days), shape (m,).
        values: Value on ``[times[k], times[k+1])``, shape (m,).
        initial: Value before ``times[0]``.

    Unpacks as ``times, values = step``.
    """

    times: NDArray[np.float64]
    values: NDArray[np.float64]
    initial: float = 1.0

    def __iter__(self) -> Iterator[NDArray[np.float64]]:
        return iter((self.times, self.values))

    def _at(self, t: ArrayLike, side: Literal["left", "right"]) -> NDArray[np.float64]:
        tt = np.asarray(t, dtype=np.float64)
        idx = np.searchsorted(self.times, tt, side=side) - 1
        padded = np.concatenate(([self.initial], self.values))
        return np.asarray(padded[idx + 1], dtype=np.float64)

    def __call__(self, t: ArrayLike) -> NDArray[np.float64]:
        """Value at ``t`` (right-continuous: includes a jump at exactly ``t``)."""
        return self._at(t, "right")

    def left_limit(self, t: ArrayLike) -> NDArray[np.float64]:
        """Limit from the left at ``t`` (excludes a jump at exactly ``t``)."""
        return self._at(t, "left")


@dataclass(frozen=True)
class _Counts:
    times: NDArray[np.float64]  # unique times (m,)
    index: NDArray[np.intp]  # subject -> position in times (n,)
    at_risk: NDArray[np.float64]  # subjects with time >= t_k
    events: NDArray[np.float64]  # events of any cause at t_k
    cause: NDArray[np.float64]  # events of the cause of interest at t_k
    censored: NDArray[np.float64]


def _counts(time: NDArray[np.float64], event: NDArray[np.int64], cause: int | None = None) -> _Counts:
    times, index = np.unique(time, return_inverse=True)
    m = times.shape[0]
    n_at_t = np.bincount(index, minlength=m).astype(np.float64)
    at_risk = time.shape[0] - np.concatenate(([0.0], np.cumsum(n_at_t)[:-1]))
    events = np.asarray(np.bincount(index, weights=(event != 0) * 1.0, minlength=m), dtype=np.float64)
    of_cause = (
        events
        if cause is None
        else np.asarray(np.bincount(index, weights=(event == cause) * 1.0, minlength=m), dtype=np.float64)
    )
    censored = n_at_t - events
    return _Counts(times, index, at_risk, events, of_cause, censored)


def _ratio(num: ArrayLike, den: ArrayLike) -> NDArray[np.float64]:
    """num / den with 0 / 0 = 0."""
    a, b = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.zeros_like(a)
    np.divide(a, b, out=out, where=b != 0)
    return out


def _product_limit(hazard: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cumulative product of ``1 - hazard`` (a Kaplan–Meier curve from its discrete hazards)."""
    return np.asarray(np.cumprod(1.0 - hazard), dtype=np.float64)


def _validated(time: ArrayLike, event: ArrayLike, name: str = "event") -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    t = as_durations(time, "time")
    e = as_events(event, name)
    check_same_length("time", t.shape[0], **{name: e})
    return t, e


def kaplan_meier(time: ArrayLike, event_observed: ArrayLike) -> StepFunction:
    """Kaplan–Meier estimate of the survival function ``S(t) = P(T > t)``.

    Args:
        time: Durations in days, flat array of shape (n,), >= 0.
        event_observed: 1 (or any non-zero code, or True) = event, 0 = censored, shape (n,).

    Returns:
        The right-continuous survival curve; ``times, survival = kaplan_meier(...)`` unpacks it.

    Example:
        >>> km = kaplan_meier([1.0, 2.0, 2.0, 3.0], [1, 0, 1, 0])
        >>> km([0.5, 1.0, 2.0]).round(3).tolist()
        [1.0, 0.75, 0.5]
    """
    t, e = _validated(time, event_observed, "event_observed")
    c = _counts(t, e)
    return StepFunction(c.times, _product_limit(_ratio(c.events, c.at_risk)), 1.0)


def censoring_survival(time: ArrayLike, event: ArrayLike) -> StepFunction:
    """Kaplan–Meier estimate of the censoring survival ``G(t) = P(C > t)``.

    Any non-zero ``event`` code is an observed event (not censored). Events at ``t`` leave the risk set before
    the censorings at ``t`` are counted (scikit-survival's ``CensoringDistributionEstimator`` convention).
    Inverse probability of censoring weights use ``1 / G(T_i-)`` for an event at ``T_i`` (``left_limit``) and
    ``1 / G(h)`` for a subject still event-free at the horizon ``h``.

    Example:
        >>> g = censoring_survival([1.0, 2.0, 3.0, 4.0], [1, 0, 1, 0])
        >>> g([1.0, 2.0, 4.0]).round(3).tolist()
        [1.0, 0.667, 0.0]
    """
    t, e = _validated(time, event)
    c = _counts(t, e)
    return StepFunction(c.times, _product_limit(_ratio(c.censored, c.at_risk - c.events)), 1.0)


def fit_censoring(data: SurvivalData) -> tuple[StepFunction, float]:
    """The censoring survival ``G`` of the training sample and the exclusive upper bound of valid horizons (days).

    The bound is the smallest of: the largest test time (beyond it no one is event-free), the first time where
    ``G`` reaches 0 (weights undefined), and, for a separate training sample, just past its largest time (``G``
    unknown after it).
    """
    g = censoring_survival(data.train_time, data.train_event)
    upper = float(data.time.max())
    zero = np.flatnonzero(g.values <= 0)
    if zero.size:
        upper = min(upper, float(g.times[zero[0]]))
    if data.train_time is not data.time:
        upper = min(upper, float(np.nextafter(data.train_time.max(), np.inf)))
    return g, upper


def _aj_steps(t: NDArray[np.float64], e: NDArray[np.int64], cause: int) -> tuple[_Counts, NDArray[np.float64]]:
    c = _counts(t, e, cause)
    surv = _product_limit(_ratio(c.events, c.at_risk))
    surv_before = np.concatenate(([1.0], surv[:-1]))
    return c, np.cumsum(surv_before * _ratio(c.cause, c.at_risk))


def aj_curve(time: NDArray[np.float64], event: NDArray[np.int64], cause: int) -> StepFunction:
    """Aalen–Johansen cumulative incidence curve of ``cause`` from already validated arrays."""
    c, cif = _aj_steps(time, event, cause)
    return StepFunction(c.times, cif, 0.0)


def aalen_johansen(time: ArrayLike, event: ArrayLike, *, cause: int, times: ArrayLike) -> NDArray[np.float64]:
    """Aalen–Johansen estimate of the cumulative incidence ``F_k(t) = P(T <= t, cause = k)``.

    With competing risks, subjects who had another cause are no longer at risk of cause ``k`` but are not
    censored either. Without competing events this equals ``1 - kaplan_meier``.

    Args:
        time: Durations in days, flat array of shape (n,), >= 0.
        event: Integer codes, 0 = censored, 1..K = cause k, shape (n,).
        cause: The cause of interest (>= 1).
        times: Days at which to evaluate (right-continuous: includes events at exactly ``t``); any shape.

    Returns:
        Cumulative incidence at ``times`` (same shape), carried forward after the last observed time.

    Example:
        >>> aalen_johansen([1.0, 2.0, 3.0, 4.0], [1, 2, 1, 0], cause=1, times=[1.0, 3.0]).round(3).tolist()
        [0.25, 0.5]
    """
    t, e = _validated(time, event)
    return aj_curve(t, e, check_cause(cause))(np.asarray(times, dtype=np.float64))


def cif_pseudo_observations(
    time: NDArray[np.float64], event: NDArray[np.int64], *, cause: int, horizon: float
) -> NDArray[np.float64]:
    """Jackknife pseudo-observations of the Aalen–Johansen cumulative incidence at ``horizon``.

    ``theta_i = n F(h) - (n - 1) F_{-i}(h)``, with every leave-one-out estimate ``F_{-i}`` obtained in closed form
    from the count process (O(n log n), no refitting): removing subject ``i`` lowers the risk set by one up to
    ``T_i`` and removes its event at ``T_i``. Their mean is ``F(h)``; regressing them on predictions gives
    calibration curves under competing risks (Andersen & Perme 2010; Austin et al. 2022). Inputs must be validated.
    """
    n = time.shape[0]
    c, cif = _aj_steps(time, event, cause)
    surv = _product_limit(_ratio(c.events, c.at_risk))
    k_h = int(np.searchsorted(c.times, horizon, side="right"))  # number of unique times <= h
    f_h = cif[k_h - 1] if k_h > 0 else 0.0
    # products and incidences with one subject fewer in every risk set (the left-out subject still at risk)
    n1 = c.at_risk - 1.0
    p1 = np.cumprod(np.concatenate(([1.0], 1.0 - _ratio(c.events, n1)[:-1])))  # S'(t_{k-1})
    a1 = np.cumsum(p1 * _ratio(c.cause, n1))  # F' at t_k
    a1_before = np.concatenate(([0.0], a1))
    loo = np.full(n, a1[k_h - 1] if k_h > 0 else 0.0)  # subjects followed beyond h
    k = c.index
    early = k < k_h
    if early.any():
        ki = k[early]
        ev_any = (event[early] != 0) * 1.0
        ev_cause = (event[early] == cause) * 1.0
        jump = p1[ki] * _ratio(c.cause[ki] - ev_cause, n1[ki])
        surv_i = p1[ki] * (1.0 - _ratio(c.events[ki] - ev_any, n1[ki]))  # S_{-i}(T_i)
        after = _ratio(surv_i, surv[ki]) * (f_h - cif[ki])
        loo[early] = a1_before[ki] + jump + after
    return np.asarray(n * f_h - (n - 1) * loo, dtype=np.float64)
