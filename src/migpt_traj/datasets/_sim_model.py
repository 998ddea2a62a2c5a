"""The simulator's equations as vectorised numpy functions, shared by the generator and the ground truth.

Time is in years since entry. A *line* is the severity on one treatment segment, z1(u) = I + S u; a *path* on
``[x0, inf)`` is one line before a breakpoint ``r`` and another after it (``r = inf``: no breakpoint). On each
segment every log hazard is linear in time, log h_k(u) = A_k + B_k u, so cumulative hazards have closed forms and
event times can be drawn by exact inversion. See :mod:`migpt_traj.datasets.synthetic` for the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from migpt_traj.datasets._sim_params import SimulatorParams

__all__ = [
    "LATENT_COLUMNS",
    "HazardBase",
    "hazard_base",
    "loghaz",
    "option_cdf",
    "path_cumhaz",
    "path_inverse",
    "realized_z1",
    "seg_cumhaz",
    "seg_inverse",
    "start_prob",
    "treated_line",
    "z_image",
    "z_symptom",
]

#: Columns of the per-subject latent table (``SyntheticTruth.subjects``; ``metadata/synthetic_latent.parquet``).
LATENT_COLUMNS: tuple[str, ...] = (
    "subject_id",  # int64
    "entry_us",  # int64 microseconds since the epoch of the entry (time zero)
    "subtype",  # int64 index into params.subtypes
    "female",  # float64 0/1
    "age_at_entry",  # float64 years
    "z1_level",
    "z1_slope",  # severity z1(u) = z1_level + z1_slope u before any treatment (per year)
    "z2_level",
    "z2_slope",  # imaging-only component
    "z3_level",
    "z3_slope",  # symptom (notes-only) component
    "start_years",  # potential treatment start (a review time), inf = never
    "start_option",  # 0 = never, i = params.options[i - 1]
    "event_years",  # latent first event time, inf = none
    "event_cause",  # 0 = MEDS_DEATH, 1 = TRANSPLANT, -1 = none
    "censor_years",  # min(administrative, dropout)
)

EXP_MAX = 700.0


@dataclass(frozen=True)
class HazardBase:
    """Per-subject parts of the log hazards that do not depend on the severity line, shape (n, 2) each."""

    a: np.ndarray  # intercept_k + coef_k . (z2_level, z3_level, age, female)
    b: np.ndarray  # coef_k . (z2_slope, z3_slope, 1/10): time slope not coming from z1
    beta1: np.ndarray  # (2,) coefficient of z1 per cause


def hazard_base(lat: dict[str, np.ndarray], params: SimulatorParams) -> HazardBase:
    coef = params.cause_coefs()
    age = (lat["age_at_entry"][:, None] - 55.0) / 10.0
    a = (
        params.cause_intercepts()[None, :]
        + coef[None, :, 1] * lat["z2_level"][:, None]
        + coef[None, :, 2] * lat["z3_level"][:, None]
        + coef[None, :, 3] * age
        + coef[None, :, 4] * lat["female"][:, None]
    )
    b = (
        coef[None, :, 1] * lat["z2_slope"][:, None]
        + coef[None, :, 2] * lat["z3_slope"][:, None]
        + coef[None, :, 3] / 10.0
    )
    return HazardBase(a=a, b=b, beta1=coef[:, 0])


def loghaz(
    base_a: np.ndarray,
    base_b: np.ndarray,
    beta1: np.ndarray,
    line_i: np.ndarray,
    line_s: np.ndarray,
    theta: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of log h_k(u) = A + B u on a segment with severity line I + S u and log hazard ratios theta.

    Shapes broadcast with a trailing cause axis of length 2: base (..., 2), line (..., 1), theta (..., 2).
    """
    return base_a + beta1 * line_i + theta, base_b + beta1 * line_s


