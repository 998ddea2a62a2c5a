"""``SyntheticTruth``: exact ground truth of a synthetic cohort, from the simulator parameters and latent table.

Every answer is a pure function of :class:`~migpt_traj.datasets._sim_params.SimulatorParams`, the
``confounding`` strength and each subject's row of the latent table; nothing is estimated from the events.
Prediction times are datetimes (as in :meth:`migpt_traj.Cohort.labels`) or numbers = days after the subject's
time zero (entry). Risks are conditional on the subject being event-free at the prediction time, whatever
happened in the simulated data, and ignore censoring (the estimand every survival method targets).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migpt_traj.datasets._sim_model import LATENT_COLUMNS, realized_z1, start_prob, z_image, z_symptom
from migpt_traj.datasets._sim_params import CAUSES, DAYS_PER_YEAR, SimulatorParams
from migpt_traj.datasets._sim_paths import (
    Paths,
    current_line,
    mixture_grid,
    mixture_point,
    natural_paths,
    option_paths,
)
from migpt_traj.errors import ConfigError, DataReadError, OutcomeError, SplitError, ValueRangeError, did_you_mean

__all__ = ["LATENT_FILE", "SyntheticTruth"]

LATENT_FILE = "metadata/synthetic_latent.parquet"
DAY_US = 86_400_000_000

IdsLike = int | Sequence[int] | np.ndarray | pl.Series
TimesLike = dt.datetime | float | Sequence[dt.datetime] | Sequence[float] | np.ndarray | pl.Series
DaysLike = float | Sequence[float] | np.ndarray


def _series(values: Any, name: str) -> pl.Series:
    if isinstance(values, pl.Series):
        return values.alias(name)
    if isinstance(values, str | bytes | dt.date | int | float | np.generic):
        return pl.Series(name, [values])
    return pl.Series(name, values if isinstance(values, np.ndarray) else list(values))


def _days(values: DaysLike, name: str) -> np.ndarray:
    days = np.atleast_1d(np.asarray(values, dtype=np.float64))
    bad = days[~np.isfinite(days) | (days < 0)]
    if days.ndim != 1 or days.size == 0:
        raise ConfigError(f"'{name}' must be one or more days >= 0; got {values!r}.")
    if bad.size:
        raise ValueRangeError(f"'{name}' must be finite days >= 0; got {bad[0]}.")
    return days


class SyntheticTruth:
    """Ground truth of a cohort made by :func:`~migpt_traj.datasets.synthetic.make_synthetic`.

    Args:
        latent: the per-subject latent table (:data:`~migpt_traj.datasets._sim_model.LATENT_COLUMNS`).
        params: the simulator parameters the cohort was made with.
        confounding: the confounding strength the cohort was made with (it sets the natural-course policy).
        grid_days: step (days) of the grid that splits the exact event probability between the competing
            causes; error O(step^2), below 1e-5 at the default.

    Example:
        >>> from migpt_traj.datasets.synthetic import make_synthetic
        >>> syn = make_synthetic(200, seed=1)
        >>> r = syn.truth.risk([1, 2], [365.0, 365.0], [365.0, 1826.0])
        >>> r.columns
        ['subject_id', 'prediction_time', 'horizon_days', 'event', 'risk']
    """

    def __init__(
        self, latent: pl.DataFrame, *, params: SimulatorParams, confounding: float, grid_days: float = 14.0
    ) -> None:
        latent = latent.sort("subject_id")
        self.params = params
        self.confounding = float(confounding)
        self.grid_days = float(grid_days)
        self._latent = latent
        self._lat = {c: latent[c].to_numpy() for c in LATENT_COLUMNS}
        self._ids = self._lat["subject_id"]

    @classmethod
    def from_meds(cls, root: str | Path, *, grid_days: float = 14.0) -> SyntheticTruth:
        """The truth of a root written by :func:`~migpt_traj.datasets.synthetic.stream_synthetic`.

        Raises:
            DataReadError: the root has no latent table or no simulator record in ``metadata/dataset.json``.
        """
        root = Path(root)
        meta_path = root / "metadata" / "dataset.json"
        if not (root / LATENT_FILE).is_file() or not meta_path.is_file():
            raise DataReadError(
                f"{str(root)!r} is not a synthetic MEDS root: it needs {LATENT_FILE!r} and 'metadata/dataset.json'."
            )
        sim = json.loads(meta_path.read_text()).get("simulator")
        if not isinstance(sim, dict):
            raise DataReadError(f"'metadata/dataset.json' of {str(root)!r} has no 'simulator' record.")
        return cls(
            pl.read_parquet(root / LATENT_FILE),
            params=SimulatorParams.from_dict(sim["params"]),
            confounding=sim["confounding"],
            grid_days=grid_days,
        )

    @property
    def subjects(self) -> pl.DataFrame:
        """The latent table, one row per subject (times in years since entry)."""
        return self._latent

    # ------------------------------------------------------------------ inputs
    def _queries(self, subject_ids: IdsLike, times: TimesLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(position in the latent table, years since entry, prediction time in µs) of each query."""
        try:
            ids = _series(subject_ids, "subject_id").cast(pl.Int64)
        except Exception as err:
            raise ConfigError(f"'subject_ids' must be integers; got {subject_ids!r}.") from err
        ts = _series(times, "prediction_time")
        if ids.len() != ts.len():
            if ids.len() == 1:
                ids = ids.extend_constant(ids[0], ts.len() - 1)
            elif ts.len() == 1:
                ts = ts.extend_constant(ts[0], ids.len() - 1)
            else:
                raise ConfigError(
                    f"Dimension mismatch: 'subject_ids' has {ids.len()} values but the times have {ts.len()}; "
                    f"give equal lengths (paired) or one of them as a single value."
                )
        sid = ids.to_numpy()
        pos = np.clip(np.searchsorted(self._ids, sid), 0, self._ids.size - 1)
        unknown = sid[self._ids[pos] != sid]
        if unknown.size:
            raise SplitError(f"Subject {unknown[0]} is not in the synthetic cohort ({unknown.size} unknown in all).")
        entry = self._lat["entry_us"][pos]
        if ts.dtype.is_temporal():
            if ts.null_count():
                raise ConfigError("The prediction times hold a null; give a datetime for every query.")
            us = ts.cast(pl.Datetime("us")).to_physical().to_numpy().astype(np.int64)
            days = (us - entry) / DAY_US
        elif ts.dtype.is_numeric():
            days = ts.cast(pl.Float64).to_numpy()
            us = entry + np.round(np.nan_to_num(days) * DAY_US).astype(np.int64)
        else:
            raise ConfigError(
                f"Prediction times must be datetimes or days after time zero (numbers); got dtype {ts.dtype}."
            )
        bad = np.flatnonzero(~np.isfinite(days) | (days < 0))
        if bad.size:
            raise ValueRangeError(
                f"Prediction time {days[bad[0]]} days after time zero for subject {sid[bad[0]]} is before entry "
                f"or not finite; the latent state is defined from time zero (entry) on."
            )
        return pos, days / DAYS_PER_YEAR, us

    def _option(self, option: str) -> int:
        names = ("none", *self.params.options)
        if option not in names:
            raise ConfigError(
                f"Unknown option {option!r}; valid options are {list(names)}.{did_you_mean(option, names)}"
            )
        return names.index(option)

    @staticmethod
    def _cause(event: str) -> int:
        if event not in CAUSES:
            raise OutcomeError(
                f"Unknown event {event!r}; the simulator's events are {list(CAUSES)}.{did_you_mean(event, CAUSES)}"
            )
        return CAUSES.index(event)

    # ------------------------------------------------------------------ core
    def _grid(
        self, subject_ids: IdsLike, times: TimesLike, horizons_days: DaysLike, option: str | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        pos, t, us = self._queries(subject_ids, times)
        horizons = _days(horizons_days, "horizons_days")
        years = horizons / DAYS_PER_YEAR
        paths = self._paths(pos, t, option, float(years.max()))
        grid = self.grid_days / DAYS_PER_YEAR
        surv, cif = mixture_grid(self._lat, self.params, pos, t, paths, years, grid_years=grid)
        return pos, us, horizons, surv, cif

    def _paths(self, pos: np.ndarray, t: np.ndarray, option: str | None, window: float) -> Paths:
        if option is None:
            return natural_paths(self._lat, self.params, self.confounding, pos, t, window)
        return option_paths(self._lat, self.params, pos, t, self._option(option))

    def _frame(self, pos: np.ndarray, us: np.ndarray, extra: dict[str, Any], n_rep: int) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "subject_id": np.repeat(self._ids[pos], n_rep),
                "prediction_time": pl.Series(np.repeat(us, n_rep), dtype=pl.Int64).cast(pl.Datetime("us")),
                **extra,
            }
        )

    # ------------------------------------------------------------------ public answers
    def risk(
        self,
        subject_ids: IdsLike,
        prediction_times: TimesLike,
        horizons_days: DaysLike,
        *,
        event: str = "MEDS_DEATH",
    ) -> pl.DataFrame:
        """True cumulative incidence of ``event`` in (t, t + h] given the latent state at t and event-free at t,
        under the natural course (the simulator's own treatment policy going forward, averaged exactly over its
        future decisions). Risk up = worse; ``risk`` is in [0, 1] and non-decreasing in ``horizon_days``.

        The latent state at t is the subject's latent parameters plus the treatment in force at t: the subject's
        own simulated start if it is at or before t (as-of is ``<=``, so a start at exactly t counts), else
        none; future starts follow the policy (decisions at the reviews after t), whatever the simulated data
        did after t. Exact up to the O(step^2) cause split (see the module docstring of ``synthetic``).

        Args:
            subject_ids: subject ids, paired with ``prediction_times`` (either may be a single value).
            prediction_times: datetimes, or days after each subject's time zero.
            horizons_days: one or more horizons h (days >= 0); every query gets every horizon.
            event: ``"MEDS_DEATH"`` (primary) or ``"TRANSPLANT"`` (competing).

        Returns:
            polars frame ``subject_id, prediction_time, horizon_days, event, risk``, queries in input order,
            horizons within each query in input order.
        """
        k = self._cause(event)
        pos, us, horizons, _, cif = self._grid(subject_ids, prediction_times, horizons_days, None)
        return self._frame(pos, us, self._risk_cols(horizons, event, cif[:, :, k]), horizons.size)

    def counterfactual_risk(
        self,
        subject_ids: IdsLike,
        prediction_times: TimesLike,
        horizon_days: DaysLike,
        *,
        option: str,
        event: str = "MEDS_DEATH",
    ) -> pl.DataFrame:
        """True risk if ``option`` starts at the prediction time and no treatment changes after.

        ``option="none"``: no new treatment (a treatment already in force continues). A treatment name: it
        starts at t; for a subject already on another treatment it replaces that one from t (a switch the
        simulated data never contain). Columns as :meth:`risk` plus ``option``.
        """
        k = self._cause(event)
        self._option(option)
        pos, us, horizons, _, cif = self._grid(subject_ids, prediction_times, horizon_days, option)
        cols = self._risk_cols(horizons, event, cif[:, :, k])
        return self._frame(pos, us, {**cols, "option": [option] * (pos.size * horizons.size)}, horizons.size)

    def survival(
        self,
        subject_ids: IdsLike,
        prediction_times: TimesLike,
        horizons_days: DaysLike,
        *,
        option: str | None = None,
    ) -> pl.DataFrame:
        """True P(no event of any cause in (t, t + h] | event-free at t) under the natural course (or under
        ``option`` as in :meth:`counterfactual_risk`): ``1 - risk(death) - risk(transplant)``.
        Columns ``subject_id, prediction_time, horizon_days, survival``."""
        if option is not None:
            self._option(option)
        pos, us, horizons, surv, _ = self._grid(subject_ids, prediction_times, horizons_days, option)
        cols = {"horizon_days": np.tile(horizons, pos.size), "survival": surv.reshape(-1)}
        return self._frame(pos, us, cols, horizons.size)

    @staticmethod
    def _risk_cols(horizons: np.ndarray, event: str, risk: np.ndarray) -> dict[str, Any]:
        return {
            "horizon_days": np.tile(horizons, risk.shape[0]),
            "event": [event] * risk.size,
            "risk": np.clip(risk.reshape(-1), 0.0, 1.0),
        }

    def future_values(
        self,
        subject_ids: IdsLike,
        prediction_times: TimesLike,
        days_ahead: DaysLike,
        *,
        code: str,
        option: str | None = None,
    ) -> pl.DataFrame:
        """Noise-free expected value of lab ``code`` at t + d (the mean of a measurement taken then).

        Under the natural course the future treatment path is random: the value is averaged over the paths,
        weighted by their probability times the probability of being event-free at t + d (a measurement can
        only be taken from a subject still in follow-up). With ``option``, one deterministic path.

        Returns:
            polars frame ``subject_id, prediction_time, code, target_days, value`` (``target_days`` = d, named as
            in a model's forecast frame for joining).
        """
        specs = {lab.code: lab for lab in self.params.labs}
        if code not in specs:
            raise ConfigError(
                f"Unknown lab code {code!r}; the simulator's labs are {list(specs)}.{did_you_mean(code, specs)}"
            )
        pos, t, us = self._queries(subject_ids, prediction_times)
        ahead = _days(days_ahead, "days_ahead")
        values = np.empty((pos.size, ahead.size))
        for j, d in enumerate(ahead / DAYS_PER_YEAR):
            paths = self._paths(pos, t, option, float(d))
            surv, z1 = mixture_point(self._lat, self.params, pos, t, paths, np.full(pos.size, d))
            weight = paths.w * surv
            weight = np.where(weight.sum(axis=1, keepdims=True) > 0, weight, paths.w)
            values[:, j] = (weight * specs[code].expected(z1)).sum(axis=1) / weight.sum(axis=1)
        cols = {"code": [code] * values.size, "target_days": np.tile(ahead, pos.size), "value": values.reshape(-1)}
        return self._frame(pos, us, cols, ahead.size)

    def latent(self, subject_ids: IdsLike, times: TimesLike) -> pl.DataFrame:
        """Latent state at each (subject, time) on the subject's own simulated treatment path.

        Returns:
            polars frame ``subject_id, time, days_since_entry, subtype, treatment`` (in force at ``time``,
            ``"none"`` or an option) and ``z_severity`` (z1, seen by labs, imaging and policy), ``z_image`` (z2,
            imaging only), ``z_symptom`` (z3, notes only).
        """
        pos, t, us = self._queries(subject_ids, times)
        _, _, option = current_line(self._lat, self.params, pos, t)
        names = ("none", *self.params.options)
        return pl.DataFrame(
            {
                "subject_id": self._ids[pos],
                "time": pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us")),
                "days_since_entry": t * DAYS_PER_YEAR,
                "subtype": [self.params.subtypes[g] for g in self._lat["subtype"][pos]],
                "treatment": [names[o] for o in option],
                "z_severity": realized_z1(self._lat, self.params, pos, t),
                "z_image": z_image(self._lat, pos, t),
                "z_symptom": z_symptom(self._lat, pos, t),
            }
        )

    def start_probability(self, subject_ids: IdsLike, prediction_times: TimesLike) -> pl.DataFrame:
        """P(the observational policy starts each option at the first review after t | untreated and event-free).

        Zero for a subject already treated at t, for an option whose ``params.option_probs`` is 0 in the
        subject's subtype (by default ``drug_b`` in subtype ``a``: a protocol exclusion) and, when
        ``confounding > 0``, while the severity at the review is below ``params.start_gate``: the regions where
        the simulated data can never support a comparison.

        Returns:
            polars frame ``subject_id, prediction_time, option, review_days`` (days after time zero) and
            ``probability``; one row per query and option.
        """
        pos, t, us = self._queries(subject_ids, prediction_times)
        i_cur, s_cur, o_cur = current_line(self._lat, self.params, pos, t)
        interval = self.params.review_interval_years
        tau = (np.floor(t / interval) + 1) * interval
        p_any = np.where(o_cur == 0, start_prob(self.params, self.confounding, i_cur + s_cur * tau), 0.0)
        q = np.asarray(self.params.option_probs, dtype=float)
        prob = p_any[:, None] * (q / q.sum(axis=1, keepdims=True))[self._lat["subtype"][pos]]
        n_opt = len(self.params.options)
        cols = {
            "option": list(self.params.options) * pos.size,
            "review_days": np.repeat(tau * DAYS_PER_YEAR, n_opt),
            "probability": prob.reshape(-1),
        }
        return self._frame(pos, us, cols, n_opt)

    def __repr__(self) -> str:
        return f"SyntheticTruth({self._ids.size} subjects, confounding={self.confounding})"
