"""Classical landmark baselines with the :class:`~migpt_traj.TrajectoryModel` prediction contract.

* :class:`NullModel`: Aalen–Johansen cumulative incidence of each outcome among train subjects at risk at each
  landmark; the same risk for everyone at a landmark (the "no information" reference).
* :class:`LandmarkCox`: per landmark, one cause-specific Cox model per outcome (lifelines, small ridge penalty) on
  the as-of features of :class:`FeatureSpec`; cumulative incidence from all cause-specific hazards together.
* :class:`LandmarkCoxTV`: one Cox model with time-varying covariates per outcome (lifelines
  ``CoxTimeVaryingFitter``) on ``(start, stop]`` intervals from time zero, predicting from any landmark with the
  covariates as of the landmark held fixed.
* :class:`LandmarkRSF`: per landmark, a scikit-survival random survival forest on the same features, primary
  outcome only.

Every model is fitted on the train split only (subjects at risk at the landmark, labels from
:meth:`Cohort.labels <migpt_traj.data.cohort.Cohort.labels>`), and ``predict_risk`` returns the frame of
:meth:`TrajectoryModel.predict_risk <migpt_traj.TrajectoryModel.predict_risk>`: ``subject_id, prediction_time,
landmark_days, event, horizon_days, risk``, risk = cumulative incidence of ``event`` in ``(t, t + h]`` (higher =
worse), for the subjects at risk at each landmark (days after time zero).

Features as of the landmark: see :mod:`migpt_traj.evaluation._features` (:func:`raw_features`, re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import polars as pl
from numpy.typing import NDArray

from migpt_traj.data.cohort import Cohort, Split
from migpt_traj.errors import ConfigError, ModelStateError, OutcomeError
from migpt_traj.evaluation._features import _KEYS, FeatureSpec, FeatureVocabulary, interval_starts, raw_features
from migpt_traj.evaluation._km import aalen_johansen

__all__ = [
    "DEFAULT_LANDMARKS",
    "FeatureSpec",
    "FeatureVocabulary",
    "LandmarkCox",
    "LandmarkCoxTV",
    "LandmarkRSF",
    "NullModel",
    "raw_features",
]

#: Landmarks (days after time zero) fitted by default: 1, 3 and 5 years.
DEFAULT_LANDMARKS: tuple[float, ...] = (365.25, 1095.75, 1826.25)
_Model = TypeVar("_Model", bound="_Landmarks")


# ---------------------------------------------------------------------------------------------------- common
def _checked_days(values: Sequence[float], name: str) -> NDArray[np.float64]:
    if isinstance(values, str | bytes):
        raise ConfigError(f"'{name}' must be a sequence of days; got the string {values!r}.")
    try:
        arr = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"'{name}' must be numbers of days; got {values!r}.") from err
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ConfigError(f"'{name}' must be a non-empty list of finite days >= 0; got {list(values)}.")
    return arr


def _event_codes(labels: pl.DataFrame, outcomes: Sequence[str]) -> NDArray[np.int64]:
    """0 = censored, k = ``outcomes[k - 1]``."""
    mapping = {o: i + 1 for i, o in enumerate(outcomes)}
    return labels["event"].replace_strict(mapping, default=0, return_dtype=pl.Int64).to_numpy()


def _risk_frame(
    labels: pl.DataFrame, events: Sequence[str], cif: NDArray[np.float64], h: NDArray[np.float64]
) -> pl.DataFrame:
    """The ``predict_risk`` rows of one landmark from a cumulative incidence array ``(n, K, H)``."""
    n, k, nh = cif.shape
    return pl.DataFrame(
        {
            "subject_id": np.repeat(labels["subject_id"].to_numpy(), k * nh),
            "prediction_time": labels["prediction_time"].gather(np.repeat(np.arange(n), k * nh)),
            "landmark_days": np.repeat(labels["landmark_days"].to_numpy(), k * nh),
            "event": np.tile(np.repeat(np.asarray(events, dtype=object), nh), n),
            "horizon_days": np.tile(h, n * k),
            "risk": np.clip(cif, 0.0, 1.0).reshape(-1),
        },
        schema_overrides={"event": pl.String, "landmark_days": pl.Float64},
    )


def _survival_frame(labels: pl.DataFrame, surv: NDArray[np.float64], h: NDArray[np.float64]) -> pl.DataFrame:
    """The ``predict_survival`` rows of one landmark from an overall survival array ``(n, H)``."""
    return (
        labels.select(*_KEYS, "landmark_days")
        .with_columns(time_days=pl.lit(h.tolist()), survival=pl.Series(surv.tolist()))
        .explode("time_days", "survival")
    )


@dataclass(frozen=True)
class _LandmarkData:
    """Train (or prediction) samples at one landmark: labels and as-of raw features, row-aligned."""

    labels: pl.DataFrame
    raw: pl.DataFrame
    time: NDArray[np.float64]
    event: NDArray[np.int64]


class _Landmarks:
    """Shared fit/predict plumbing of the landmark baselines: one independent fit per landmark."""

    name = "baseline"
    uses_features = True

    def __init__(self, *, landmarks: Sequence[float] = DEFAULT_LANDMARKS, log_skew_threshold: float = 1.0) -> None:
        self.landmarks = tuple(float(s) for s in np.unique(_checked_days(landmarks, "landmarks")))
        self.log_skew_threshold = float(log_skew_threshold)
        self.outcomes: tuple[str, ...] = ()
        self.specs: dict[float, FeatureSpec] = {}
        self._fits: dict[float, Any] = {}

    def _data(
        self, cohort: Cohort, landmark: float, split: Split | None, vocab: FeatureVocabulary | None
    ) -> _LandmarkData:
        labels = cohort.labels(landmarks=[landmark], split=split)
        raw = raw_features(cohort, labels, vocab) if vocab is not None else labels.select(*_KEYS)
        return _LandmarkData(labels, raw, labels["duration_days"].to_numpy(), _event_codes(labels, self.outcomes))

    def fit(self: _Model, cohort: Cohort) -> _Model:
        """Fit one model per landmark on the train subjects at risk there; nothing else is read.

        Raises:
            ConfigError: no train subject is at risk at one of the landmarks.
        """
        self.outcomes = tuple(cohort.outcomes)
        vocab = FeatureVocabulary.from_train(cohort) if self.uses_features else None
        self.specs, self._fits = {}, {}
        for s in self.landmarks:  # a handful of landmarks, each fit vectorised over subjects
            data = self._data(cohort, s, "train", vocab)
            if data.labels.height == 0:
                raise ConfigError(f"{self.name}: no train subject is at risk at landmark {s:g} days; drop it.")
            x = None
            if vocab is not None:
                self.specs[s] = FeatureSpec.fit(data.raw, vocab, log_skew_threshold=self.log_skew_threshold)
                x = self.specs[s].matrix(data.raw)
            self._fits[s] = self._fit_landmark(data, x)
        return self

    def _require(self, landmarks: Sequence[float], cohort: Cohort | None = None) -> list[float]:
        if not self._fits:
            raise ModelStateError(f"This {self.name} is not fitted; call fit(cohort) first.")
        if cohort is not None and tuple(cohort.outcomes) != self.outcomes:
            raise OutcomeError(
                f"{self.name} was fitted for outcomes {list(self.outcomes)}; the cohort has {list(cohort.outcomes)}."
            )
        asked = _checked_days(landmarks, "landmarks")
        out = []
        for s in np.unique(asked):
            match = [f for f in self._fits if np.isclose(f, s, rtol=0, atol=1e-9)]
            if not match:
                raise ModelStateError(
                    f"{self.name} was fitted at landmarks {list(self._fits)} days, not at {s:g}; build it with "
                    f"landmarks=[..., {s:g}] and refit."
                )
            out.append(match[0])
        return out

    def design(self, cohort: Cohort, *, landmark: float, split: Split | None = None) -> pl.DataFrame:
        """The standardised as-of design at a fitted landmark: ``subject_id, prediction_time``, then the columns."""
        (s,) = self._require([landmark], cohort)
        if s not in self.specs:
            raise ModelStateError(f"{self.name} uses no features.")
        data = self._data(cohort, s, split, self.specs[s].vocabulary)
        return pl.concat([data.labels.select(*_KEYS), self.specs[s].design(data.raw)], how="horizontal")

    def predict_risk(
        self, cohort: Cohort, *, horizons: Sequence[float], landmarks: Sequence[float], split: Split | None = None
    ) -> pl.DataFrame:
        """Cumulative incidence of each outcome within each horizon (days) after each landmark (days after time
        zero), for the subjects at risk there, from the events available at the landmark (``<=``).

        Returns:
            ``subject_id, prediction_time, landmark_days, event, horizon_days, risk`` (as TrajectoryModel), risk in
            [0, 1], non-decreasing in ``horizon_days``.

        Raises:
            ModelStateError: not fitted, or a landmark that was not fitted.
            OutcomeError: the cohort's outcomes differ from those of the fit.
            ConfigError: bad horizons or landmarks.
        """
        h = _checked_days(horizons, "horizons")
        frames = []
        for s in self._require(landmarks, cohort):
            spec = self.specs.get(s)
            data = self._data(cohort, s, split, spec.vocabulary if spec else None)
            x = spec.matrix(data.raw) if spec else None
            events, cif = self._predict_landmark(self._fits[s], x, data.labels.height, h)  # (n, K, H)
            frames.append(_risk_frame(data.labels, events, cif, h))
        return pl.concat(frames).sort("subject_id", "prediction_time", maintain_order=True)

    # subclasses
    def _fit_landmark(self, data: _LandmarkData, x: NDArray[np.float64] | None) -> Any:
        raise NotImplementedError

    def _predict_landmark(
        self, fitted: Any, x: NDArray[np.float64] | None, n: int, horizons: NDArray[np.float64]
    ) -> tuple[tuple[str, ...], NDArray[np.float64]]:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- models
class NullModel(_Landmarks):
    """Aalen–Johansen cumulative incidence of each outcome among the train subjects at risk at each landmark.

    Everyone at a landmark gets the same risk: the reference a model must beat (its AUC is 0.5 by construction).

    Example:
        >>> import migpt_traj as mt  # doctest: +SKIP
        >>> cohort = mt.datasets.load_pbc2(split_seed=0)  # doctest: +SKIP
        >>> null = NullModel(landmarks=[365.25]).fit(cohort)  # doctest: +SKIP
        >>> null.predict_risk(cohort, landmarks=[365.25], horizons=[1095.75], split="held_out")  # doctest: +SKIP
    """

    name = "NullModel"
    uses_features = False

    def __init__(self, *, landmarks: Sequence[float] = DEFAULT_LANDMARKS) -> None:
        super().__init__(landmarks=landmarks)

    def _fit_landmark(self, data: _LandmarkData, x: NDArray[np.float64] | None) -> Any:
        return data.time, data.event

    def _predict_landmark(
        self, fitted: Any, x: NDArray[np.float64] | None, n: int, horizons: NDArray[np.float64]
    ) -> tuple[tuple[str, ...], NDArray[np.float64]]:
        time, event = fitted
        curves = np.stack([aalen_johansen(time, event, cause=k + 1, times=horizons) for k in range(len(self.outcomes))])
        return self.outcomes, np.broadcast_to(curves, (n, *curves.shape)).copy()


@dataclass(frozen=True)
class _CauseHazard:
    """A fitted cause-specific Cox model: coefficients and the Breslow baseline hazard jumps at its event times."""

    beta: NDArray[np.float64]  # (p,) log hazard ratios per train SD of each design column
    times: NDArray[np.float64]  # (J,) distinct train event times of this cause, days after the landmark
    jumps: NDArray[np.float64]  # (J,) baseline hazard increments at those times (linear predictor 0)


def _breslow(time: NDArray[np.float64], event: NDArray[np.bool_], lp: NDArray[np.float64]) -> tuple[Any, Any]:
    """Breslow baseline hazard: ``dH0(t) = d(t) / Σ_{T_j >= t} exp(lp_j)`` at each distinct event time (lifelines)."""
    uniq, inv = np.unique(time, return_inverse=True)
    m = uniq.shape[0]
    at_risk = np.cumsum(np.bincount(inv, weights=np.exp(lp), minlength=m)[::-1])[::-1]
    deaths = np.bincount(inv, weights=event * 1.0, minlength=m)
    keep = deaths > 0
    return uniq[keep], deaths[keep] / at_risk[keep]


def _competing_cif(
    hazards: Sequence[_CauseHazard | None], x: NDArray[np.float64], horizons: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Cumulative incidence of each cause (n, K, H) and overall survival (n, H) from cause-specific hazards.

    On the union grid of the baseline jump times, ``dH_k(t) = dH0_k(t) exp(x β_k)`` and ``dH = Σ_k dH_k``:
    ``CIF_k(h) = Σ_{t <= h} S(t-) (dH_k(t) / dH(t)) (1 - exp(-dH(t)))`` with ``S(t) = exp(-Σ_{u <= t} dH(u))``.
    This is ``Σ S(t-) dH_k(t)`` made exact for discrete jumps: ``Σ_k CIF_k + S = 1`` at every horizon, and with one
    cause ``CIF = 1 - exp(-H)``, lifelines' ``1 - S`` (a plain ``1 - S_k`` per cause would ignore the competitors).
    """
    fitted = [hz for hz in hazards if hz is not None]
    n, k = x.shape[0], len(hazards)
    if not fitted:  # no event of any cause: nothing happens
        return np.zeros((n, k, horizons.shape[0])), np.ones((n, horizons.shape[0]))
    grid = np.unique(np.concatenate([hz.times for hz in fitted]))
    dh = np.zeros((n, k, grid.shape[0]))
    for j, hz in enumerate(hazards):
        if hz is not None:
            lp = np.clip(x @ hz.beta, -50.0, 50.0) if hz.beta.size else np.zeros(n)
            dh[:, j, np.searchsorted(grid, hz.times)] = np.exp(lp)[:, None] * hz.jumps[None, :]
    total = dh.sum(axis=1)
    cum = np.cumsum(total, axis=1)
    share = np.divide(dh, total[:, None, :], out=np.zeros_like(dh), where=total[:, None, :] > 0)
    jump = np.exp(-(cum - total))[:, None, :] * share * (-np.expm1(-total))[:, None, :]
    cif = np.cumsum(jump, axis=2)
    idx = np.searchsorted(grid, horizons, side="right") - 1
    before = idx < 0
    cif_h = np.where(before[None, None, :], 0.0, cif[:, :, np.maximum(idx, 0)])
    surv_h = np.where(before[None, :], 1.0, np.exp(-cum[:, np.maximum(idx, 0)]))
    return cif_h.astype(np.float64), surv_h.astype(np.float64)


