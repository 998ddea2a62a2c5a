r"""Treatment suggestions: the risk of an outcome within a horizon under each treatment option started now.

**Estimand.** For a subject event-free at the prediction time ``t`` and each option ``a`` (a treatment code seen
in training, or ``"none"`` = no new treatment): the cumulative incidence of ``event`` in ``(t, t + h]`` had ``a``
started at ``t`` and no other treatment started in ``(t, t + h]`` — the simulator's
:meth:`~migpt_traj.datasets.synthetic.SyntheticTruth.counterfactual_risk`. Treatments started before ``t`` stay in
force; treatment rows timed exactly at ``t`` are the decision being evaluated and are replaced by the option.

**Method: g-computation with an outcome model adjusted for the whole as-of history.** The fitted model is a
hazard model conditional on everything available at ``t`` — labs, images, notes and the treatments started so far
(a seen-flag per treatment code in the wide path, the token with its time in the transformer). Under sequential
ignorability given that history (what drives a start is recorded before it), positivity, and a correct outcome
model, the risk under "start ``a`` at ``t``" is the model's prediction for the history with a
``TREATMENT//a`` row added at ``t``: the history *is* the set of confounders, so time-dependent confounding (sicker
patients treated more) is adjusted by conditioning, not by weighting. Two refinements:

* *No further starts.* A model fitted on observed follow-up predicts the usual course after ``t``, in which an
  untreated patient may still be started later (on the simulator ~0.02-0.03 of 5-year risk for "none"). The
  linear stage of the model (wide weights and baselines; the transformer's contribution held fixed as an offset)
  is therefore refitted on train queries whose follow-up is cut at the next treatment start after the query
  (artificial censoring). The cut depends on the history at the query, which the model conditions on; the part of
  it driven by what happens after ``t`` is *not* reweighted (no inverse-probability-of-censoring weights), a bias
  toward healthier remaining patients that is small when treatment follows the recorded state.
* *Support.* A ridge multinomial logistic propensity model (:mod:`._treatment_propensity`) of which option starts
  at a decision point given the as-of features, fitted on train subjects only. An option is ``supported=False``
  where its propensity is below ``min_propensity`` or where it never started at a train decision point: there the
  outcome model extrapolates beyond the data and the estimate cannot be checked. Only supported options are
  ranked (1 = lowest risk).

Why not inverse-probability weighting: IPW needs the propensity of the whole future treatment path and has high
variance where support is thin, exactly where the answer is reported as unsupported anyway; the model's outcome
head already conditions on the history. Why not a balanced representation (CRN, Causal Transformer): it changes
training of the shared model (another engineer's code) for a gain shown mostly on large simulated cohorts.

**Intervals** (``risk_lower``/``risk_upper``, ``difference_*``): percentile intervals over subject-level bootstrap
refits of the linear stage (all queries of a train subject move together). They capture the sampling variability
of the treatment-effect-carrying linear stage; the transformer is held fixed, so they are narrower than a full
refit ensemble would give. Cost per call: one tensorization of the train split (twice: outcome and decision
features, plus the tuning split's decision points), one forward pass of the model over them, and
``1 + n_bootstrap`` L-BFGS fits of a ``(queries x features)`` linear model (~1-3 s each for 10^4 queries on a CPU
core), against a full fit of minutes.

Every number is a **model-based estimate** (the ``basis`` column), never a measured effect of a treatment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from migpt_traj.data.cohort import Cohort, Split
from migpt_traj.data.tensorize import training_queries
from migpt_traj.errors import ConfigError, OutcomeError, did_you_mean
from migpt_traj.outputs._treatment_histories import (
    NO_NEW_TREATMENT,
    censor_at_next_start,
    decision_cohort,
    intervened_cohort,
    resolve_options,
    treatment_starts,
)
from migpt_traj.outputs._treatment_outcome import (
    LinearStage,
    QueryFeatures,
    bootstrap_stages,
    fit_linear_stage,
    query_features,
    risks,
)
from migpt_traj.outputs._treatment_propensity import PropensityModel, decision_labels, fit_propensity

if TYPE_CHECKING:
    from migpt_traj.api import TrajectoryModel

__all__ = ["BASIS", "NO_NEW_TREATMENT", "TreatmentEstimates", "estimate_treatments", "suggest_treatments"]

#: The ``basis`` of every suggestion.
BASIS = "model-based estimate"
_DEFAULT_PENALTY = 1e-2


@dataclass(frozen=True)
class TreatmentEstimates:
    """Counterfactual risks of ``R`` prediction rows under ``O`` options, with bootstrap replicates.

    Attributes:
        rows: ``subject_id, prediction_time, landmark_days`` (R rows).
        options: option names, ``"none"`` first; ``codes`` their treatment codes (None for none).
        event: the outcome; ``horizon_days`` the horizon.
        risk: ``(R, O)`` point estimates (full-data refit); ``replicates`` ``(R, O, M)`` bootstrap refits.
        propensity: ``(R, O)`` probability that the option starts at this decision (``"none"``: no start).
        train_starts: ``(O,)`` train decision points at which each option started.
        supported: ``(R, O)``; ``min_propensity`` the threshold used.
    """

    rows: pl.DataFrame
    options: tuple[str, ...]
    codes: tuple[str | None, ...]
    event: str
    horizon_days: float
    risk: np.ndarray
    replicates: np.ndarray
    propensity: np.ndarray
    train_starts: np.ndarray
    supported: np.ndarray
    min_propensity: float

    def difference(self, option: str, reference: str = NO_NEW_TREATMENT) -> tuple[np.ndarray, np.ndarray]:
        """``(R,)`` risk of ``option`` minus risk of ``reference`` and its ``(R, M)`` replicates."""
        i, j = self._index(option), self._index(reference)
        return self.risk[:, i] - self.risk[:, j], self.replicates[:, i] - self.replicates[:, j]

    def _index(self, option: str) -> int:
        if option not in self.options:
            raise ConfigError(
                f"Unknown option {option!r}; these estimates hold {list(self.options)}."
                f"{did_you_mean(option, self.options)}"
            )
        return self.options.index(option)

    def frame(self, *, interval: float = 0.95, reference: str = NO_NEW_TREATMENT) -> pl.DataFrame:
        """One row per prediction row and option (see :func:`suggest_treatments` for the columns)."""
        n_rows, n_opt = self.risk.shape
        alpha = (1.0 - interval) / 2.0
        ref = self._index(reference)
        diff = self.risk - self.risk[:, ref : ref + 1]
        diff_rep = self.replicates - self.replicates[:, ref : ref + 1]
        has_rep = self.replicates.shape[-1] > 0

        def band(values: np.ndarray, q: float) -> np.ndarray:
            return np.quantile(values, q, axis=-1).reshape(-1) if has_rep else np.full(n_rows * n_opt, np.nan)

        ranked = np.where(self.supported, self.risk, np.inf)
        order = np.argsort(ranked, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(1, n_opt + 1)[None, :].repeat(n_rows, 0), axis=1)
        rank_col = pl.Series("rank", np.where(self.supported, rank, 0).reshape(-1), dtype=pl.Int32)
        note = np.where(
            self.train_starts[None, :] == 0,
            "never started at a train decision point",
            np.where(self.supported, "", "propensity below min_propensity"),
        )
        gather = np.repeat(np.arange(n_rows), n_opt)
        frame = pl.DataFrame(
            {
                "subject_id": self.rows["subject_id"].gather(gather),
                "prediction_time": self.rows["prediction_time"].gather(gather),
                "landmark_days": self.rows["landmark_days"].gather(gather),
                "option": pl.Series(list(self.options) * n_rows, dtype=pl.String),
                "code": pl.Series(list(self.codes) * n_rows, dtype=pl.String),
                "event": pl.Series([self.event] * (n_rows * n_opt), dtype=pl.String),
                "horizon_days": np.full(n_rows * n_opt, self.horizon_days),
                "risk": self.risk.reshape(-1),
                "risk_lower": band(self.replicates, alpha),
                "risk_upper": band(self.replicates, 1.0 - alpha),
                "reference": pl.Series([self.options[ref]] * (n_rows * n_opt), dtype=pl.String),
                "difference": diff.reshape(-1),
                "difference_lower": band(diff_rep, alpha),
                "difference_upper": band(diff_rep, 1.0 - alpha),
                "propensity": self.propensity.reshape(-1),
                "supported": self.supported.reshape(-1),
                "rank": rank_col,
                "support_note": pl.Series(note.reshape(-1), dtype=pl.String),
                "basis": pl.Series([BASIS] * (n_rows * n_opt), dtype=pl.String),
            }
        )
        return frame.with_columns(
            pl.when(pl.col("supported")).then(pl.col("rank")).otherwise(None).alias("rank"),
            pl.when(pl.col("support_note") == "").then(None).otherwise(pl.col("support_note")).alias("support_note"),
            pl.col("risk_lower", "risk_upper", "difference_lower", "difference_upper").fill_nan(None),
        )


def _checked(
    horizon: float, min_propensity: float, decision_window_days: float, n_bootstrap: int, interval: float
) -> None:
    checks = [
        ("horizon", isinstance(horizon, int | float) and math.isfinite(horizon) and horizon > 0, "finite days > 0"),
        ("min_propensity", 0.0 <= min_propensity < 1.0, "in [0, 1)"),
        ("decision_window_days", math.isfinite(decision_window_days) and decision_window_days > 0, "finite days > 0"),
        ("n_bootstrap", isinstance(n_bootstrap, int) and n_bootstrap >= 0, "an integer >= 0"),
        ("interval", 0.0 < interval < 1.0, "in (0, 1)"),
    ]
    for name, ok, valid in checks:
        if not ok:
            value = {"horizon": horizon, "min_propensity": min_propensity, "n_bootstrap": n_bootstrap}.get(
                name, decision_window_days if name == "decision_window_days" else interval
            )
            raise ConfigError(f"'{name}' must be {valid}; got {value!r}.")


def _query_frame(table_samples: pl.DataFrame, q_sample: np.ndarray, q_time: pl.Series) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "subject_id": table_samples["subject_id"].to_numpy()[q_sample],
            "prediction_time": q_time.cast(pl.Datetime("us")),
        }
    )


def _outcome_stages(
    model: TrajectoryModel, cohort: Cohort, *, n_bootstrap: int, seed: int
) -> tuple[LinearStage, list[LinearStage]]:
    """The linear stage refitted on train follow-up cut at the next treatment start, and its bootstrap refits."""
    module = model._require_fit()
    cfg = model.config
    samples, queries = training_queries(
        cohort, split="train", extra_per_subject=cfg.extra_queries_per_subject, seed=cfg.seed
    )
    table = model._tensorize(cohort, samples, queries=queries)
    q = _query_frame(table.samples, table.q_sample, table.q_prediction_time)
    duration, cause = censor_at_next_start(cohort, q, duration=table.q_duration, cause=table.q_cause)
    keep = (cause >= 0) & (duration > 0)
    feats = query_features(module, table)
    rows = torch.from_numpy(np.flatnonzero(keep))
    feats = QueryFeatures(x=feats.x[rows], offset=feats.offset[rows])
    d, c = torch.from_numpy(duration[keep]), torch.from_numpy(cause[keep])
    penalty = model.history.get("wide_penalty")
    penalty = float(penalty) if isinstance(penalty, int | float) and math.isfinite(penalty) else _DEFAULT_PENALTY
    start = LinearStage(weight=module.wide.weight.detach().T.clone(), bias=module.head.bias.detach().clone())
    full = fit_linear_stage(feats, d, c, edges=module.edges, start=start, penalty=penalty)
    reps = bootstrap_stages(
        feats,
        d,
        c,
        q["subject_id"].to_numpy()[keep],
        edges=module.edges,
        full=full,
        penalty=penalty,
        n_replicates=n_bootstrap,
        seed=seed,
    )
    return full, reps


def _decision_points(
    model: TrajectoryModel, dcohort: Cohort, split: Split, codes: list[str | None], window: float
) -> tuple[torch.Tensor, np.ndarray]:
    cfg = model.config
    samples, queries = training_queries(
        dcohort, split=split, extra_per_subject=cfg.extra_queries_per_subject, seed=cfg.seed
    )
    if samples.height == 0:
        return torch.zeros(0, model._require_fit().wide.in_features), np.zeros(0, dtype=np.int64)
    table = model._tensorize(dcohort, samples, queries=queries)
    q = _query_frame(table.samples, table.q_sample, table.q_prediction_time)
    y = decision_labels(q, treatment_starts(dcohort), codes, window_days=window)
    return query_features(model._require_fit(), table, deep=False).x, y


def _propensity(
    model: TrajectoryModel, cohort: Cohort, dcohort: Cohort, codes: list[str | None], window: float
) -> PropensityModel:
    x, y = _decision_points(model, dcohort, "train", codes, window)
    has_tuning = bool(cohort.subjects.filter(pl.col("split") == "tuning").height)
    tuning = _decision_points(model, dcohort, "tuning", codes, window) if has_tuning else None
    return fit_propensity(x, y, len(codes), tuning=tuning)


def estimate_treatments(
    model: TrajectoryModel,
    cohort: Cohort,
    *,
    horizon: float,
    landmarks: Sequence[float] | None = None,
    prediction_times: pl.DataFrame | None = None,
    options: Sequence[str] | None = None,
    split: Split | None = None,
    event: str | None = None,
    min_propensity: float = 0.05,
    decision_window_days: float = 365.25,
    n_bootstrap: int = 20,
    reference: str = NO_NEW_TREATMENT,
    seed: int = 0,
) -> TreatmentEstimates:
    """The arrays behind :func:`suggest_treatments` (same arguments), for effects averaged over rows."""
    module = model._require_fit()
    assert model.preprocessor is not None
    _checked(horizon, min_propensity, decision_window_days, n_bootstrap, 0.95)
    event = event if event is not None else model.outcomes[0]
    if event not in model.outcomes:
        raise OutcomeError(
            f"Unknown event {event!r}; the model predicts {list(model.outcomes)}.{did_you_mean(event, model.outcomes)}"
        )
    prefix = cohort.conventions.treatment_prefix
    names, codes = resolve_options(model.preprocessor.codes, prefix, options)
    if reference not in names:
        raise ConfigError(f"Unknown reference option {reference!r}; valid options are {list(names)}.")
    all_names, all_codes = resolve_options(model.preprocessor.codes, prefix, None)
    rows = model._prediction_samples(cohort, landmarks, prediction_times, split)

    full, reps = _outcome_stages(model, cohort, n_bootstrap=n_bootstrap, seed=seed)
    icohort, isamples = intervened_cohort(cohort, rows, codes)
    feats = query_features(module, model._tensorize(icohort, isamples.select("subject_id", "cutoff_time")))
    k = model.outcomes.index(event)
    cif = risks(feats, [full, *reps], edges=module.edges, horizon=float(horizon), cause=k)
    cif = cif.reshape(rows.height, len(codes), 1 + len(reps))

    dcohort = decision_cohort(cohort)
    prop_model = _propensity(model, cohort, dcohort, list(all_codes), decision_window_days)
    x = query_features(
        module,
        model._tensorize(dcohort, rows.select("subject_id", pl.col("prediction_time").alias("cutoff_time"))),
        deep=False,
    ).x
    cols = [all_names.index(n) for n in names]
    propensity = prop_model.predict(x)[:, cols] if rows.height else np.zeros((0, len(cols)))
    starts = prop_model.starts[cols]
    supported = (propensity >= min_propensity) & (starts[None, :] > 0)
    return TreatmentEstimates(
        rows=rows.select("subject_id", "prediction_time", "landmark_days"),
        options=names,
        codes=codes,
        event=event,
        horizon_days=float(horizon),
        risk=cif[:, :, 0],
        replicates=cif[:, :, 1:],
        propensity=propensity,
        train_starts=starts,
        supported=supported,
        min_propensity=float(min_propensity),
    )


def suggest_treatments(
    model: TrajectoryModel,
    cohort: Cohort,
    *,
    horizon: float,
    landmarks: Sequence[float] | None = None,
    prediction_times: pl.DataFrame | None = None,
    options: Sequence[str] | None = None,
    split: Split | None = None,
    event: str | None = None,
    min_propensity: float = 0.05,
    decision_window_days: float = 365.25,
    n_bootstrap: int = 20,
    interval: float = 0.95,
    reference: str = NO_NEW_TREATMENT,
    seed: int = 0,
) -> pl.DataFrame:
    """Risk of ``event`` within ``horizon`` days if each option started at the prediction time (see module doc).

    Args:
        model: a fitted :class:`~migpt_traj.api.TrajectoryModel`.
        cohort: the cohort (its train split fits the refit and the propensity model; tuning picks the
            propensity penalty; the prediction rows may come from any split).
        horizon: days after the prediction time (risk in ``(t, t + horizon]``).
        landmarks, prediction_times, split: the prediction rows, as in :meth:`TrajectoryModel.predict_risk`.
        options: option names or codes (default: every treatment code of the train vocabulary); ``"none"`` (no
            new treatment) is always included.
        event: the outcome (default: the primary one).
        min_propensity: below this propensity an option is ``supported=False``.
        decision_window_days: a start within this many days after a decision point counts as decided there.
        n_bootstrap: subject-bootstrap refits for the intervals (0: no intervals).
        interval: coverage of the intervals.
        reference: the option the ``difference`` columns subtract.
        seed: seed of the bootstrap.

    Returns:
        polars frame, one row per prediction row and option: ``subject_id, prediction_time, landmark_days,
        option`` (``"none"`` or a treatment name), ``code``, ``event``, ``horizon_days``, ``risk`` in [0, 1]
        (higher = worse), ``risk_lower, risk_upper``, ``reference``, ``difference`` (risk minus the reference
        option's risk; negative = the option lowers the risk) with ``difference_lower, difference_upper``,
        ``propensity``, ``supported``, ``rank`` (1 = lowest risk among supported options; null when
        unsupported), ``support_note`` (why unsupported) and ``basis`` = ``"model-based estimate"``.

    Raises:
        ConfigError: an unknown option (the message lists the valid ones) or an out-of-range argument.
        OutcomeError: an unknown event.
        ModelStateError: the model is not fitted.

    Example:
        >>> import migpt_traj as mt  # doctest: +SKIP
        >>> syn = mt.datasets.make_synthetic(600, seed=0, confounding=1.0)  # doctest: +SKIP
        >>> model = mt.TrajectoryModel(d_model=16, n_layers=1, max_epochs=1, use_notes=False).fit(syn)  # doctest: +SKIP
        >>> model.suggest_treatments(syn, landmarks=[365.25], horizon=1826.25, split="held_out")  # doctest: +SKIP
    """
    _checked(horizon, min_propensity, decision_window_days, n_bootstrap, interval)
    est = estimate_treatments(
        model,
        cohort,
        horizon=horizon,
        landmarks=landmarks,
        prediction_times=prediction_times,
        options=options,
        split=split,
        event=event,
        min_propensity=min_propensity,
        decision_window_days=decision_window_days,
        n_bootstrap=n_bootstrap,
        reference=reference,
        seed=seed,
    )
    return est.frame(interval=interval, reference=reference)
