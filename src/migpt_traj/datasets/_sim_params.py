"""Parameters of the synthetic cohort simulator (see :mod:`migpt_traj.datasets.synthetic` for the model).

Every number the simulator uses lives in :class:`SimulatorParams`, so that the generator and the ground truth
read the same values and a cohort's ``metadata/dataset.json`` records exactly how it was made. Times inside the
simulator are in **years since entry** (365.25 days); the public API speaks days.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np

__all__ = ["DAYS_PER_YEAR", "SIMULATOR_VERSION", "LabSpec", "SimulatorParams"]

#: Bumped whenever the generative model or its random-number stream changes; pinned by the tests.
SIMULATOR_VERSION = "1.0.0"
DAYS_PER_YEAR = 365.25
#: Causes, in the order used by every array with a cause axis.
CAUSES: tuple[str, str] = ("MEDS_DEATH", "TRANSPLANT")


@dataclass(frozen=True)
class LabSpec:
    """One laboratory measurement: its noise-free value is a function of the severity ``z1`` only.

    ``kind="log"``: value = exp(intercept + slope * z1) * exp(noise_sd * e - noise_sd**2 / 2) (mean-one
    multiplicative noise); ``kind="linear"``: value = intercept + slope * z1 + noise_sd * e. In both cases the
    noise-free value :meth:`expected` is the conditional mean given z1. Each value is missing (no row)
    independently with probability ``missing_prob``.
    """

    code: str
    kind: Literal["log", "linear"]
    intercept: float
    slope: float
    noise_sd: float
    missing_prob: float
    unit: str

    def expected(self, z1: np.ndarray) -> np.ndarray:
        """Noise-free value (the mean of the observed value) at severity ``z1``."""
        lin = self.intercept + self.slope * z1
        return np.exp(lin) if self.kind == "log" else lin

    def observe(self, z1: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Observed value given standard-normal ``noise`` of the same shape."""
        if self.kind == "log":
            return self.expected(z1) * np.exp(self.noise_sd * noise - 0.5 * self.noise_sd**2)
        return self.expected(z1) + self.noise_sd * noise


def _default_labs() -> tuple[LabSpec, ...]:
    return (
        LabSpec("LAB//bilirubin", "log", 0.0, 0.7, 0.25, 0.05, "mg/dL"),
        LabSpec("LAB//albumin", "linear", 3.8, -0.3, 0.25, 0.15, "g/dL"),
        LabSpec("LAB//platelets", "log", float(np.log(250.0)), -0.2, 0.2, 0.25, "10^9/L"),
        # Uninformative: its mean does not depend on the latent state.
        LabSpec("LAB//sodium", "linear", 139.0, 0.0, 2.5, 0.2, "mmol/L"),
    )