def _coefficients(
    outcomes: Sequence[str], hazards: Sequence[_CauseHazard | None], columns: Sequence[str]
) -> pl.DataFrame:
    """``event, feature, coef`` of the fitted causes (a cause without train events has no rows)."""
    rows = [
        (event, col, float(b))
        for event, hz in zip(outcomes, hazards, strict=True)
        if hz is not None
        for col, b in zip(columns, hz.beta, strict=True)
    ]
    return pl.DataFrame(rows, schema={"event": pl.String, "feature": pl.String, "coef": pl.Float64}, orient="row")


class LandmarkCox(_Landmarks):
    """Per landmark, cause-specific Cox models (lifelines ``CoxPHFitter``, ridge ``penalizer``) on as-of features.

    Each landmark's models are fitted on the train subjects at risk there, with time measured from the landmark
    (days); a cause's model treats the other outcomes as censoring (cause-specific hazards), and the cumulative
    incidence combines all of them (see :func:`_competing_cif`), so competing risks are handled properly. A cause
    without train events at a landmark gets zero hazard. The baseline hazard (Breslow) is flat after the last
    train event time, so risks stop growing there.

    Args:
        landmarks: landmarks to fit (days after time zero); ``predict_risk`` accepts these only.
        penalizer: lifelines ``penalizer`` (on standardised features).
        l1_ratio: lifelines ``l1_ratio`` (0 = ridge).
        log_skew_threshold: train skewness above which a strictly positive column is log-transformed.

    Example:
        >>> import migpt_traj as mt  # doctest: +SKIP
        >>> cohort = mt.datasets.load_pbc2(split_seed=0)  # doctest: +SKIP
        >>> cox = LandmarkCox(landmarks=[365.25]).fit(cohort)  # doctest: +SKIP
        >>> cox.predict_risk(cohort, landmarks=[365.25], horizons=[1095.75], split="held_out")  # doctest: +SKIP
    """

    name = "LandmarkCox"

    def __init__(
        self,
        *,
        landmarks: Sequence[float] = DEFAULT_LANDMARKS,
        penalizer: float = 0.1,
        l1_ratio: float = 0.0,
        log_skew_threshold: float = 1.0,
    ) -> None:
        if not (np.isfinite(penalizer) and penalizer >= 0) or not 0 <= l1_ratio <= 1:
            raise ConfigError(f"LandmarkCox needs penalizer >= 0 and l1_ratio in [0, 1]; got {penalizer}, {l1_ratio}.")
        super().__init__(landmarks=landmarks, log_skew_threshold=log_skew_threshold)
        self.penalizer, self.l1_ratio = float(penalizer), float(l1_ratio)

    def _fit_cause(self, x: NDArray[np.float64], time: NDArray[np.float64], event: NDArray[np.bool_]) -> _CauseHazard:
        beta = np.zeros(x.shape[1])
        if x.shape[1]:
            import pandas as pd  # lifelines' input type; not in the hot path
            from lifelines import CoxPHFitter

            frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(_T=time, _E=event)
            cph = CoxPHFitter(penalizer=self.penalizer, l1_ratio=self.l1_ratio)
            cph.fit(frame, duration_col="_T", event_col="_E")
            beta = cph.params_.to_numpy(dtype=np.float64)
        times, jumps = _breslow(time, event, x @ beta)
        return _CauseHazard(beta, times, jumps)

    def _fit_landmark(self, data: _LandmarkData, x: NDArray[np.float64] | None) -> Any:
        assert x is not None
        return [
            self._fit_cause(x, data.time, data.event == k + 1) if (data.event == k + 1).any() else None
            for k in range(len(self.outcomes))
        ]

    def _predict_landmark(
        self, fitted: Any, x: NDArray[np.float64] | None, n: int, horizons: NDArray[np.float64]
    ) -> tuple[tuple[str, ...], NDArray[np.float64]]:
        assert x is not None
        return self.outcomes, _competing_cif(fitted, x, horizons)[0]

    def predict_survival(
        self, cohort: Cohort, *, times: Sequence[float], landmarks: Sequence[float], split: Split | None = None
    ) -> pl.DataFrame:
        """Probability of no outcome of any kind within ``times`` days: ``subject_id, prediction_time,
        landmark_days, time_days, survival`` (as TrajectoryModel); ``survival + Σ_k risk_k = 1``."""
        h = _checked_days(times, "times")
        frames = []
        for s in self._require(landmarks, cohort):
            data = self._data(cohort, s, split, self.specs[s].vocabulary)
            surv = _competing_cif(self._fits[s], self.specs[s].matrix(data.raw), h)[1]
            frames.append(_survival_frame(data.labels, surv, h))
        return pl.concat(frames).sort("subject_id", "prediction_time", maintain_order=True)

    def coefficients(self, landmark: float) -> pl.DataFrame:
        """``event, feature, coef`` at a fitted landmark: log hazard ratio per train SD of each design column."""
        (s,) = self._require([landmark])
        return _coefficients(self.outcomes, self._fits[s], self.specs[s].columns)


