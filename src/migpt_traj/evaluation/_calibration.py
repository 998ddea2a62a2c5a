"""Calibration of a predicted cumulative incidence at a horizon, with censoring and competing risks.

Method (Andersen & Perme 2010; Austin, Putter, Giardiello & van Klaveren 2022): jackknife pseudo-observations
``theta_i`` of the Aalen–Johansen cumulative incidence at the horizon stand in for the unobserved binary outcome
"cause ``k`` by ``h``". Regressing them on the predictions with a logit link and the binomial variance function
(quasi-likelihood, i.e. GEE with an independence working correlation; the pseudo-values need not lie in [0, 1])
gives the calibration intercept and slope, and, with a restricted cubic spline in ``logit(risk)``, the smoothed
calibration curve from which the integrated calibration index (ICI) is computed. This needs censoring that is
independent of the predictions. Predictions are clipped to ``[1e-6, 1 - 1e-6]`` before the logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit
from scipy.stats import rankdata

from migpt_traj.errors import MigptTrajError, ValueRangeError
from migpt_traj.evaluation._km import aj_curve, cif_pseudo_observations
from migpt_traj.evaluation._validate import (
    SurvivalData,
    as_probabilities,
    check_cause,
    check_horizon,
    check_same_length,
)

__all__ = ["CalibrationResult", "calibration"]

_EPS = 1e-6

# Knot positions (percentiles) recommended by Harrell (Regression Modeling Strategies, 2nd ed., §2.4.6).
_HARRELL: dict[int, list[float]] = {
    3: [10, 50, 90],
    4: [5, 35, 65, 95],
    5: [5, 27.5, 50, 72.5, 95],
    6: [5, 23, 41, 59, 77, 95],
    7: [2.5, 18.33, 34.17, 50, 65.83, 81.67, 97.5],
}


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """Calibration of predicted cumulative incidence of ``cause`` by ``horizon`` days.

    Attributes:
        horizon: Days from the prediction time.
        cause: Event code of the cause of interest.
        group_predicted: Mean predicted risk per risk-quantile group (ascending risk), shape (g,).
        group_observed: Aalen–Johansen cumulative incidence at ``horizon`` within each group, shape (g,).
        group_size: Subjects per group, shape (g,). Tied risks share a group, so there can be fewer than asked.
        observed: Aalen–Johansen cumulative incidence at ``horizon`` in the whole sample.
        expected: Mean predicted risk.
        calibration_in_the_large: ``a`` in ``logit E[Y] = a + logit(risk)``; 0 when the mean risk is right,
            > 0 when the model under-predicts.
        intercept: ``a`` in the logistic recalibration ``logit E[Y] = a + b logit(risk)``.
        slope: ``b`` of that recalibration; 1 is ideal, < 1 means predictions too extreme (overfit).
        ici: Integrated calibration index, mean ``|smoothed observed - predicted|`` over the subjects.
        e50: Median of that absolute difference.
        e90: Its 90th percentile.
        curve_predicted: Grid of predicted risks for a calibration plot, shape (101,).
        curve_observed: Smoothed observed risk at ``curve_predicted`` (spline fit), shape (101,).
    """

    horizon: float
    cause: int
    group_predicted: NDArray[np.float64]
    group_observed: NDArray[np.float64]
    group_size: NDArray[np.int64]
    observed: float
    expected: float
    calibration_in_the_large: float
    intercept: float
    slope: float
    ici: float
    e50: float
    e90: float
    curve_predicted: NDArray[np.float64]
    curve_observed: NDArray[np.float64]


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q) - np.log1p(-q), dtype=np.float64)


def _quasi_logistic(
    x: NDArray[np.float64], y: NDArray[np.float64], offset: NDArray[np.float64] | None = None
) -> NDArray[np.float64]:
    """Solve ``Σ x_i (y_i - expit(x_i β + offset_i)) = 0`` by Newton steps with step halving.

    The quasi-log-likelihood ``Σ y η - log(1 + e^η)`` is concave for any real ``y``, so the iteration ascends it.
    """
    off = np.zeros(y.shape[0]) if offset is None else offset
    beta = np.zeros(x.shape[1])

    def objective(b: NDArray[np.float64]) -> float:
        eta = x @ b + off
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = objective(beta)
    for _ in range(100):
        mu = expit(x @ beta + off)
        grad = x.T @ (y - mu)
        hess = (x * (mu * (1 - mu))[:, None]).T @ x
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        for _ in range(30):
            candidate = objective(beta + step)
            if candidate >= current - 1e-12 * abs(current):
                break
            step = step / 2
        beta, current = beta + step, candidate
        if np.max(np.abs(step)) < 1e-9:
            return beta
    raise MigptTrajError("Calibration regression on the pseudo-observations did not converge in 100 steps.")


def _spline_basis(z: NDArray[np.float64], knots: NDArray[np.float64]) -> NDArray[np.float64]:
    """Restricted (natural) cubic spline basis of Harrell: ``z`` and ``len(knots) - 2`` non-linear terms."""
    k = knots.shape[0]
    scale = (knots[-1] - knots[0]) ** 2

    def cube(v: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.maximum(v, 0.0) ** 3

    cols = [z]
    for j in range(k - 2):
        cols.append(
            (
                cube(z - knots[j])
                - cube(z - knots[k - 2]) * (knots[k - 1] - knots[j]) / (knots[k - 1] - knots[k - 2])
                + cube(z - knots[k - 1]) * (knots[k - 2] - knots[j]) / (knots[k - 1] - knots[k - 2])
            )
            / scale
        )
    return np.column_stack(cols)


def _with_intercept(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.column_stack([np.ones(x.shape[0]), x])


def calibration(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    horizon: float,
    *,
    cause: int = 1,
    n_groups: int = 10,
    n_knots: int = 4,
) -> CalibrationResult:
    """Calibration of predicted cumulative incidence at ``horizon`` days: groups, intercept, slope and ICI.

    Args:
        time: Days from the prediction time to event or censoring, shape (n,).
        event: Codes, 0 = censored, 1..K = cause k, shape (n,).
        risk: Predicted cumulative incidence of ``cause`` by ``horizon``, in [0, 1] (higher = worse), shape (n,).
        horizon: Days; must be below the largest observed time.
        cause: Cause of interest.
        n_groups: Number of risk-quantile groups for the grouped calibration table.
        n_knots: Knots of the restricted cubic spline smoother (at Harrell's quantiles of ``logit(risk)``);
            fewer are used when the risks take few distinct values.

    Returns:
        A :class:`CalibrationResult`. Observed risks come from the Aalen–Johansen estimator (1 - Kaplan–Meier
        without competing events) and pseudo-observations; see the module docstring for the method.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> p = rng.uniform(0.05, 0.6, 2000)
        >>> t = np.where(rng.uniform(size=2000) < p, rng.uniform(0, 365, 2000), 400.0)
        >>> res = calibration(t, (t < 365).astype(int), p, 365.0)
        >>> bool(abs(res.slope - 1) < 0.2 and res.ici < 0.03)
        True
    """
    data = SurvivalData.from_inputs(time, event)
    r = as_probabilities(risk, "risk")
    n = data.time.shape[0]
    check_same_length("time", n, risk=r)
    cause = check_cause(cause)
    h = check_horizon(horizon, float(data.time.max()))
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or not 1 <= n_groups <= n:
        raise ValueRangeError(f"'n_groups' must be an integer in [1, {n}] (the sample size); got {n_groups!r}.")
    if isinstance(n_knots, bool) or not isinstance(n_knots, int) or not 3 <= n_knots <= 7:
        raise ValueRangeError(f"'n_knots' must be an integer in [3, 7]; got {n_knots!r}.")

    group = ((rankdata(r, method="min") - 1) * n_groups // n).astype(np.int64)
    present = np.unique(group)
    observed_in_group = []
    for g in present:
        mask = group == g
        observed_in_group.append(float(aj_curve(data.time[mask], data.event[mask], cause)(h)))
    theta = cif_pseudo_observations(data.time, data.event, cause=cause, horizon=h)
    z = _logit(r)

    citl = _quasi_logistic(np.ones((n, 1)), theta, offset=z)[0]
    intercept, slope = _quasi_logistic(_with_intercept(z[:, None]), theta)
    knots = np.unique(np.percentile(z, _HARRELL[n_knots]))
    if knots.shape[0] >= 3:
        basis = _with_intercept(_spline_basis(z, knots))
        beta = _quasi_logistic(basis, theta)
        smoothed = expit(basis @ beta)
        grid = np.linspace(r.min(), r.max(), 101)
        curve = expit(_with_intercept(_spline_basis(_logit(grid), knots)) @ beta)
    else:
        smoothed = expit(intercept + slope * z)
        grid = np.linspace(r.min(), r.max(), 101)
        curve = expit(intercept + slope * _logit(grid))
    gap = np.abs(smoothed - r)
    return CalibrationResult(
        horizon=h,
        cause=cause,
        group_predicted=np.array([r[group == g].mean() for g in present]),
        group_observed=np.array(observed_in_group),
        group_size=np.bincount(group)[present].astype(np.int64),
        observed=float(theta.mean()),
        expected=float(r.mean()),
        calibration_in_the_large=float(citl),
        intercept=float(intercept),
        slope=float(slope),
        ici=float(gap.mean()),
        e50=float(np.median(gap)),
        e90=float(np.percentile(gap, 90)),
        curve_predicted=grid,
        curve_observed=np.asarray(curve, dtype=np.float64),
    )