@dataclass(frozen=True)
class SimulatorParams:
    """All constants of the generative model. Tuples indexed by subtype are ordered as ``subtypes``; tables
    indexed ``[subtype][option]`` are ordered as ``subtypes`` x ``options``.

    Hazard coefficient vectors are ordered (z1 severity, z2 imaging-only, z3 symptom/notes-only, age per decade
    above 55, female).
    """

    # --- baseline --------------------------------------------------------------------------------------
    subtypes: tuple[str, ...] = ("a", "b", "c")
    subtype_probs: tuple[float, ...] = (0.40, 0.35, 0.25)
    female_prob: float = 0.55
    age_mean: float = 55.0
    age_sd: float = 10.0
    # --- latent state z(t) = level + slope * t (years) ---------------------------------------------------
    z1_level_mean: tuple[float, ...] = (-0.4, 0.0, 0.4)
    z1_level_sd: float = 0.7
    z1_slope_mean: tuple[float, ...] = (0.10, 0.20, 0.30)
    z1_slope_sd: float = 0.15
    z2_level_sd: float = 1.0
    z2_slope_mean: float = 0.05
    z2_slope_sd: float = 0.05
    z3_level_sd: float = 1.0
    z3_slope_sd: float = 0.10
    # --- competing hazards: log h_k = intercept_k + coef_k . x(t) + theta_k[subtype, option] ------------
    death_intercept: float = -3.5
    death_coef: tuple[float, float, float, float, float] = (1.0, 0.6, 0.6, 0.3, -0.2)
    transplant_intercept: float = -4.1
    transplant_coef: tuple[float, float, float, float, float] = (0.6, 0.0, -0.2, -0.3, 0.0)
    # --- treatments ------------------------------------------------------------------------------------
    options: tuple[str, ...] = ("drug_a", "drug_b")
    #: reduction of the z1 slope (per year) after the start, [subtype][option]; negative = speeds disease.
    slope_effect: tuple[tuple[float, ...], ...] = ((0.25, -0.05), (0.12, 0.12), (0.0, 0.25))
    #: immediate log hazard ratio on death after the start, [subtype][option].
    death_log_hr: tuple[tuple[float, ...], ...] = ((-0.4, 0.2), (-0.2, -0.2), (0.1, -0.4))
    #: immediate log hazard ratio on the competing event after the start, [subtype][option].
    transplant_log_hr: tuple[tuple[float, ...], ...] = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    #: P(option | a treatment starts, subtype), [subtype][option]; 0 = never given (protocol exclusion).
    option_probs: tuple[tuple[float, ...], ...] = ((1.0, 0.0), (0.5, 0.5), (0.5, 0.5))
    #: treatment decisions happen only at scheduled reviews, every this many years after entry.
    review_interval_years: float = 1.0
    start_intercept: float = -2.0
    start_slope: float = 1.5
    start_center: float = 0.5
    #: with confounding > 0, no treatment starts while z1 < start_gate (mild disease is never treated).
    start_gate: float = 0.0
    # --- visits ----------------------------------------------------------------------------------------
    visit_rate_low: float = 0.4
    visit_rate_high: float = 2.0
    visit_rate_center: float = 0.5
    visit_rate_scale: float = 1.5
    labs: tuple[LabSpec, ...] = field(default_factory=_default_labs)
    # --- imaging ---------------------------------------------------------------------------------------
    image_code: str = "IMAGE//ct"
    embedding_dim: int = 16
    embedding_noise_sd: float = 0.5
    embedding_seed: int = 20_240_601
    #: P(imaging study) at an entry / review / unscheduled visit.
    image_prob: tuple[float, float, float] = (1.0, 0.5, 0.15)
    image_delay_mean_days: float = 3.0
    # --- notes -----------------------------------------------------------------------------------------
    note_code: str = "NOTE//progress"
    note_prob: tuple[float, float, float] = (1.0, 1.0, 0.5)
    note_noise_sd: float = 0.3
    note_cutpoints: tuple[float, float, float] = (-0.8, 0.0, 0.8)
    note_delay_days: tuple[float, float] = (0.5, 5.0)
    # --- follow-up and censoring -----------------------------------------------------------------------
    entry_start: str = "2010-01-01"
    entry_end: str = "2016-01-01"
    study_end: str = "2021-01-01"
    dropout_rate: float = 0.05

    # ------------------------------------------------------------------ derived arrays
    def cause_intercepts(self) -> np.ndarray:
        """(2,) intercepts in :data:`CAUSES` order."""
        return np.array([self.death_intercept, self.transplant_intercept])

    def cause_coefs(self) -> np.ndarray:
        """(2, 5) hazard coefficients, rows in :data:`CAUSES` order."""
        return np.array([self.death_coef, self.transplant_coef])

    def log_hr(self) -> np.ndarray:
        """(subtypes, options + 1, 2) immediate log hazard ratios; option index 0 = untreated (zeros)."""
        table = np.stack([np.asarray(self.death_log_hr), np.asarray(self.transplant_log_hr)], axis=-1)
        return np.concatenate([np.zeros((len(self.subtypes), 1, 2)), table], axis=1)

    def slope_effects(self) -> np.ndarray:
        """(subtypes, options + 1) z1 slope reductions; option index 0 = untreated (zero)."""
        return np.concatenate([np.zeros((len(self.subtypes), 1)), np.asarray(self.slope_effect)], axis=1)

    def embedding_map(self) -> tuple[np.ndarray, np.ndarray]:
        """Fixed (dim, 2) loading matrix on (z1, z2) and (dim,) offset of the imaging embedding.

        Drawn from ``embedding_seed``, not from the cohort seed: the "scanner" is the same in every cohort.
        """
        rng = np.random.default_rng(self.embedding_seed)
        return rng.normal(0.0, 0.6, size=(self.embedding_dim, 2)), rng.normal(0.0, 0.3, size=self.embedding_dim)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (for ``dataset.json``); :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimulatorParams:
        def tuplify(value: Any) -> Any:
            return tuple(tuplify(v) for v in value) if isinstance(value, list | tuple) else value

        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name == "labs":
                kwargs[f.name] = tuple(LabSpec(**spec) for spec in value)
            else:
                kwargs[f.name] = tuplify(value)
        return cls(**kwargs)