class LandmarkRSF(_Landmarks):
    """Per landmark, a scikit-survival ``RandomSurvivalForest`` on the as-of features, **primary outcome only**.

    Limitation: the forest is a single-event model, so competing outcomes are treated as censoring, and
    ``risk = 1 - S(h)`` of its (Nelson–Aalen-based) survival is the *net* risk of the primary outcome in a world
    without the competitors — it overstates the cumulative incidence when competing events are common. Only the
    primary outcome's rows are returned. scikit-survival (GPL-3.0) is imported on ``fit`` only.

    Args:
        landmarks: landmarks to fit (days after time zero).
        n_estimators, min_samples_leaf, max_features: forest options (scikit-survival's meaning).
        random_state: seed of the forest.
        n_jobs: worker processes of the forest.
        log_skew_threshold: as :class:`LandmarkCox` (trees are insensitive to it).
    """

    name = "LandmarkRSF"

    def __init__(
        self,
        *,
        landmarks: Sequence[float] = DEFAULT_LANDMARKS,
        n_estimators: int = 300,
        min_samples_leaf: int = 10,
        max_features: str | float | None = "sqrt",
        random_state: int = 0,
        n_jobs: int = 1,
        log_skew_threshold: float = 1.0,
    ) -> None:
        if n_estimators < 1 or min_samples_leaf < 1:
            raise ConfigError(
                f"LandmarkRSF needs n_estimators >= 1 and min_samples_leaf >= 1; got {n_estimators}, "
                f"{min_samples_leaf}."
            )
        super().__init__(landmarks=landmarks, log_skew_threshold=log_skew_threshold)
        self.forest_options: dict[str, Any] = {
            "n_estimators": n_estimators,
            "min_samples_leaf": min_samples_leaf,
            "max_features": max_features,
            "random_state": random_state,
            "n_jobs": n_jobs,
        }

    def _fit_landmark(self, data: _LandmarkData, x: NDArray[np.float64] | None) -> Any:
        assert x is not None
        primary = data.event == 1
        if not primary.any() or x.shape[1] == 0:
            return None
        from sksurv.ensemble import RandomSurvivalForest
        from sksurv.util import Surv

        forest = RandomSurvivalForest(**self.forest_options)
        forest.fit(x, Surv.from_arrays(primary, data.time))
        return forest

    def _predict_landmark(
        self, fitted: Any, x: NDArray[np.float64] | None, n: int, horizons: NDArray[np.float64]
    ) -> tuple[tuple[str, ...], NDArray[np.float64]]:
        assert x is not None
        if fitted is None:
            return self.outcomes[:1], np.zeros((n, 1, horizons.shape[0]))
        surv = np.asarray(fitted.predict_survival_function(x, return_array=True), dtype=np.float64)
        idx = np.searchsorted(fitted.unique_times_, horizons, side="right") - 1
        s_h = np.where(idx[None, :] < 0, 1.0, surv[:, np.maximum(idx, 0)])
        return self.outcomes[:1], (1.0 - s_h)[:, None, :]


