"""Treatment paths from a prediction time and their exact competing-risk quantities (ground-truth engine).

From a query (subject, t) the future is a finite mixture of deterministic paths: treatment decisions happen
only at scheduled reviews, so under the natural course an untreated subject either starts option ``o`` at the
``j``-th review after ``t`` (probability prod_{l<j}(1 - p_l) p_j q_o) or never within the window (prod_l
(1 - p_l)). Given a path, every log hazard is piecewise linear in time: cumulative hazards and survival are
exact (closed form); cumulative incidences split each grid interval's exact probability mass between causes in
proportion to their exact cumulative-hazard increments, which is exact when the cause ratio is constant over the
interval (error O(step^2)) and keeps CIF_death + CIF_transplant + S = 1 to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from migpt_traj.datasets._sim_model import EXP_MAX, hazard_base, loghaz, path_cumhaz, start_prob
from migpt_traj.datasets._sim_params import SimulatorParams

__all__ = ["Paths", "current_line", "mixture_grid", "mixture_point", "natural_paths", "option_paths"]


@dataclass(frozen=True)
class Paths:
    """Q queries x P paths: weight, severity line and option before the breakpoint r, and after it."""

    w: np.ndarray
    i0: np.ndarray
    s0: np.ndarray
    o0: np.ndarray
    i1: np.ndarray
    s1: np.ndarray
    o1: np.ndarray
    r: np.ndarray

    def take(self, rows: np.ndarray) -> Paths:
        return Paths(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def current_line(
    lat: dict[str, np.ndarray], params: SimulatorParams, pos: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Severity line (intercept, slope) and option index in force at t (a start at exactly t counts)."""
    start = lat["start_years"][pos]
    option = np.where(start <= t, lat["start_option"][pos], 0)
    effect = params.slope_effects()[lat["subtype"][pos], option]
    slope = lat["z1_slope"][pos] - effect
    intercept = lat["z1_level"][pos] + effect * np.where(start <= t, start, 0.0)
    return intercept, slope, option


def option_paths(
    lat: dict[str, np.ndarray], params: SimulatorParams, pos: np.ndarray, t: np.ndarray, option: int
) -> Paths:
    """One path per query: ``option`` (index, 0 = none) starts at t and nothing changes after.

    ``option=0`` keeps the treatment in force at t; a start of the option in force changes nothing; another
    option replaces it from t (the severity line keeps its value at t and takes the new option's slope).
    """
    i_cur, s_cur, o_cur = current_line(lat, params, pos, t)
    o_new = np.where((option == 0) | (o_cur == option), o_cur, option)
    slope = lat["z1_slope"][pos] - params.slope_effects()[lat["subtype"][pos], o_new]
    intercept = i_cur + s_cur * t - slope * t
    col = np.ones((pos.size, 1))
    inf = np.full((pos.size, 1), np.inf)
    return Paths(
        col, intercept[:, None], slope[:, None], o_new[:, None], intercept[:, None], slope[:, None], o_new[:, None], inf
    )


def natural_paths(
    lat: dict[str, np.ndarray],
    params: SimulatorParams,
    confounding: float,
    pos: np.ndarray,
    t: np.ndarray,
    window: float,
) -> Paths:
    """The natural-course mixture over (t, t + window] (years): path 0 = no start, then (review j, option o)."""
    i_cur, s_cur, o_cur = current_line(lat, params, pos, t)
    interval = params.review_interval_years
    n_rev = int(np.floor(window / interval)) + 1
    tau = (np.floor(t / interval)[:, None] + 1 + np.arange(n_rev)[None, :]) * interval  # (Q, K), all > t
    p = start_prob(params, confounding, i_cur[:, None] + s_cur[:, None] * tau)
    p = np.where((tau <= (t + window)[:, None]) & (o_cur == 0)[:, None], p, 0.0)
    stay = np.cumprod(1.0 - p, axis=1)
    first = np.concatenate([np.ones((pos.size, 1)), stay[:, :-1]], axis=1) * p  # P(first start at review j)
    q = np.asarray(params.option_probs, dtype=float)
    q = q / q.sum(axis=1, keepdims=True)
    n_opt = q.shape[1]
    sub = lat["subtype"][pos]
    w = np.concatenate([stay[:, -1:], (first[:, :, None] * q[sub][:, None, :]).reshape(pos.size, -1)], axis=1)
    options = np.tile(np.arange(1, n_opt + 1), n_rev)[None, :]
    r = np.concatenate([np.full((pos.size, 1), np.inf), np.repeat(tau, n_opt, axis=1)], axis=1)
    effect = params.slope_effects()[sub[:, None], np.concatenate([np.zeros((1, 1), np.int64), options], axis=1)]
    r_safe = np.where(np.isfinite(r), r, 0.0)
    n_paths = w.shape[1]
    i0 = np.repeat(i_cur[:, None], n_paths, axis=1)
    s0 = np.repeat(s_cur[:, None], n_paths, axis=1)
    o0 = np.repeat(o_cur[:, None], n_paths, axis=1)
    o1 = np.where(np.isfinite(r), np.concatenate([np.zeros((1, 1), np.int64), options], axis=1), o0)
    return Paths(w, i0, s0, o0, i0 + effect * r_safe, s0 - effect, o1, r)


