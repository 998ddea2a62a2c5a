"""Discrimination and accuracy of predicted cumulative incidence, with censoring and competing risks.

Conventions shared by every function here:

* ``time``: days from the prediction time to the event or censoring, a flat float array (n,), >= 0. Never an
  ``(n, 1)`` column: that raises, because it would silently broadcast to ``n × n``.
* ``event``: integer codes, 0 = censored, 1..K = cause k. ``cause`` picks the cause of interest; the other
  non-zero codes are competing events.
* ``risk``: the predicted cumulative incidence of ``cause`` by the horizon, a probability in [0, 1]; higher =
  worse. (For single-event data, ``risk = 1 - predicted survival``.)
* Censoring is assumed independent of the event process and of the predictions. Inverse probability of censoring
  weights (IPCW) come from the Kaplan–Meier estimate ``G`` of the censoring distribution, fitted on
  ``train_time``/``train_event`` when given, else on the test sample itself. A subject with an event at ``T_i``
  weighs ``1 / G(T_i-)`` (left limit); one still event-free at the horizon ``h`` weighs ``1 / G(h)``; one censored
  before ``h`` weighs 0.
* Inclusivity: an event at exactly ``h`` counts as "by h" (``T <= h``); event-free at ``h`` means ``T > h``.
* A horizon must lie in ``[0, u)``, ``u`` being the smallest of the largest test time, the first time where
  ``G`` reaches 0, and (for a separate training sample) just past its largest time. The error names ``u``.

For single-event data the results equal scikit-survival's ``cumulative_dynamic_auc``, ``brier_score`` (with
``survival = 1 - risk``), ``integrated_brier_score`` and ``concordance_index_ipcw`` whenever no censoring time
equals an event time. At such ties scikit-survival weighs events by ``1 / G(T_i)``, which counts censorings at
``T_i`` as if they came before the event; here they come after it (``G(T_i-)``, as R's pec/riskRegression do).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from migpt_traj.errors import ValueRangeError
from migpt_traj.evaluation._calibration import CalibrationResult, calibration
from migpt_traj.evaluation._km import StepFunction, fit_censoring
from migpt_traj.evaluation._net_benefit import NetBenefitResult, net_benefit
from migpt_traj.evaluation._ranks import prefix_weight_below, risk_ranks
from migpt_traj.evaluation._validate import (
    SurvivalData,
    as_durations,
    as_probabilities,
    check_cause,
    check_horizon,
    check_same_length,
)

__all__ = [
    "CalibrationResult",
    "NetBenefitResult",
    "brier_score",
    "calibration",
    "concordance_ipcw",
    "cumulative_dynamic_auc",
    "estimable_horizon",
    "integrated_brier_score",
    "net_benefit",
]


def estimable_horizon(
    time: ArrayLike, event: ArrayLike, *, train_time: ArrayLike | None = None, train_event: ArrayLike | None = None
) -> float:
    """Exclusive upper bound (days) of the horizons at which the IPCW metrics are defined for this sample."""
    return fit_censoring(SurvivalData.from_inputs(time, event, train_time, train_event))[1]


def _prepare(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    horizon: float,
    cause: int,
    train_time: ArrayLike | None,
    train_event: ArrayLike | None,
    horizon_name: str = "horizon",
) -> tuple[SurvivalData, NDArray[np.float64], float, StepFunction]:
    data = SurvivalData.from_inputs(time, event, train_time, train_event)
    r = as_probabilities(risk, "risk")
    check_same_length("time", data.time.shape[0], risk=r)
    check_cause(cause)
    g, upper = fit_censoring(data)
    return data, r, check_horizon(horizon, upper, name=horizon_name), g


def cumulative_dynamic_auc(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    horizon: float,
    *,
    cause: int = 1,
    train_time: ArrayLike | None = None,
    train_event: ArrayLike | None = None,
    tied_tol: float = 1e-8,
) -> float:
    """IPCW cumulative/dynamic AUC at ``horizon`` days (Uno et al. 2007; Blanche et al. 2013, definition 2).

    Cases: cause-``cause`` events by ``h`` (``T <= h``), weight ``1 / G(T-)``. Controls: subjects event-free at
    ``h`` (``T > h``), weight ``1 / G(h)``, plus subjects with a competing event by ``h``, weight ``1 / G(T-)``
    (they can no longer have the cause of interest, so they belong to the controls: Blanche's "definition 2",
    whose controls are the complement of the cases). The AUC is the weighted probability that a case has a higher
    ``risk`` than a control; risks within ``tied_tol`` of each other (chained in sorted order, as scikit-survival)
    count one half. Without competing events this is scikit-survival's ``cumulative_dynamic_auc``.

    Raises:
        ValueRangeError: Bad inputs, a horizon outside the follow-up, or no case or no control by ``horizon``.

    Example:
        >>> cumulative_dynamic_auc([1.0, 2.0, 5.0, 6.0], [1, 1, 0, 1], [0.9, 0.4, 0.5, 0.1], 3.0)
        0.75
    """
    data, r, h, g = _prepare(time, event, risk, horizon, cause, train_time, train_event)
    t, e = data.time, data.event
    by_h = (t <= h) & (e != 0)
    w_event = np.where(by_h, 1.0 / np.maximum(g.left_limit(t), np.finfo(float).tiny), 0.0)
    case_w = np.where(by_h & (e == cause), w_event, 0.0)
    control_w = np.where(t > h, 1.0 / g(h), np.where(by_h & (e != cause), w_event, 0.0))
    if not case_w.any() or not control_w.any():
        what = f"case (cause-{cause} event by the horizon)" if not case_w.any() else "control"
        raise ValueRangeError(f"AUC at horizon {h:g} days is undefined: the sample has no {what}.")
    order = np.argsort(r, kind="mergesort")
    sorted_r = r[order]
    group = np.concatenate(([0], np.cumsum(np.diff(sorted_r) > tied_tol)))
    control_by_group = np.bincount(group, weights=control_w[order])
    below = np.concatenate(([0.0], np.cumsum(control_by_group)[:-1]))
    score = case_w[order] * (below[group] + 0.5 * control_by_group[group])
    return float(np.clip(score.sum() / (case_w.sum() * control_w.sum()), 0.0, 1.0))  # clip last-bit rounding


def _brier(data: SurvivalData, r: NDArray[np.float64], h: float, g: StepFunction, cause: int) -> float:
    t, e = data.time, data.event
    by_h = (t <= h) & (e != 0)
    target = (e == cause) * 1.0
    g_event = np.where(by_h, g.left_limit(t), 1.0)
    loss = np.where(by_h, (target - r) ** 2 / g_event, 0.0) + np.where(t > h, r**2 / g(h), 0.0)
    return float(loss.mean())


def brier_score(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    horizon: float,
    *,
    cause: int = 1,
    train_time: ArrayLike | None = None,
    train_event: ArrayLike | None = None,
) -> float:
    """IPCW Brier score of the predicted cumulative incidence at ``horizon`` days (Graf et al. 1999).

    ``BS(h) = 1/n Σ_i w_i (y_i - risk_i)²`` where a subject with any event by ``h`` has ``y = 1`` if it was
    ``cause`` (else 0, a competing event) and ``w = 1 / G(T-)``; one event-free at ``h`` has ``y = 0`` and
    ``w = 1 / G(h)``; one censored before ``h`` has ``w = 0``. Lower is better; 0 is perfect. Without competing
    events this is scikit-survival's ``brier_score`` with ``survival = 1 - risk``.

    Example:
        >>> round(brier_score([1.0, 2.0, 5.0, 6.0], [1, 2, 0, 0], [0.8, 0.5, 0.1, 0.2], 3.0), 6)
        0.085
    """
    data, r, h, g = _prepare(time, event, risk, horizon, cause, train_time, train_event)
    return _brier(data, r, h, g, cause)


def integrated_brier_score(
    time: ArrayLike,
    event: ArrayLike,
    risk_matrix: ArrayLike,
    horizons: ArrayLike,
    *,
    cause: int = 1,
    train_time: ArrayLike | None = None,
    train_event: ArrayLike | None = None,
) -> float:
    """Brier score integrated over ``horizons`` by the trapezoid rule, divided by their range (days).

    Args:
        time: Durations in days, shape (n,).
        event: Event codes, shape (n,).
        risk_matrix: Predicted cumulative incidence of ``cause``; column ``j`` is by ``horizons[j]``, shape (n, m).
        horizons: At least two strictly increasing horizons in days, shape (m,).
        cause: Cause of interest.
        train_time: Durations of the sample that fits the censoring distribution (default: this sample).
        train_event: Its event codes.

    Returns:
        ``∫ BS(h) dh / (h_m - h_1)``, as scikit-survival's ``integrated_brier_score`` for single-event data.
    """
    hs = as_durations(horizons, "horizons")
    if hs.shape[0] < 2 or (np.diff(hs) <= 0).any():
        raise ValueRangeError(f"'horizons' must hold at least two strictly increasing days; got {hs.tolist()}.")
    rm = np.asarray(risk_matrix, dtype=np.float64)
    data = SurvivalData.from_inputs(time, event, train_time, train_event)
    n = data.time.shape[0]
    if rm.ndim != 2 or rm.shape != (n, hs.shape[0]):
        raise ValueRangeError(
            f"'risk_matrix' must have shape (n samples, n horizons) = ({n}, {hs.shape[0]}); got {rm.shape}."
        )
    g, upper = fit_censoring(data)
    check_cause(cause)
    scores = np.array(
        [
            _brier(data, as_probabilities(rm[:, j], f"risk_matrix[:, {j}]"), check_horizon(h, upper), g, cause)
            for j, h in enumerate(hs)
        ]
    )
    return float(np.trapezoid(scores, hs) / (hs[-1] - hs[0]))


def concordance_ipcw(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    *,
    tau: float,
    cause: int = 1,
    train_time: ArrayLike | None = None,
    train_event: ArrayLike | None = None,
    tied_tol: float = 1e-8,
) -> float:
    """Uno's IPCW concordance truncated at ``tau`` days, cause-specific under competing risks (Wolbers 2014).

    A pair ``(i, j)`` is comparable when ``i`` has a ``cause`` event at ``T_i < tau`` and either (A) ``T_j > T_i``,
    or ``T_j = T_i`` with ``j`` censored (any later outcome), weight ``1 / G(T_i-)²``; or (B) ``j`` had a
    competing event at ``T_j <= T_i``, weight ``1 / (G(T_i-) G(T_j-))`` — such a ``j`` can never have the cause of
    interest, so it ranks below ``i``. Two ``cause`` events at the same time are not comparable. The pair is
    concordant when ``risk_i > risk_j``; risks within ``tied_tol`` count one half. Without competing events (B is
    empty) this is scikit-survival's ``concordance_index_ipcw(..., tau=tau)[0]``.

    Example:
        >>> concordance_ipcw([1.0, 2.0, 3.0, 4.0], [1, 1, 0, 1], [0.9, 0.3, 0.5, 0.2], tau=3.5)
        0.8
    """
    data, r, tau_, g = _prepare(time, event, risk, tau, cause, train_time, train_event, "tau")
    t, e = data.time, data.event
    is_case = (e == cause) & (t < tau_)
    if not is_case.any():
        raise ValueRangeError(f"Concordance is undefined: no cause-{cause} event before tau = {tau_:g} days.")
    w = 1.0 / np.maximum(g.left_limit(t), np.finfo(float).tiny)
    ranks, lower, upper = risk_ranks(r, r[is_case], tied_tol)
    case_t, case_w = t[is_case], w[is_case]

    # (A) subjects after the case in time, and censored subjects at the same time (ordered last within a time)
    order = np.lexsort(((e == 0), t))
    uncensored_t = np.sort(t[e != 0])
    start = (
        np.searchsorted(t[order], case_t, side="left")
        + np.searchsorted(uncensored_t, case_t, side="right")
        - np.searchsorted(uncensored_t, case_t, side="left")
    )
    ones, all_ranks = np.ones_like(t), np.sort(ranks)
    a_lo = np.searchsorted(all_ranks, lower) - prefix_weight_below(ranks[order], ones, start, lower)
    a_hi = np.searchsorted(all_ranks, upper) - prefix_weight_below(ranks[order], ones, start, upper)
    a_all = t.size - start
    wa = case_w**2
    numerator = np.sum(wa * (a_lo + 0.5 * (a_hi - a_lo)))
    denominator = np.sum(wa * a_all)

    # (B) competing events at or before the case's time
    comp = (e != 0) & (e != cause)
    if comp.any():
        c_order = np.argsort(t[comp], kind="mergesort")
        c_t, c_rank, c_w = t[comp][c_order], ranks[comp][c_order], w[comp][c_order]
        end = np.searchsorted(c_t, case_t, side="right")
        b_lo = prefix_weight_below(c_rank, c_w, end, lower)
        b_hi = prefix_weight_below(c_rank, c_w, end, upper)
        b_all = np.concatenate(([0.0], np.cumsum(c_w)))[end]
        numerator += np.sum(case_w * (b_lo + 0.5 * (b_hi - b_lo)))
        denominator += np.sum(case_w * b_all)
    if denominator <= 0:
        raise ValueRangeError(f"Concordance is undefined: no comparable pair before tau = {tau_:g} days.")
    # numerator <= denominator exactly; clip the last-bit rounding of the two sums.
    return float(np.clip(numerator / denominator, 0.0, 1.0))