# ---------------------------------------------------------------------------------------------------- time-varying
def _tv_breslow(
    start: NDArray[np.float64], stop: NDArray[np.float64], event: NDArray[np.bool_], lp: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Breslow jumps on ``(start, stop]`` rows: ``d(t) / Σ_{start < t <= stop} exp(lp)`` at each event time."""
    times = np.unique(stop[event])
    w = np.exp(lp)
    by_stop, by_start = np.argsort(stop), np.argsort(start)
    cum_stop = np.concatenate([[0.0], np.cumsum(w[by_stop])])
    cum_start = np.concatenate([[0.0], np.cumsum(w[by_start])])
    # rows with stop >= t minus rows with start >= t (start < stop, so those are a subset)
    at_risk = (cum_stop[-1] - cum_stop[np.searchsorted(stop[by_stop], times, side="left")]) - (
        cum_start[-1] - cum_start[np.searchsorted(start[by_start], times, side="left")]
    )
    deaths = np.bincount(np.searchsorted(times, stop[event]), minlength=times.shape[0]).astype(np.float64)
    return times, deaths / at_risk


def _hazard_after(hazard: _CauseHazard | None, s: float) -> _CauseHazard | None:
    """The jumps strictly after ``s`` (days after time zero), re-timed as days after ``s``; None if there are none."""
    if hazard is None or not (keep := hazard.times > s).any():
        return None
    return _CauseHazard(hazard.beta, hazard.times[keep] - s, hazard.jumps[keep])


class LandmarkCoxTV:
    """Cause-specific Cox models with time-varying covariates (lifelines ``CoxTimeVaryingFitter``), one per outcome.

    **Fit** (train split only): every train subject at risk at time zero contributes ``(start, stop]`` intervals
    from time zero (days), split at each availability time of a feature event (:func:`interval_starts`), with the
    features of :class:`LandmarkCox` as of each interval's start (last observation carried forward; a value counts
    from its ``available_time``, else ``time``). The standardisation (:class:`FeatureSpec`) is fitted on the train
    intervals. A cause's model treats the other outcomes as censoring; a cause without train events gets zero
    hazard. lifelines scales its penalty by the number of rows; ``penalizer`` is passed as ``penalizer * subjects /
    intervals`` so its strength is per subject, as in :class:`LandmarkCox`, whatever the visit frequency.

    **Prediction** from landmark ``s`` (days after time zero) for horizon ``h``, for the subjects at risk at ``s``:
    the covariates as of ``s`` (``<=``) are **held fixed over** ``(s, s + h]`` — no forecast of future covariates,
    the standard way to predict with a time-varying Cox model and a known limitation (risk is understated when
    covariates keep worsening). With ``dH_k(t) = dH0_k(t) exp(x_s β_k)`` from the Breslow baseline hazards on the
    combined jump times, conditional on being event-free at ``s``::

        CIF_k(s, s + h) = Σ_{s < t <= s + h} S(t- | s) dH_k(t),   S(t | s) = exp(-Σ_k (H_k(t) - H_k(s)))

    made exact for discrete jumps as in :class:`LandmarkCox`, so ``Σ_k CIF_k + S = 1``. Unlike the landmark models,
    one fit serves every landmark: ``predict_risk`` accepts any landmark ``>= 0``; ``landmarks`` only records the
    ones the harness evaluates. The baseline hazard is flat after the last train event time.

    Args:
        landmarks: landmarks to evaluate by default (days after time zero); prediction accepts any.
        penalizer: ridge penalty on standardised features, per subject (see above).
        l1_ratio: lifelines ``l1_ratio`` (0 = ridge).
        log_skew_threshold: train skewness above which a strictly positive column is log-transformed.

    Example:
        >>> import migpt_traj as mt  # doctest: +SKIP
        >>> cohort = mt.datasets.load_pbc2(split_seed=0)  # doctest: +SKIP
        >>> tv = LandmarkCoxTV().fit(cohort)  # doctest: +SKIP
        >>> tv.predict_risk(cohort, landmarks=[365.25], horizons=[1095.75], split="held_out")  # doctest: +SKIP
    """

    name = "LandmarkCoxTV"
    uses_features = True

    def __init__(
        self,
        *,
        landmarks: Sequence[float] = DEFAULT_LANDMARKS,
        penalizer: float = 0.1,
        l1_ratio: float = 0.0,
        log_skew_threshold: float = 1.0,
    ) -> None:
        if not (np.isfinite(penalizer) and penalizer >= 0) or not 0 <= l1_ratio <= 1:
            raise ConfigError(
                f"LandmarkCoxTV needs penalizer >= 0 and l1_ratio in [0, 1]; got {penalizer}, {l1_ratio}."
            )
        self.landmarks = tuple(float(s) for s in np.unique(_checked_days(landmarks, "landmarks")))
        self.penalizer, self.l1_ratio = float(penalizer), float(l1_ratio)
        self.log_skew_threshold = float(log_skew_threshold)
        self.outcomes: tuple[str, ...] = ()
        self.spec: FeatureSpec | None = None
        self._hazards: list[_CauseHazard | None] = []  # times in days after time zero

    def _long(self, cohort: Cohort, split: Split | None, vocab: FeatureVocabulary) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The intervals of the subjects at risk at time zero in ``split``, and their raw features as of each start."""
        long = interval_starts(cohort, cohort.labels(landmarks=[0.0], split=split), vocab)
        return long, raw_features(cohort, long, vocab)

    def fit(self, cohort: Cohort) -> LandmarkCoxTV:
        """Fit one time-varying Cox model per outcome on the train intervals; nothing else is read.

        Raises:
            ConfigError: no train subject is at risk at time zero.
        """
        self.outcomes = tuple(cohort.outcomes)
        vocab = FeatureVocabulary.from_train(cohort)
        long, raw = self._long(cohort, "train", vocab)
        if long.height == 0:
            raise ConfigError(f"{self.name}: no train subject is at risk at time zero.")
        spec = FeatureSpec.fit(raw, vocab, log_skew_threshold=self.log_skew_threshold)
        x = spec.matrix(raw)
        codes = _event_codes(long, self.outcomes)
        rows = (long["subject_id"].to_numpy(), long["start_days"].to_numpy(), long["stop_days"].to_numpy())
        penalizer = self.penalizer * long["subject_id"].n_unique() / long.height
        self._hazards = [
            self._fit_cause(x, rows, codes == k + 1, penalizer) if (codes == k + 1).any() else None
            for k in range(len(self.outcomes))
        ]
        self.spec = spec
        return self

    def _fit_cause(
        self, x: NDArray[np.float64], rows: tuple[Any, Any, Any], event: NDArray[np.bool_], penalizer: float
    ) -> _CauseHazard:
        ids, start, stop = rows
        if not x.shape[1]:
            return _CauseHazard(np.zeros(0), *_tv_breslow(start, stop, event, np.zeros(x.shape[0])))
        import pandas as pd  # lifelines' input type; not in the hot path
        from lifelines import CoxTimeVaryingFitter

        frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])])
        frame = frame.assign(_id=ids, _start=start, _stop=stop, _E=event)
        ctv = CoxTimeVaryingFitter(penalizer=penalizer, l1_ratio=self.l1_ratio)
        ctv.fit(frame, id_col="_id", event_col="_E", start_col="_start", stop_col="_stop")
        beta = ctv.params_.to_numpy(dtype=np.float64)
        # lifelines' baseline is at the train mean of the covariates: rescale it to a linear predictor of 0
        centre = float(np.exp(-ctv._norm_mean.to_numpy(dtype=np.float64) @ beta))
        cumulative = ctv.baseline_cumulative_hazard_.iloc[:, 0].to_numpy(dtype=np.float64) * centre
        times = ctv.baseline_cumulative_hazard_.index.to_numpy(dtype=np.float64)
        return _CauseHazard(beta, times, np.diff(cumulative, prepend=0.0))

    def _spec(self, cohort: Cohort | None = None) -> FeatureSpec:
        if self.spec is None:
            raise ModelStateError(f"This {self.name} is not fitted; call fit(cohort) first.")
        if cohort is not None and tuple(cohort.outcomes) != self.outcomes:
            raise OutcomeError(
                f"{self.name} was fitted for outcomes {list(self.outcomes)}; the cohort has {list(cohort.outcomes)}."
            )
        return self.spec

    @property
    def specs(self) -> dict[float, FeatureSpec]:
        """The one standardisation, keyed by its time origin (0 days), as the landmark models' ``specs`` (read by
        the leakage audit for the input codes); empty before ``fit``."""
        return {} if self.spec is None else {0.0: self.spec}

    def intervals(self, cohort: Cohort, *, split: Split | None = "train") -> pl.DataFrame:
        """The long frame of the fit: ``subject_id, prediction_time, start_days, stop_days, event``, then the
        standardised design columns as of each start (see :func:`interval_starts`)."""
        spec = self._spec(cohort)
        long, raw = self._long(cohort, split, spec.vocabulary)
        return pl.concat([long, spec.design(raw)], how="horizontal")

    def design(self, cohort: Cohort, *, landmark: float, split: Split | None = None) -> pl.DataFrame:
        """The standardised as-of design at a landmark: ``subject_id, prediction_time``, then the columns."""
        spec = self._spec(cohort)
        (s,) = _checked_days([landmark], "landmark")
        labels = cohort.labels(landmarks=[float(s)], split=split)
        return pl.concat(
            [labels.select(*_KEYS), spec.design(raw_features(cohort, labels, spec.vocabulary))], how="horizontal"
        )

    def _predict(
        self, cohort: Cohort, landmarks: Sequence[float], split: Split | None, h: NDArray[np.float64]
    ) -> list[tuple[pl.DataFrame, NDArray[np.float64], NDArray[np.float64]]]:
        spec = self._spec(cohort)
        out = []
        for s in np.unique(_checked_days(landmarks, "landmarks")):
            labels = cohort.labels(landmarks=[float(s)], split=split)
            x = spec.matrix(raw_features(cohort, labels, spec.vocabulary))
            after = [_hazard_after(hz, float(s)) for hz in self._hazards]
            cif, surv = _competing_cif(after, x, h)
            out.append((labels, cif, surv))
        return out

    def predict_risk(
        self, cohort: Cohort, *, horizons: Sequence[float], landmarks: Sequence[float], split: Split | None = None
    ) -> pl.DataFrame:
        """Cumulative incidence of each outcome within each horizon (days) after each landmark (days after time
        zero), for the subjects at risk there, from the covariates available at the landmark (``<=``), held fixed.

        Returns:
            ``subject_id, prediction_time, landmark_days, event, horizon_days, risk`` (as TrajectoryModel), risk in
            [0, 1], non-decreasing in ``horizon_days``.

        Raises:
            ModelStateError: not fitted.
            OutcomeError: the cohort's outcomes differ from those of the fit.
            ConfigError: bad horizons or landmarks.
        """
        h = _checked_days(horizons, "horizons")
        frames = [_risk_frame(lab, self.outcomes, cif, h) for lab, cif, _ in self._predict(cohort, landmarks, split, h)]
        return pl.concat(frames).sort("subject_id", "prediction_time", maintain_order=True)

    def predict_survival(
        self, cohort: Cohort, *, times: Sequence[float], landmarks: Sequence[float], split: Split | None = None
    ) -> pl.DataFrame:
        """Probability of no outcome of any kind within ``times`` days: ``subject_id, prediction_time,
        landmark_days, time_days, survival`` (as TrajectoryModel); ``survival + Σ_k risk_k = 1``."""
        h = _checked_days(times, "times")
        frames = [_survival_frame(lab, surv, h) for lab, _, surv in self._predict(cohort, landmarks, split, h)]
        return pl.concat(frames).sort("subject_id", "prediction_time", maintain_order=True)

    def coefficients(self) -> pl.DataFrame:
        """``event, feature, coef``: log hazard ratio per train SD (over intervals) of each design column."""
        return _coefficients(self.outcomes, self._hazards, self._spec().columns)
