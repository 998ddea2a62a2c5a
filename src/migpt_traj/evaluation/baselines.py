"""Classical landmark baselines with the :class:`~migpt_traj.TrajectoryModel` prediction contract.

* :class:`NullModel`: Aalen–Johansen cumulative incidence of each outcome among train subjects at risk at each
  landmark; the same risk for everyone at a landmark (the "no information" reference).
* :class:`LandmarkCox`: per landmark, one cause-specific Cox model per outcome (lifelines, small ridge penalty) on
  the as-of features of :class:`FeatureSpec`; cumulative incidence from all cause-specific hazards together.
* :class:`LandmarkRSF`: per landmark, a scikit-survival random survival forest on the same features, primary
  outcome only.

Every model is fitted on the train split only (subjects at risk at the landmark, labels from
:meth:`Cohort.labels <migpt_traj.data.cohort.Cohort.labels>`), and ``predict_risk`` returns the frame of
:meth:`TrajectoryModel.predict_risk <migpt_traj.TrajectoryModel.predict_risk>`: ``subject_id, prediction_time,
landmark_days, event, horizon_days, risk``, risk = cumulative incidence of ``event`` in ``(t, t + h]`` (higher =
worse), for the subjects at risk at each landmark (days after time zero).

**Features as of the landmark** (:func:`raw_features`): only events whose ``available_time`` (else ``time``) is
``<= prediction_time``. The last value (latest ``time``) of every numeric measurement code seen in the train
split, age in years at the prediction time, 0/1 indicators of the train split's static codes and of treatment
codes started by then, and days since the last measurement of any of those codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import polars as pl
from numpy.typing import NDArray

from migpt_traj.data.cohort import Cohort, Split, duration_to_days
from migpt_traj.errors import ConfigError, ModelStateError, OutcomeError
from migpt_traj.evaluation._km import aalen_johansen

__all__ = [
    "DEFAULT_LANDMARKS",
    "FeatureSpec",
    "FeatureVocabulary",
    "LandmarkCox",
    "LandmarkRSF",
    "NullModel",
    "raw_features",
]

#: Landmarks (days after time zero) fitted by default: 1, 3 and 5 years.
DEFAULT_LANDMARKS: tuple[float, ...] = (365.25, 1095.75, 1826.25)
_KEYS = ("subject_id", "prediction_time")
_AGE = "age_years"
_SINCE = "days_since_last_measurement"
_MISSING = "__missing"
_Model = TypeVar("_Model", bound="_Landmarks")


# ---------------------------------------------------------------------------------------------------- features
@dataclass(frozen=True)
class FeatureVocabulary:
    """The codes that become features, by role, read from the train split's events only.

    Attributes:
        numeric: timed measurement codes (with a ``numeric_value``; not notes, images or treatments).
        static: codes of static rows (null ``time``), as 0/1 indicators.
        treatment: treatment codes (``TREATMENT//`` prefix by default), as 0/1 "started by then" indicators.
    """

    numeric: tuple[str, ...]
    static: tuple[str, ...]
    treatment: tuple[str, ...]

    @classmethod
    def from_train(cls, cohort: Cohort) -> FeatureVocabulary:
        """Codes of the train split (outcomes, birth and end of follow-up are never inputs)."""
        conv = cohort.conventions
        excluded = [*cohort.outcomes, conv.birth_code, conv.end_of_followup_code]
        ev = (
            cohort.events.lazy()
            .join(cohort.splits.lazy().filter(pl.col("split") == "train"), on="subject_id", how="semi")
            .filter(~pl.col("code").is_in(excluded))
            .select("code", modality=conv.modality_expr())
            .unique()
            .collect()
        )

        def codes(modality: str) -> tuple[str, ...]:
            return tuple(sorted(ev.filter(pl.col("modality") == modality)["code"].to_list()))

        numeric, treatment = codes("measurement"), codes("treatment")
        static = tuple(c for c in codes("static") if c not in numeric and c not in treatment)
        return cls(numeric=numeric, static=static, treatment=treatment)


def raw_features(cohort: Cohort, samples: pl.DataFrame, vocabulary: FeatureVocabulary) -> pl.DataFrame:
    """As-of features of ``samples`` (rows ``subject_id, prediction_time``), before imputation and scaling.

    Vectorised: one join of the samples with the events of the vocabulary's codes, one group-by. Only events
    available at or before the prediction time (``available_time`` if the column exists and is set, else ``time``)
    enter; static rows always.

    Returns:
        ``subject_id, prediction_time`` in the order of ``samples``, then one Float64 column per numeric code (its
        latest value, null if never measured), ``age_years`` (null without a birth code),
        ``days_since_last_measurement`` (null if none) and a 0/1 column per static and treatment code.
    """
    ev = cohort.events
    avail = pl.coalesce("available_time", "time") if "available_time" in ev.columns else pl.col("time")
    keys = samples.select(*_KEYS).unique()
    code, numeric = pl.col("code"), list(vocabulary.numeric)
    used = ev.lazy().filter(pl.col("time").is_not_null() & code.is_in([*numeric, *vocabulary.treatment]))
    timed = (
        keys.lazy()
        .join(used, on="subject_id", how="inner")
        .filter(avail <= pl.col("prediction_time"))
        .sort("subject_id", "prediction_time", "time", avail, maintain_order=True)
    )
    is_meas = code.is_in(numeric) & pl.col("numeric_value").is_not_null()
    value = pl.col("numeric_value").cast(pl.Float64)
    agg = timed.group_by(*_KEYS).agg(
        *[value.filter(code == c).last().alias(c) for c in vocabulary.numeric],
        pl.col("time").filter(is_meas).max().alias("_last"),
        *[(code == c).any().cast(pl.Float64).alias(c) for c in vocabulary.treatment],
    )
    static = (
        ev.lazy()
        .filter(pl.col("time").is_null())
        .group_by("subject_id")
        .agg(*[(code == c).any().cast(pl.Float64).alias(c) for c in vocabulary.static])
    )
    birth = cohort.subjects.lazy().select("subject_id", "birth_time")
    t = pl.col("prediction_time")
    flags = [*vocabulary.static, *vocabulary.treatment]
    return (
        samples.lazy()
        .select(*_KEYS)
        .join(agg, on=list(_KEYS), how="left", maintain_order="left")
        .join(static, on="subject_id", how="left", maintain_order="left")
        .join(birth, on="subject_id", how="left", maintain_order="left")
        .with_columns(
            duration_to_days(t - pl.col("birth_time")).truediv(365.25).alias(_AGE),
            duration_to_days(t - pl.col("_last")).alias(_SINCE),
            *[pl.col(c).fill_null(0.0) for c in flags],
        )
        .select(*_KEYS, *numeric, _AGE, _SINCE, *flags)
        .collect()
    )


@dataclass(frozen=True)
class FeatureSpec:
    """Train-only statistics that turn :func:`raw_features` into a standardised design matrix (one landmark).

    Continuous columns (numeric codes, age, days since the last measurement) that are strictly positive in train
    with train skewness above a threshold are log-transformed (renamed ``log(<column>)``); a missing value becomes
    the train median (after the log), plus a 0/1 ``<column>__missing`` indicator for columns with missing values in
    train (a column complete in train gets no indicator: held-out gaps are imputed silently). Every column is then
    centred and scaled by its train mean and standard deviation; columns constant in train, and columns equal to
    an earlier one or its complement in train (``SEX//male`` after ``SEX//female``), are dropped.

    Attributes:
        vocabulary: codes by role, from the train split.
        continuous: the raw continuous columns considered.
        log_columns: the ones log-transformed.
        medians: train median of each continuous column (after the log; 0 if never observed).
        missing_indicators: continuous columns that get a missing indicator.
        columns: the design's columns, in order.
        means: train mean of each design column.
        scales: train standard deviation (ddof 0) of each design column.
    """

    vocabulary: FeatureVocabulary
    continuous: tuple[str, ...]
    log_columns: tuple[str, ...]
    medians: tuple[float, ...]
    missing_indicators: tuple[str, ...]
    columns: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]

    @classmethod
    def fit(cls, raw: pl.DataFrame, vocabulary: FeatureVocabulary, *, log_skew_threshold: float = 1.0) -> FeatureSpec:
        """Fit on the raw features of train samples only (the caller's responsibility: see ``_Landmarks.fit``)."""
        continuous = (*vocabulary.numeric, _AGE, _SINCE)
        logs = tuple(c for c in continuous if _positive_and_skewed(raw[c], log_skew_threshold))
        logged = raw.with_columns(pl.col(c).log() for c in logs)
        medians = tuple(_median(logged[c]) for c in continuous)
        indicators = tuple(c for c in continuous if logged[c].null_count())
        full = cls(vocabulary, continuous, logs, medians, indicators, (), (), ())._expand(raw)
        values = full.to_numpy().astype(np.float64).reshape(full.height, full.width)
        mean, std = values.mean(axis=0), values.std(axis=0)
        z = (values - mean) / np.where(std > 1e-12, std, 1.0)
        keep: list[int] = []
        for i in range(full.width):  # a few dozen columns: drop constants and exact (anti-)copies of a kept one
            copy = any(abs(z[:, i] @ z[:, j]) >= (1 - 1e-9) * full.height for j in keep)
            if std[i] > 1e-12 and not copy:
                keep.append(i)
        return cls(
            vocabulary,
            continuous,
            logs,
            medians,
            indicators,
            tuple(full.columns[i] for i in keep),
            tuple(float(mean[i]) for i in keep),
            tuple(float(std[i]) for i in keep),
        )

    def _expand(self, raw: pl.DataFrame) -> pl.DataFrame:
        """Log, impute and add indicators (unscaled), every candidate column."""
        logs = set(self.log_columns)
        named = {c: f"log({c})" if c in logs else c for c in self.continuous}
        flags = [*self.vocabulary.static, *self.vocabulary.treatment]
        return raw.select(
            *[
                (pl.col(c).log() if c in logs else pl.col(c)).fill_null(m).alias(named[c])
                for c, m in zip(self.continuous, self.medians, strict=True)
            ],
            *[pl.col(c).is_null().cast(pl.Float64).alias(f"{named[c]}{_MISSING}") for c in self.missing_indicators],
            *[pl.col(c).cast(pl.Float64) for c in flags],
        )

    def design(self, raw: pl.DataFrame) -> pl.DataFrame:
        """The standardised design (columns :attr:`columns`) of raw features computed with this vocabulary."""
        full = self._expand(raw)
        return full.select(
            ((pl.col(c) - m) / s).alias(c) for c, m, s in zip(self.columns, self.means, self.scales, strict=True)
        )

    def matrix(self, raw: pl.DataFrame) -> NDArray[np.float64]:
        return self.design(raw).to_numpy().astype(np.float64, copy=False).reshape(raw.height, len(self.columns))


def _positive_and_skewed(column: pl.Series, threshold: float) -> bool:
    values = column.drop_nulls().cast(pl.Float64)
    if values.len() < 3 or float(values.min()) <= 0:  # type: ignore[arg-type]
        return False
    skew = values.skew()
    return skew is not None and bool(np.isfinite(skew)) and float(skew) > threshold


def _median(column: pl.Series) -> float:
    value = column.drop_nulls().cast(pl.Float64).median()
    return 0.0 if value is None else float(value)  # type: ignore[arg-type]


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
            n, k, nh = cif.shape
            lab = data.labels
            frames.append(
                pl.DataFrame(
                    {
                        "subject_id": np.repeat(lab["subject_id"].to_numpy(), k * nh),
                        "prediction_time": lab["prediction_time"].gather(np.repeat(np.arange(n), k * nh)),
                        "landmark_days": np.repeat(lab["landmark_days"].to_numpy(), k * nh),
                        "event": np.tile(np.repeat(np.asarray(events, dtype=object), nh), n),
                        "horizon_days": np.tile(h, n * k),
                        "risk": np.clip(cif, 0.0, 1.0).reshape(-1),
                    },
                    schema_overrides={"event": pl.String, "landmark_days": pl.Float64},
                )
            )
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
            frames.append(
                data.labels.select(*_KEYS, "landmark_days")
                .with_columns(time_days=pl.lit(h.tolist()), survival=pl.Series(surv.tolist()))
                .explode("time_days", "survival")
            )
        return pl.concat(frames).sort("subject_id", "prediction_time", maintain_order=True)

    def coefficients(self, landmark: float) -> pl.DataFrame:
        """``event, feature, coef`` at a fitted landmark: log hazard ratio per train SD of each design column."""
        (s,) = self._require([landmark])
        rows = [
            (event, col, float(b))
            for event, hz in zip(self.outcomes, self._fits[s], strict=True)
            if hz is not None
            for col, b in zip(self.specs[s].columns, hz.beta, strict=True)
        ]
        return pl.DataFrame(rows, schema={"event": pl.String, "feature": pl.String, "coef": pl.Float64}, orient="row")


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
