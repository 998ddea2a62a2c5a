"""Decision curve analysis for a predicted cumulative incidence at a horizon (Vickers et al. 2008).

A patient is "treated" when ``risk >= pt``. With ``n`` patients, the net benefit at threshold probability ``pt`` is
``NB(pt) = TP/n - FP/n · pt / (1 - pt)``; with censoring, ``TP/n = P(risk >= pt) · F(h | risk >= pt)`` and
``FP/n = P(risk >= pt) · (1 - F(h | risk >= pt))``, where ``F`` is the Aalen–Johansen cumulative incidence of the
cause by ``h`` among the treated (1 - Kaplan–Meier without competing events; a competing event counts as "not the
cause", as in Vickers' ``stdca``). Treat-all uses everyone; treat-none is 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from migpt_traj.errors import ValueRangeError
from migpt_traj.evaluation._km import aj_curve
from migpt_traj.evaluation._validate import (
    SurvivalData,
    as_probabilities,
    check_cause,
    check_horizon,
    check_same_length,
)

__all__ = ["NetBenefitResult", "net_benefit"]


@dataclass(frozen=True, eq=False)
class NetBenefitResult:
    """Net benefit of the model and of the default strategies at each threshold probability.

    Attributes:
        horizon: Days from the prediction time.
        cause: Event code of the cause of interest.
        thresholds: Threshold probabilities ``pt`` in [0, 1), shape (m,).
        model: Net benefit of treating patients with ``risk >= pt``, shape (m,).
        treat_all: Net benefit of treating everyone, shape (m,).
        treat_none: Net benefit of treating no one (zeros), shape (m,).
        treated: Fraction of patients with ``risk >= pt``, shape (m,).
    """

    horizon: float
    cause: int
    thresholds: NDArray[np.float64]
    model: NDArray[np.float64]
    treat_all: NDArray[np.float64]
    treat_none: NDArray[np.float64]
    treated: NDArray[np.float64]


def net_benefit(
    time: ArrayLike,
    event: ArrayLike,
    risk: ArrayLike,
    horizon: float,
    thresholds: ArrayLike,
    *,
    cause: int = 1,
) -> NetBenefitResult:
    """Net benefit of treating by predicted risk of ``cause`` by ``horizon`` days, and of treat-all/none.

    Args:
        time: Days from the prediction time to event or censoring, shape (n,).
        event: Codes, 0 = censored, 1..K = cause k, shape (n,).
        risk: Predicted cumulative incidence of ``cause`` by ``horizon``, in [0, 1] (higher = worse), shape (n,).
        horizon: Days; must be below the largest observed time.
        thresholds: Threshold probabilities in [0, 1), shape (m,). A patient is treated when ``risk >= pt``.
        cause: Cause of interest.

    Example:
        >>> res = net_benefit([1.0, 2.0, 5.0, 6.0], [1, 0, 0, 0], [0.9, 0.6, 0.2, 0.1], 3.0, [0.2, 0.5])
        >>> res.model.round(4).tolist(), res.treat_all.round(4).tolist()
        ([0.125, 0.0], [0.0625, -0.5])
    """
    data = SurvivalData.from_inputs(time, event)
    r = as_probabilities(risk, "risk")
    check_same_length("time", data.time.shape[0], risk=r)
    cause = check_cause(cause)
    h = check_horizon(horizon, float(data.time.max()))
    pts = as_probabilities(thresholds, "thresholds")
    if (pts >= 1).any():
        raise ValueRangeError(f"'thresholds' must be in [0, 1) (pt / (1 - pt) is infinite at 1); got {pts.max()}.")
    odds = pts / (1 - pts)
    order = np.argsort(-r, kind="mergesort")
    t_sorted, e_sorted, r_sorted = data.time[order], data.event[order], r[order]
    n = r.shape[0]
    n_treated = np.searchsorted(-r_sorted, -pts, side="right")  # patients with risk >= pt
    model = np.zeros(pts.shape[0])
    incidence: dict[int, float] = {}  # one estimate per distinct treated set (a loop over thresholds, not patients)
    for j, m in enumerate(n_treated.tolist()):
        if m == 0:
            continue
        if m not in incidence:
            incidence[m] = float(aj_curve(t_sorted[:m], e_sorted[:m], cause)(h))
        f = incidence[m]
        model[j] = m / n * (f - (1 - f) * odds[j])
    f_all = float(aj_curve(data.time, data.event, cause)(h))
    return NetBenefitResult(
        horizon=h,
        cause=cause,
        thresholds=pts,
        model=model,
        treat_all=f_all - (1 - f_all) * odds,
        treat_none=np.zeros(pts.shape[0]),
        treated=n_treated / n,
    )