def _coefs(
    lat: dict[str, np.ndarray], params: SimulatorParams, pos: np.ndarray, paths: Paths
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A0, B0, A1, B1) of the log hazards before / after each path's breakpoint, shape (2 causes, Q, P)."""
    base = hazard_base({k: v[pos] for k, v in lat.items()}, params)
    ba, bb, beta1 = base.a.T[:, :, None], base.b.T[:, :, None], base.beta1[:, None, None]
    log_hr = params.log_hr()
    sub = lat["subtype"][pos][:, None]
    a0, b0 = loghaz(ba, bb, beta1, paths.i0, paths.s0, np.moveaxis(log_hr[sub, paths.o0], -1, 0))
    a1, b1 = loghaz(ba, bb, beta1, paths.i1, paths.s1, np.moveaxis(log_hr[sub, paths.o1], -1, 0))
    return a0, b0, a1, b1


def _compact(paths: Paths) -> Paths:
    """Paths with the non-zero-weight ones first in each row, cut to the widest row's count."""
    nonzero = paths.w > 0
    width = max(1, int(nonzero.sum(axis=1).max()))
    order = np.argsort(~nonzero, axis=1, kind="stable")[:, :width]
    return Paths(*(np.take_along_axis(getattr(paths, f), order, axis=1) for f in paths.__dataclass_fields__))


def _phi(b: np.ndarray, length: float) -> np.ndarray:
    """∫_0^length exp(b v) dv."""
    bl = b * length
    safe_b = np.where(b == 0.0, 1.0, b)
    return np.where(np.abs(bl) < 1e-8, length * (1.0 + 0.5 * bl), np.expm1(bl) / safe_b)