def treated_line(
    line_i: np.ndarray, line_s: np.ndarray, start: np.ndarray, effect: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Severity line after a start at ``start`` that cuts the slope by ``effect``: continuous at the start."""
    return line_i + effect * start, line_s - effect


def z_image(lat: dict[str, np.ndarray], idx: np.ndarray, u: np.ndarray) -> np.ndarray:
    return lat["z2_level"][idx] + lat["z2_slope"][idx] * u


def z_symptom(lat: dict[str, np.ndarray], idx: np.ndarray, u: np.ndarray) -> np.ndarray:
    return lat["z3_level"][idx] + lat["z3_slope"][idx] * u


def start_prob(params: SimulatorParams, confounding: float, z1: np.ndarray) -> np.ndarray:
    """P(a treatment starts at a review | untreated, event-free there, severity z1 there)."""
    logit = params.start_intercept + confounding * params.start_slope * (z1 - params.start_center)
    p = 1.0 / (1.0 + np.exp(-logit))
    if confounding > 0:
        p = np.where(z1 < params.start_gate, 0.0, p)
    return p


def option_cdf(params: SimulatorParams) -> np.ndarray:
    """(subtypes, options) cumulative P(option | start, subtype), last column forced to 1."""
    probs = np.asarray(params.option_probs, dtype=float)
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    return cdf


def seg_cumhaz(a: np.ndarray, b: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """Exact ∫_{x0}^{x1} exp(a + b u) du (x1 >= x0, all finite)."""
    length = x1 - x0
    bl = b * length
    safe_b = np.where(b == 0.0, 1.0, b)
    with np.errstate(over="ignore", invalid="ignore"):
        phi = np.where(np.abs(bl) < 1e-8, length * (1.0 + 0.5 * bl), np.expm1(bl) / safe_b)
    return np.exp(np.minimum(a + b * x0, EXP_MAX)) * phi


def seg_inverse(a: np.ndarray, b: np.ndarray, x0: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Length L >= 0 with ∫_{x0}^{x0+L} exp(a + b u) du = mass; inf where the hazard never accrues that mass."""
    y = mass * np.exp(-np.clip(a + b * x0, -EXP_MAX, EXP_MAX))
    by = b * y
    safe_b = np.where(b == 0.0, 1.0, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        length = np.where(np.abs(by) < 1e-8, y * (1.0 - 0.5 * by), np.log1p(np.maximum(by, -1.0)) / safe_b)
    return np.where(by <= -1.0, np.inf, length)


def path_cumhaz(
    a0: np.ndarray,
    b0: np.ndarray,
    a1: np.ndarray,
    b1: np.ndarray,
    r: np.ndarray,
    x0: np.ndarray,
    u: np.ndarray,
) -> np.ndarray:
    """Exact cumulative hazard from x0 to u (x0 <= u) of a path: (a0, b0) before r, (a1, b1) from r on."""
    finite = np.isfinite(r)
    r_safe = np.where(finite, r, 0.0)
    start0 = np.where(finite, np.minimum(x0, r_safe), x0)
    end0 = np.where(finite, np.minimum(u, r_safe), u)
    start1 = np.where(finite, np.maximum(x0, r_safe), u)
    end1 = np.where(finite, np.maximum(u, r_safe), u)
    return seg_cumhaz(a0, b0, start0, end0) + seg_cumhaz(a1, b1, start1, end1)


def path_inverse(
    a0: np.ndarray, b0: np.ndarray, a1: np.ndarray, b1: np.ndarray, r: np.ndarray, mass: np.ndarray
) -> np.ndarray:
    """Time T with cumulative hazard from 0 to T equal to ``mass`` on a path with breakpoint r (inf if never)."""
    finite = np.isfinite(r)
    r_safe = np.where(finite, r, 0.0)
    mass_before = np.where(finite, seg_cumhaz(a0, b0, np.zeros_like(r_safe), r_safe), np.inf)
    first = seg_inverse(a0, b0, np.zeros_like(mass), mass)
    with np.errstate(invalid="ignore"):
        second = r_safe + seg_inverse(a1, b1, r_safe, np.maximum(mass - mass_before, 0.0))
    return np.where(mass < mass_before, first, second)


def realized_z1(lat: dict[str, np.ndarray], params: SimulatorParams, idx: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Severity at time u (years) on each subject's own (potential) treatment path."""
    start = lat["start_years"][idx]
    effect = params.slope_effects()[lat["subtype"][idx], lat["start_option"][idx]]
    untreated = lat["z1_level"][idx] + lat["z1_slope"][idx] * u
    treated = untreated - effect * (u - np.where(np.isfinite(start), start, 0.0))
    return np.where(u >= start, treated, untreated)
