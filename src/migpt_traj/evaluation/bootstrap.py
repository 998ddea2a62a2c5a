"""Subject-level bootstrap of the evaluation metrics, vectorised over replicates by frequency weights.

A bootstrap replicate resamples the *subjects* of the evaluation split with replacement; every row of a drawn
subject (one per landmark) enters the replicate as many times as the subject was drawn, so the rows of one patient
always move together and visits are never pooled as independent observations. A replicate is therefore a row of
integer frequency weights ``W[b, i]`` (the multiplicity of row ``i``'s subject), and each metric here is the
metric of :mod:`migpt_traj.evaluation.metrics` evaluated on the sample in which row ``i`` appears ``W[b, i]``
times, computed for all replicates at once instead of expanding the rows. A row of ones gives the point estimate.

The censoring distribution ``G`` of the IPCW metrics is fitted once, on the train split (it is not resampled),
exactly as the metric functions do when given ``train_time``/``train_event``. The only deliberate difference from
calling the metric functions on the expanded rows: near-ties of the AUC (risks within ``1e-8``, chained in sorted
order) are grouped on the full sample, so a replicate missing the middle of a chain keeps its ends tied. Exact
ties behave identically. ``tests/evaluation/test_harness.py`` checks every metric against the direct call on the
expanded rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from migpt_traj._progress import track
from migpt_traj.errors import ValueRangeError
from migpt_traj.evaluation._calibration import _HARRELL
from migpt_traj.evaluation._km import StepFunction, censoring_survival

__all__ = [
    "CALIBRATION_METRICS",
    "Estimate",
    "EvalSample",
    "SubjectBootstrap",
    "percentile_interval",
    "weighted_auc",
    "weighted_brier",
    "weighted_calibration",
    "weighted_concordance",
    "weighted_integrated_brier",
]

_TINY = np.finfo(float).tiny
_EPS = 1e-6  # predictions are clipped to [_EPS, 1 - _EPS] before the logit, as in calibration()
CALIBRATION_METRICS = (
    "calibration_in_the_large",
    "calibration_intercept",
    "calibration_slope",
    "ici",
    "observed_risk",
    "mean_risk",
)
F64 = NDArray[np.float64]


@dataclass(frozen=True)
class SubjectBootstrap:
    """Bootstrap replicates as subject multiplicities.

    Attributes:
        subject_ids: The resampled population (the evaluation split's subjects), sorted, shape (s,).
        counts: ``counts[b, j]`` = times subject ``j`` is drawn in replicate ``b``; each row sums to ``s``,
            shape (n_replicates, s).
    """

    subject_ids: NDArray[np.int64]
    counts: F64

    @classmethod
    def draw(cls, subject_ids: ArrayLike, *, n_replicates: int, seed: int) -> SubjectBootstrap:
        """Draw ``n_replicates`` samples of the subjects with replacement (numpy's default generator, ``seed``)."""
        ids = np.unique(np.asarray(subject_ids, dtype=np.int64))
        if n_replicates < 0:
            raise ValueRangeError(f"'n_bootstrap' must be >= 0; got {n_replicates}.")
        if ids.size == 0 or n_replicates == 0:
            return cls(ids, np.zeros((n_replicates, ids.size)))
        draws = np.random.default_rng(seed).integers(0, ids.size, size=(n_replicates, ids.size))
        offsets = draws + ids.size * np.arange(n_replicates)[:, None]
        counts = np.bincount(offsets.ravel(), minlength=n_replicates * ids.size).reshape(n_replicates, ids.size)
        return cls(ids, counts.astype(np.float64))

    @property
    def n_replicates(self) -> int:
        return int(self.counts.shape[0])

    def weights(self, row_subjects: ArrayLike, *, with_point: bool = True) -> F64:
        """Frequency weights of rows belonging to ``row_subjects``: shape (1 + B, n) with a leading row of ones
        (the point estimate) when ``with_point``, else (B, n).

        Raises:
            ValueRangeError: a row's subject is not in the resampled population.
        """
        rows = np.asarray(row_subjects, dtype=np.int64)
        pos = np.searchsorted(self.subject_ids, rows)
        inside = (pos < self.subject_ids.size) & (self.subject_ids[np.minimum(pos, self.subject_ids.size - 1)] == rows)
        if rows.size and not inside.all():
            raise ValueRangeError(
                f"Subject {int(rows[~inside][0])} is not in the bootstrap population (the evaluation split)."
            )
        w = self.counts[:, pos] if self.subject_ids.size else np.zeros((self.n_replicates, rows.size))
        return np.vstack([np.ones((1, rows.size)), w]) if with_point else w


@dataclass(frozen=True)
class EvalSample:
    """The evaluation rows at one landmark and the train split's censoring distribution at that landmark.

    Attributes:
        time: Days from the prediction time to the outcome or censoring, shape (n,).
        event: 0 = censored, k = ``cohort.outcomes[k - 1]``, shape (n,).
        subject_id: Subject of each row, shape (n,).
        g: Kaplan–Meier censoring survival of the train rows at the landmark.
        train_bound: Exclusive upper bound of the horizons from ``g`` alone (first time ``g`` reaches 0, just past
            the largest train time); a replicate's bound is the smaller of this and its largest time.
    """

    time: F64
    event: NDArray[np.int64]
    subject_id: NDArray[np.int64]
    g: StepFunction
    train_bound: float

    @classmethod
    def build(
        cls, time: ArrayLike, event: ArrayLike, subject_id: ArrayLike, *, train_time: ArrayLike, train_event: ArrayLike
    ) -> EvalSample:
        tt = np.asarray(train_time, dtype=np.float64)
        te = np.asarray(train_event, dtype=np.int64)
        if tt.size == 0:
            raise ValueRangeError("The train split has no subject at risk at this landmark; IPCW needs its censoring.")
        g = censoring_survival(tt, te)
        bound = float(np.nextafter(tt.max(), np.inf))
        zero = np.flatnonzero(g.values <= 0)
        if zero.size:
            bound = min(bound, float(g.times[zero[0]]))
        return cls(
            np.asarray(time, dtype=np.float64),
            np.asarray(event, dtype=np.int64),
            np.asarray(subject_id, dtype=np.int64),
            g,
            bound,
        )

    def subset(self, mask: NDArray[np.bool_]) -> EvalSample:
        return EvalSample(self.time[mask], self.event[mask], self.subject_id[mask], self.g, self.train_bound)

    def bounds(self, w: F64) -> F64:
        """Per replicate: exclusive upper bound of estimable horizons (days), ``-inf`` for an empty replicate."""
        return np.minimum(self.train_bound, _present_max(self.time, w))


@dataclass(frozen=True)
class Estimate:
    """A metric over the replicates: ``values[0]`` is the point estimate when the weights began with ones.

    Attributes:
        values: One value per weight row, NaN where undefined, shape (rows,).
        reason: Why the first row is undefined (None when it is defined).
    """

    values: F64
    reason: str | None = None


def _present_max(t: F64, w: F64) -> F64:
    if t.size == 0:
        return np.full(w.shape[0], -np.inf)
    return np.asarray(np.where(w > 0, t[None, :], -np.inf).max(axis=1), dtype=np.float64)


def _beyond(h: float, upper: float) -> str:
    return (
        f"horizon {h:g} days is outside the follow-up where the censoring distribution is estimable and controls "
        f"remain (valid: below {upper:g} days)"
    )


def _finish(values: F64, valid: NDArray[np.bool_], reasons: list[tuple[bool, str]]) -> Estimate:
    out = np.where(valid, values, np.nan)
    reason = next((text for failed, text in reasons if failed), None) if not valid[0] else None
    return Estimate(out, reason if reason is not None or valid[0] else "undefined")


def weighted_auc(sample: EvalSample, risk: F64, h: float, cause: int, w: F64, tied_tol: float = 1e-8) -> Estimate:
    """:func:`~migpt_traj.evaluation.metrics.cumulative_dynamic_auc` for every weight row."""
    if w.shape[0] == 0:
        return Estimate(np.zeros(0))
    t, e, g = sample.time, sample.event, sample.g
    by_h = (t <= h) & (e != 0)
    w_event = np.where(by_h, 1.0 / np.maximum(g.left_limit(t), _TINY), 0.0)
    case = np.where(by_h & (e == cause), w_event, 0.0)
    control = np.where(t > h, 1.0 / np.maximum(g(h), _TINY), np.where(by_h & (e != cause), w_event, 0.0))
    order = np.argsort(risk, kind="mergesort")
    group = np.concatenate(([0], np.cumsum(np.diff(risk[order]) > tied_tol))).astype(np.int64)
    n_groups = int(group[-1]) + 1 if group.size else 0
    rows = w.shape[0]
    wc = w[:, order] * control[order]
    flat = (group[None, :] + n_groups * np.arange(rows)[:, None]).ravel()
    by_group = np.bincount(flat, weights=wc.ravel(), minlength=rows * n_groups).reshape(rows, n_groups)
    below = np.cumsum(by_group, axis=1) - by_group
    score = (w[:, order] * case[order] * (below[:, group] + 0.5 * by_group[:, group])).sum(axis=1)
    n_case, n_control = w @ case, w @ control
    upper = sample.bounds(w)
    ok_h = h < upper
    valid = ok_h & (n_case > 0) & (n_control > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = score / (n_case * n_control)
    return _finish(
        auc,
        valid,
        [
            (not ok_h[0], _beyond(h, float(upper[0]))),
            (n_case[0] <= 0, f"no case (cause-{cause} event by {h:g} days)"),
            (n_control[0] <= 0, f"no control (event-free or competing event by {h:g} days)"),
        ],
    )


def _brier_loss(sample: EvalSample, risk: F64, h: float, cause: int) -> F64:
    t, e, g = sample.time, sample.event, sample.g
    by_h = (t <= h) & (e != 0)
    target = (e == cause) * 1.0
    g_event = np.where(by_h, g.left_limit(t), 1.0)
    with np.errstate(divide="ignore"):
        return np.asarray(
            np.where(by_h, (target - risk) ** 2 / g_event, 0.0) + np.where(t > h, risk**2 / g(h), 0.0),
            dtype=np.float64,
        )


def weighted_brier(sample: EvalSample, risk: F64, h: float, cause: int, w: F64) -> Estimate:
    """:func:`~migpt_traj.evaluation.metrics.brier_score` for every weight row."""
    if w.shape[0] == 0:
        return Estimate(np.zeros(0))
    loss = _brier_loss(sample, risk, h, cause)
    total = np.where(w > 0, w * loss[None, :], 0.0).sum(axis=1)
    n = w.sum(axis=1)
    upper = sample.bounds(w)
    valid = (h < upper) & (n > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _finish(total / n, valid, [(True, _beyond(h, float(upper[0])))])


def weighted_integrated_brier(sample: EvalSample, risks: F64, horizons: F64, cause: int, w: F64) -> Estimate:
    """:func:`~migpt_traj.evaluation.metrics.integrated_brier_score` (trapezoid over ``horizons``, divided by
    their range) for every weight row; ``risks`` has one column per horizon, shape (n, m)."""
    if horizons.size < 2:
        return Estimate(np.full(w.shape[0], np.nan), "needs at least two horizons")
    if w.shape[0] == 0:
        return Estimate(np.zeros(0))
    scores = np.stack(
        [weighted_brier(sample, risks[:, j], float(h), cause, w).values for j, h in enumerate(horizons)], axis=1
    )
    ibs = np.trapezoid(scores, horizons, axis=1) / (horizons[-1] - horizons[0])
    upper = sample.bounds(w)
    valid = np.isfinite(ibs)
    return _finish(ibs, valid, [(True, _beyond(float(horizons[-1]), float(upper[0])))])


def weighted_concordance(
    sample: EvalSample,
    risk: F64,
    tau: float,
    cause: int,
    w: F64,
    tied_tol: float = 1e-8,
    chunk: int = 2_000_000,
    *,
    progress: bool | None = False,
) -> Estimate:
    """:func:`~migpt_traj.evaluation.metrics.concordance_ipcw` (Uno's C truncated at ``tau``) for every weight row.

    Pairs are formed explicitly, case rows × all rows, in chunks of about ``chunk`` pairs; the replicate's
    numerator and denominator are the quadratic forms ``w A wᵀ`` and ``w D wᵀ`` of the pair matrices. A row paired
    with a copy of itself is never comparable (two cause events at the same time), as in the direct computation.
    This is the bootstrap's costliest kernel (cases × rows × replicates); ``progress`` (``True`` / ``False`` /
    ``None`` auto, :mod:`migpt_traj._progress`) draws a transient bar over its chunks when there is more than one.
    """
    if w.shape[0] == 0:
        return Estimate(np.zeros(0))
    t, e, g = sample.time, sample.event, sample.g
    is_case = (e == cause) & (t < tau)
    wt = 1.0 / np.maximum(g.left_limit(t), _TINY)
    competing = (e != 0) & (e != cause)
    cases = np.flatnonzero(is_case)
    rows = w.shape[0]
    num, den = np.zeros(rows), np.zeros(rows)
    step = max(1, chunk // max(1, t.size))
    starts = range(0, cases.size, step)
    show = progress if len(starts) > 1 else False
    for start in track(starts, desc=f"bootstrap C (cause {cause}, {tau:g} d)", unit="chunk", enabled=show, leave=False):
        # chunks of case rows, each vectorised over pairs and replicates
        c = cases[start : start + step]
        ti, ri, wi = t[c][:, None], risk[c][:, None], wt[c][:, None]
        later = (t[None, :] > ti) | ((t[None, :] == ti) & (e[None, :] == 0))
        earlier_competing = competing[None, :] & (t[None, :] <= ti)
        pair_w = np.where(later, wi**2, 0.0) + np.where(earlier_competing, wi * wt[None, :], 0.0)
        conc = np.where(risk[None, :] < ri - tied_tol, 1.0, 0.0) + np.where(
            np.abs(risk[None, :] - ri) <= tied_tol, 0.5, 0.0
        )
        wc = w[:, c]
        num += (wc * (w @ (pair_w * conc).T)).sum(axis=1)
        den += (wc * (w @ pair_w.T)).sum(axis=1)
    upper = sample.bounds(w)
    ok_tau = tau < upper
    has_case = np.asarray((w[:, is_case] > 0).any(axis=1), dtype=bool)
    valid = ok_tau & has_case & (den > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _finish(
            num / den,
            valid,
            [
                (not ok_tau[0], _beyond(tau, float(upper[0]))),
                (not has_case[0], f"no cause-{cause} event before {tau:g} days"),
                (True, f"no comparable pair before {tau:g} days"),
            ],
        )


# ---------------------------------------------------------------------------------------------------- calibration
def _ratio(num: F64, den: F64) -> F64:
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=np.broadcast_to(den != 0, out.shape))
    return out


def _pseudo_observations(t: F64, e: NDArray[np.int64], cause: int, h: float, w: F64) -> tuple[F64, F64]:
    """Weighted version of ``cif_pseudo_observations``: jackknife pseudo-values of the Aalen–Johansen incidence
    at ``h`` in each replicate (shape (rows, n); those of absent rows are unused) and the incidence ``F(h)``."""
    times, index = np.unique(t, return_inverse=True)
    m, rows = times.shape[0], w.shape[0]
    flat = (index[None, :] + m * np.arange(rows)[:, None]).ravel()

    def per_time(values: F64) -> F64:
        counts = np.bincount(flat, weights=values.ravel(), minlength=rows * m)
        return np.asarray(counts, dtype=np.float64).reshape(rows, m)

    n_at_t = per_time(w)
    n = w.sum(axis=1, keepdims=True)
    at_risk = n - np.concatenate([np.zeros((rows, 1)), np.cumsum(n_at_t, axis=1)[:, :-1]], axis=1)
    events = per_time(w * (e != 0))
    of_cause = per_time(w * (e == cause))
    surv = np.cumprod(1.0 - _ratio(events, at_risk), axis=1)
    surv_before = np.concatenate([np.ones((rows, 1)), surv[:, :-1]], axis=1)
    cif = np.cumsum(surv_before * _ratio(of_cause, at_risk), axis=1)
    k_h = int(np.searchsorted(times, h, side="right"))
    f_h = cif[:, k_h - 1] if k_h > 0 else np.zeros(rows)
    n1: F64 = np.asarray(at_risk - 1.0, dtype=np.float64)
    p1 = np.cumprod(np.concatenate([np.ones((rows, 1)), 1.0 - _ratio(events, n1)[:, :-1]], axis=1), axis=1)
    a1 = np.cumsum(p1 * _ratio(of_cause, n1), axis=1)
    a1_before = np.concatenate([np.zeros((rows, 1)), a1], axis=1)
    loo = np.repeat((a1[:, k_h - 1] if k_h > 0 else np.zeros(rows))[:, None], t.size, axis=1)
    early = index < k_h
    if early.any():
        ki = index[early]
        ev_any, ev_cause = (e[early] != 0) * 1.0, (e[early] == cause) * 1.0
        jump = p1[:, ki] * _ratio(of_cause[:, ki] - ev_cause, n1[:, ki])
        surv_i = p1[:, ki] * (1.0 - _ratio(events[:, ki] - ev_any, n1[:, ki]))
        after = _ratio(surv_i, np.asarray(surv[:, ki], dtype=np.float64)) * (f_h[:, None] - cif[:, ki])
        loo[:, early] = a1_before[:, ki] + jump + after
    return n * f_h[:, None] - (n - 1) * loo, f_h


def _quasi_logistic(
    x: F64, y: F64, w: F64, offset: F64 | None = None, *, max_abs: float = np.inf
) -> tuple[F64, NDArray[np.bool_]]:
    """Weighted ``_calibration._quasi_logistic`` for every replicate at once (Newton steps with step halving).

    Replicates are dropped from the iteration as they converge; one whose coefficients pass ``max_abs`` is
    diverging (pseudo-observations outside [0, 1] can leave the quasi-likelihood without a finite maximiser) and
    counts as not converged.

    Args:
        x: Design, shared (n, p) or per replicate (rows, n, p).
        y: Pseudo-observations (rows, n).
        w: Frequency weights (rows, n).
        offset: Fixed offset (n,).

    Returns:
        Coefficients (rows, p) and whether each replicate converged in 100 steps.
    """
    rows, p = y.shape[0], x.shape[-1]
    off = np.zeros(y.shape[1]) if offset is None else offset
    shared = x.ndim == 2

    def eta_of(b: F64, idx: NDArray[np.intp]) -> F64:
        eta = b @ x.T if shared else np.matmul(x[idx], b[:, :, None])[..., 0]
        return np.asarray(eta + off[None, :], dtype=np.float64)

    def objective(b: F64, idx: NDArray[np.intp]) -> F64:
        eta = eta_of(b, idx)
        return np.asarray((w[idx] * (y[idx] * eta - np.logaddexp(0.0, eta))).sum(axis=1), dtype=np.float64)

    beta = np.zeros((rows, p))
    converged = np.zeros(rows, dtype=bool)
    idx = np.arange(rows)
    current = objective(beta[idx], idx)
    for _ in range(100):
        b = beta[idx]
        mu = expit(eta_of(b, idx))
        wi = w[idx]
        if shared:
            grad = (wi * (y[idx] - mu)) @ x
            hess = np.einsum("np,rn,nq->rpq", x, wi * mu * (1 - mu), x)
        else:
            xi = x[idx]
            grad = np.matmul(np.swapaxes(xi, 1, 2), (wi * (y[idx] - mu))[:, :, None])[..., 0]
            hess = np.matmul(np.swapaxes(xi, 1, 2), xi * (wi * mu * (1 - mu))[:, :, None])
        try:
            step = np.linalg.solve(hess, grad[:, :, None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.matmul(np.linalg.pinv(hess), grad[:, :, None])[..., 0]
        candidate = objective(b + step, idx)
        for _ in range(30):  # halve the steps of the replicates whose objective went down
            worse = np.flatnonzero(candidate < current - 1e-12 * np.abs(current))
            if worse.size == 0:
                break
            step[worse] /= 2
            candidate[worse] = objective(b[worse] + step[worse], idx[worse])
        beta[idx] = b + step
        done = np.abs(step).max(axis=1) < 1e-9
        converged[idx[done]] = True
        keep = ~done & (np.abs(beta[idx]).max(axis=1) <= max_abs)
        idx, current = idx[keep], candidate[keep]
        if idx.size == 0:
            break
    return beta, converged


def _weighted_percentiles(z: F64, w: F64, q: F64) -> F64:
    """``np.percentile`` (linear) of the expanded sample of each replicate, shape (rows, len(q))."""
    order = np.argsort(z, kind="mergesort")
    zs, cum = z[order], np.cumsum(w[:, order], axis=1)
    n = cum[:, -1:]
    pos = q[None, :] / 100.0 * (n - 1)
    lo, hi = np.floor(pos), np.ceil(pos)

    rows = w.shape[0]
    big = float(cum.max()) + 1.0 if cum.size else 1.0
    shift = big * np.arange(rows)[:, None]
    flat = (cum + shift).ravel()

    def at(k: F64) -> F64:  # value at 0-based position k of each replicate's sorted expanded sample
        idx = (
            np.searchsorted(flat, (k + shift).ravel(), side="right").reshape(k.shape)
            - z.size * np.arange(rows)[:, None]
        )
        return np.asarray(zs[np.clip(idx, 0, z.size - 1)], dtype=np.float64)

    a, b = at(lo), at(hi)
    frac = pos - lo
    return np.asarray(np.where(frac >= 0.5, b - (b - a) * (1 - frac), a + (b - a) * frac), dtype=np.float64)


def _spline_basis(z: F64, knots: F64) -> F64:
    """``_calibration._spline_basis`` with one knot vector per replicate: (rows, K) → (rows, n, K - 1)."""
    k = knots.shape[1]
    kn = knots[:, None, :]
    scale = (kn[..., k - 1] - kn[..., 0]) ** 2
    zz = z[None, :]

    def cube(v: F64) -> F64:
        return np.maximum(v, 0.0) ** 3

    cols = [np.broadcast_to(zz, (knots.shape[0], z.size))]
    span = kn[..., k - 1] - kn[..., k - 2]
    for j in range(k - 2):
        cols.append(
            (
                cube(zz - kn[..., j])
                - cube(zz - kn[..., k - 2]) * (kn[..., k - 1] - kn[..., j]) / span
                + cube(zz - kn[..., k - 1]) * (kn[..., k - 2] - kn[..., j]) / span
            )
            / scale
        )
    return np.stack(cols, axis=2)


def weighted_calibration(
    sample: EvalSample, risk: F64, h: float, cause: int, w: F64, *, n_knots: int = 4, full: bool = True
) -> dict[str, Estimate]:
    """:func:`~migpt_traj.evaluation.metrics.calibration` summaries for every weight row.

    With ``full=False`` only calibration-in-the-large, the observed and the mean risk are computed (the intercept,
    slope and ICI are NaN), which skips the two costlier regressions.

    Returns:
        Estimates named by :data:`CALIBRATION_METRICS`: calibration-in-the-large, intercept, slope, ICI, the
        observed risk (mean pseudo-observation, ≈ Aalen–Johansen incidence) and the mean predicted risk. The
        intercept and slope are undefined (NaN) when the predictions are constant.
    """
    t, e = sample.time, sample.event
    rows = w.shape[0]
    if rows == 0:
        return {name: Estimate(np.zeros(0)) for name in CALIBRATION_METRICS}
    upper = _present_max(t, w)
    ok = h < upper
    if not ok.any():
        nan = np.full(rows, np.nan)
        reason = f"horizon {h:g} days is not below the largest follow-up time ({float(upper[0]):g} days)"
        return {name: Estimate(nan, reason) for name in CALIBRATION_METRICS}
    theta, _ = _pseudo_observations(t, e, cause, h, w)
    q = np.clip(risk, _EPS, 1 - _EPS)
    z = np.log(q) - np.log1p(-q)
    citl, conv_citl = _quasi_logistic(np.ones((t.size, 1)), theta, w, offset=z)
    if full:
        line, conv_line = _quasi_logistic(np.column_stack([np.ones(t.size), z]), theta, w)
    else:
        line, conv_line = np.full((rows, 2), np.nan), np.zeros(rows, dtype=bool)
    smoothed = expit(line[:, :1] + line[:, 1:] * z[None, :])
    conv_ici = conv_line.copy()
    knots = _weighted_percentiles(z, w, np.asarray(_HARRELL[n_knots], dtype=np.float64))
    unique = [np.unique(k) for k in knots]
    sizes = np.array([u.size for u in unique]) if full else np.zeros(rows, dtype=np.int64)
    for size in np.unique(sizes[sizes >= 3]):  # replicates grouped by their number of distinct knots
        members = np.flatnonzero(sizes == size)
        kn = np.stack([unique[i] for i in members])
        basis = _spline_basis(z, kn)
        design = np.concatenate([np.ones((*basis.shape[:2], 1)), basis], axis=2)
        beta, conv = _quasi_logistic(design, theta[members], w[members])
        smoothed[members] = expit(np.einsum("rnp,rp->rn", design, beta))
        conv_ici[members] = conv
    n = w.sum(axis=1)
    gap = np.where(w > 0, w * np.abs(smoothed - risk[None, :]), 0.0).sum(axis=1)
    constant = bool(np.ptp(risk) <= 1e-12) if risk.size else True
    beyond = f"horizon {h:g} days is not below the largest follow-up time ({float(upper[0]):g} days)"
    not_converged = "the calibration regression on the pseudo-observations did not converge"
    const_reason = "predictions are constant (slope and intercept undefined)"

    def est(values: F64, conv: NDArray[np.bool_], extra: bool = False) -> Estimate:
        valid = ok & conv & (not extra)
        return _finish(values, valid, [(not ok[0], beyond), (extra, const_reason), (True, not_converged)])

    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "calibration_in_the_large": est(citl[:, 0], conv_citl),
            "calibration_intercept": est(line[:, 0], conv_line, constant),
            "calibration_slope": est(line[:, 1], conv_line, constant),
            "ici": est(gap / n, conv_ici),
            "observed_risk": est((w * theta).sum(axis=1) / n, np.ones(rows, dtype=bool)),
            "mean_risk": est(w @ risk / n, np.ones(rows, dtype=bool)),
        }


def percentile_interval(replicates: F64, *, level: float = 0.95, min_share: float = 0.5) -> tuple[float, float, int]:
    """Percentile bootstrap interval of the finite replicates.

    Returns:
        ``(lower, upper, n_finite)``; NaN bounds when fewer than ``min_share`` of the replicates are finite.
    """
    finite = replicates[np.isfinite(replicates)]
    if replicates.size == 0 or finite.size < max(2, min_share * replicates.size):
        return float("nan"), float("nan"), int(finite.size)
    alpha = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [alpha, 100 - alpha])
    return float(lo), float(hi), int(finite.size)