def _chunk_grid(
    lat: dict[str, np.ndarray],
    params: SimulatorParams,
    pos: np.ndarray,
    t: np.ndarray,
    paths: Paths,
    step: float,
    n_steps: int,
    horizons: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Mixture S (Q, H) and F (Q, H, 2) at t + horizons (years) on the uniform grid t + step * (0..n_steps)."""
    a0, b0, a1, b1 = _coefs(lat, params, pos, paths)
    u = t[None, :, None, None] + step * np.arange(n_steps + 1)[None, None, None, :]  # (1, Q, 1, N)
    r = paths.r[None, :, :, None]
    after = u >= r  # (1, Q, P, N)
    log_h = np.where(after, a1[..., None] + b1[..., None] * u, a0[..., None] + b0[..., None] * u)
    h = np.exp(np.minimum(log_h, EXP_MAX))  # (2, Q, P, N)
    # Exact increment h(left) * ∫_0^step exp(B v) dv on intervals inside one segment ...
    d_cum = h[..., :-1] * np.where(after[..., :-1], _phi(b1, step)[..., None], _phi(b0, step)[..., None])
    # ... and the exact two-segment integral on the one interval per path that holds the breakpoint.
    rel = np.where(np.isfinite(paths.r), paths.r - t[:, None], np.inf)
    k = np.where(np.isfinite(rel), np.ceil(rel / step) - 1, -1).astype(np.int64)
    qi, pi = np.nonzero((k >= 0) & (k < n_steps))
    if qi.size:
        ki = k[qi, pi]
        left, right = t[qi] + step * ki, t[qi] + step * (ki + 1)
        d_cum[:, qi, pi, ki] = path_cumhaz(
            a0[:, qi, pi], b0[:, qi, pi], a1[:, qi, pi], b1[:, qi, pi], paths.r[qi, pi], left, right
        )
    cum = np.concatenate([np.zeros_like(d_cum[..., :1]), np.cumsum(d_cum, axis=-1)], axis=-1)
    cum = np.minimum(cum, 1e6)  # an astronomically large hazard gives S = 0, not inf - inf
    surv = np.exp(-cum.sum(axis=0))  # (Q, P, N)
    d_cum = np.diff(cum, axis=-1)
    d_tot = d_cum.sum(axis=0)
    share = np.divide(d_cum, d_tot, out=np.zeros_like(d_cum), where=d_tot > 0)
    cif = np.concatenate(
        [np.zeros_like(share[..., :1]), np.cumsum(share * (surv[..., :-1] - surv[..., 1:]), axis=-1)], axis=-1
    )
    # Horizons: from the last node at or before t + h, the exact remainder split in the same way.
    node = np.minimum(np.floor(horizons / step + 1e-9).astype(np.int64), n_steps)
    x0 = t[None, :, None, None] + step * node[None, None, None, :]
    x1 = t[None, :, None, None] + np.maximum(horizons, step * node)[None, None, None, :]
    rest = path_cumhaz(
        a0[..., None], b0[..., None], a1[..., None], b1[..., None], paths.r[None, :, :, None], x0, x1
    )  # (2, Q, P, H)
    rest_tot = rest.sum(axis=0)
    s_node = surv[..., node]
    s_h = s_node * np.exp(-rest_tot)
    rest_share = np.divide(rest, rest_tot, out=np.zeros_like(rest), where=rest_tot > 0)
    f_h = cif[..., node] + rest_share * (s_node - s_h)
    return np.einsum("qp,qph->qh", paths.w, s_h), np.einsum("qp,kqph->qhk", paths.w, f_h)


def mixture_grid(
    lat: dict[str, np.ndarray],
    params: SimulatorParams,
    pos: np.ndarray,
    t: np.ndarray,
    paths: Paths,
    horizons: np.ndarray,
    *,
    grid_years: float,
    max_elements: int = 1_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """Mixture survival S (Q, H) and cumulative incidences F (Q, H, 2) at t + horizons (years).

    The grid is uniform from t to t + max(horizons) with a step of at most ``grid_years``.
    """
    window = float(horizons.max())
    n_steps = max(1, int(np.ceil(window / grid_years - 1e-9)))
    step = window / n_steps if window > 0 else grid_years
    out_s = np.empty((pos.size, horizons.size))
    out_f = np.empty((pos.size, horizons.size, 2))
    # Rows with few live paths together, so that compaction cuts the path axis of most chunks.
    order = np.argsort((paths.w > 0).sum(axis=1), kind="stable")
    width = paths.w.shape[1]
    for lo in range(0, pos.size, max(1, max_elements // (width * (n_steps + 1)))):
        rows = order[lo : lo + max(1, max_elements // (width * (n_steps + 1)))]
        part = _compact(paths.take(rows))
        out_s[rows], out_f[rows] = _chunk_grid(lat, params, pos[rows], t[rows], part, step, n_steps, horizons)
    return out_s, out_f


def mixture_point(
    lat: dict[str, np.ndarray],
    params: SimulatorParams,
    pos: np.ndarray,
    t: np.ndarray,
    paths: Paths,
    ahead: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-path survival (Q, P) from t to t + ahead and severity z1 (Q, P) at t + ahead (years)."""
    a0, b0, a1, b1 = _coefs(lat, params, pos, paths)
    end = (t + ahead)[:, None]
    cum = path_cumhaz(a0, b0, a1, b1, paths.r[None], t[None, :, None], np.broadcast_to(end[None], a0.shape))
    surv = np.exp(-cum.sum(axis=0))
    z1 = np.where(end < paths.r, paths.i0 + paths.s0 * end, paths.i1 + paths.s1 * end)
    return surv, z1
