"""``evaluate``: landmark × horizon cohort evaluation of a risk model against baselines (TRIPOD+AI 12e, 20–23).

For each model (the model under study, then each baseline), landmark ``s`` (days after time zero), horizon ``h``
(days after the prediction time) and outcome ``k`` (``cohort.outcomes[k - 1]``; the others compete), on the subjects
of the evaluation split at risk at ``s``:

* discrimination: cumulative/dynamic td-AUC at ``h`` and Uno's C truncated at ``h``, both IPCW with the censoring
  distribution of the *train* split at the same landmark;
* accuracy: IPCW Brier score at ``h`` and the Brier score integrated over the horizons (``ibs``, reported at the
  last horizon);
* calibration: risk groups (mean predicted vs Aalen–Johansen observed risk), calibration-in-the-large, intercept,
  slope and ICI from pseudo-observations (:func:`~migpt_traj.evaluation.metrics.calibration`);
* clinical utility: net benefit over threshold probabilities, with treat-all and treat-none.

Point estimates are direct calls of :mod:`migpt_traj.evaluation.metrics`. Confidence intervals are percentile
intervals over a subject-level bootstrap of the evaluation split (:mod:`migpt_traj.evaluation.bootstrap`): a drawn
subject brings all its landmark rows, and every model is scored on the same replicates, so ``model - baseline``
differences get paired intervals. Cells with fewer than ``min_events`` events of the outcome by the horizon, or a
metric that is not estimable, are reported as NaN with a ``status`` and a ``detail`` saying why; nothing is dropped.
Baselines are fitted inside :func:`evaluate` on the train split only (a cohort holding nothing else).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import polars as pl
from numpy.typing import NDArray

from migpt_traj.data.cohort import SPLITS, Cohort, Split
from migpt_traj.errors import ConfigError, MigptTrajError, OutcomeError, did_you_mean
from migpt_traj.evaluation import bootstrap as bs
from migpt_traj.evaluation._scoring import GridOptions, prepare_landmark, score_grid
from migpt_traj.evaluation._tables import (
    cohort_description,
    flow_table,
    missingness_table,
    subgroup_levels,
)
from migpt_traj.evaluation.leakage import LeakageAudit, audit_leakage
from migpt_traj.evaluation.report import EvaluationReport

__all__ = ["BASELINES", "RiskPredictor", "evaluate", "resolve_baselines"]

#: Baseline names accepted by :func:`evaluate` → class names in :mod:`migpt_traj.evaluation.baselines`.
BASELINES: dict[str, str] = {"null": "NullModel", "cox": "LandmarkCox", "cox_tv": "LandmarkCoxTV", "rsf": "LandmarkRSF"}
F64 = NDArray[np.float64]


class RiskPredictor(Protocol):
    """Anything with the :meth:`TrajectoryModel.predict_risk <migpt_traj.TrajectoryModel.predict_risk>` contract."""

    def predict_risk(
        self, cohort: Cohort, *, horizons: Sequence[float], landmarks: Sequence[float], split: Split | None = None
    ) -> pl.DataFrame: ...


def resolve_baselines(baselines: Sequence[str | Any], *, landmarks: Sequence[float]) -> dict[str, Any]:
    """Baseline names (see :data:`BASELINES`) or unfitted objects with ``fit(cohort)`` → ``{name: object}``.

    Named baselines are built with ``landmarks=landmarks`` from :mod:`migpt_traj.evaluation.baselines`,
    imported on first use.

    Raises:
        ConfigError: an unknown name, a name whose class this version does not provide, or a duplicate name.
    """
    out: dict[str, Any] = {}
    for item in baselines:
        if isinstance(item, str):
            key = item.strip().lower()
            if key not in BASELINES:
                raise ConfigError(
                    f"Unknown baseline {item!r}; valid names are {sorted(BASELINES)}.{did_you_mean(key, BASELINES)}"
                )
            from migpt_traj.evaluation import baselines as module

            cls = getattr(module, BASELINES[key], None)
            if cls is None:
                raise ConfigError(
                    f"Baseline {item!r} needs migpt_traj.evaluation.baselines.{BASELINES[key]}, which this version "
                    f"does not provide; available: {[k for k, v in BASELINES.items() if hasattr(module, v)]}."
                )
            name, obj = key, cls(landmarks=list(landmarks))
        else:
            if not (hasattr(item, "fit") and hasattr(item, "predict_risk")):
                raise ConfigError(f"A baseline must be a name or have fit() and predict_risk(); got {item!r}.")
            name, obj = str(getattr(item, "name", type(item).__name__)), item
        if name in out:
            raise ConfigError(f"Baseline {name!r} is given twice.")
        out[name] = obj
    return out


# ---------------------------------------------------------------------------------------------------- inputs
def _days(values: Sequence[float], name: str) -> list[float]:
    if isinstance(values, str | bytes):
        raise ConfigError(f"'{name}' must be a sequence of days; got the string {values!r}.")
    try:
        arr = np.asarray(list(values), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"'{name}' must be numbers of days; got {values!r}.") from err
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ConfigError(f"'{name}' must be a non-empty list of finite days >= 0; got {list(values)}.")
    return [float(v) for v in np.unique(arr)]


def _thresholds(thresholds: Sequence[float] | None) -> F64:
    if thresholds is None:
        return np.round(np.linspace(0.0, 0.5, 51), 10)
    arr = np.asarray(list(thresholds), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() >= 1:
        raise ConfigError(f"'thresholds' must be probabilities in [0, 1); got {list(thresholds)}.")
    return np.unique(arr)


def _outcomes(cohort: Cohort, model: Any, outcomes: Sequence[str] | None) -> list[str]:
    fitted = tuple(getattr(model, "outcomes", ()) or ())
    if fitted and tuple(fitted) != tuple(cohort.outcomes):
        raise OutcomeError(
            f"The model was fitted for outcomes {list(fitted)} but the cohort has {list(cohort.outcomes)}; build "
            f"the cohort with outcomes={list(fitted)}."
        )
    chosen = list(cohort.outcomes) if outcomes is None else [outcomes] if isinstance(outcomes, str) else list(outcomes)
    for code in chosen:
        if code not in cohort.outcomes:
            raise OutcomeError(
                f"Outcome {code!r} is not one of the cohort's outcomes {list(cohort.outcomes)}."
                f"{did_you_mean(code, cohort.outcomes)}"
            )
    return chosen


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[evaluate] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- evaluate
def evaluate(
    model: RiskPredictor,
    cohort: Cohort,
    *,
    landmarks: Sequence[float],
    horizons: Sequence[float],
    baselines: Sequence[str | Any] = ("null", "cox"),
    split: Split = "held_out",
    outcomes: Sequence[str] | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    subgroups: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
    progress: bool = False,
    age_bands: Sequence[float] = (50.0, 65.0),
    min_events: int = 5,
    calibration_groups: int = 10,
    confidence: float = 0.95,
    leakage: bool = True,
    leakage_subjects: int = 10,
    model_name: str | None = None,
) -> EvaluationReport:
    """Evaluate ``model`` (and baselines fitted here on the train split) on one split, landmark × horizon.

    Args:
        model: A fitted model with ``predict_risk(cohort, *, horizons, landmarks, split)`` (risk = cumulative
            incidence of each outcome in ``(t, t + h]``, higher = worse), e.g. a fitted ``TrajectoryModel``.
        cohort: The cohort; its split defines train (censoring weights, baseline fitting) and evaluation rows.
        landmarks: Days after time zero at which to predict (subjects at risk there).
        horizons: Days after the prediction time.
        baselines: Names (``"null"``, ``"cox"``, ``"cox_tv"``, ``"rsf"``) or unfitted objects with ``fit(cohort)``
            and ``predict_risk``; each is fitted on the train split only.
        split: The evaluation split.
        outcomes: Outcomes to score (default: all of the cohort's; the first is primary, the rest compete).
        n_bootstrap: Subject-level bootstrap replicates for the intervals (0: no intervals).
        seed: Seed of the bootstrap and of the leakage audit's subject sample.
        subgroups: Codes defining subgroups: a static code or a code present at time zero (``"SEX//female"``,
            ``"TREATMENT//placebo"``); members vs the others. Age bands at the landmark are always added.
        thresholds: Threshold probabilities of the decision curves (default 0, 0.01, ..., 0.5).
        progress: Print stages to stderr.
        age_bands: Cut points in years of the age-band subgroups (``[lo, hi)``).
        min_events: Fewest outcome events by the horizon for a cell to be scored.
        calibration_groups: Most risk groups of the grouped calibration table (at least 10 subjects each).
        confidence: Level of the percentile intervals.
        leakage: Run the leakage audit (:func:`~migpt_traj.evaluation.leakage.audit_leakage`).
        leakage_subjects: Evaluation subjects per landmark re-predicted by the future-perturbation check.
        model_name: Name of ``model`` in the tables (default: its class name).

    Returns:
        An :class:`~migpt_traj.evaluation.report.EvaluationReport`.

    Raises:
        ConfigError: bad landmarks, horizons, thresholds, baselines, subgroups or options.
        OutcomeError: outcomes not in the cohort, or a model fitted for other outcomes.
        SplitError: an unknown split.
        ModelStateError: and any other error of ``model.predict_risk`` (e.g. an unfitted model) propagates. A
            baseline that fails to fit or predict does not stop the run: its cells say ``fit_failed`` or
            ``predict_failed`` with the message.

    Example:
        >>> import migpt_traj as mt  # doctest: +SKIP
        >>> cohort = mt.datasets.load_pbc2()  # doctest: +SKIP
        >>> model = mt.TrajectoryModel.from_config("configs/pbc2.yaml").fit(cohort)  # doctest: +SKIP
        >>> report = mt.evaluate(model, cohort, landmarks=[365.25], horizons=[365.25, 1095.75])  # doctest: +SKIP
        >>> report.save("report/")  # doctest: +SKIP
    """
    lms, hs = _days(landmarks, "landmarks"), _days(horizons, "horizons")
    if split not in SPLITS:
        raise ConfigError(
            f"Unknown split {split!r}; valid splits are {list(SPLITS)}.{did_you_mean(str(split), SPLITS)}"
        )
    if split == "train":
        raise ConfigError("Evaluating on the train split is not an evaluation; use split='tuning' or 'held_out'.")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 0:
        raise ConfigError(f"'n_bootstrap' must be an integer >= 0; got {n_bootstrap!r}.")
    if not 0 < confidence < 1 or min_events < 1 or calibration_groups < 1:
        raise ConfigError(
            f"Need 0 < confidence < 1, min_events >= 1 and calibration_groups >= 1; got {confidence}, {min_events}, "
            f"{calibration_groups}."
        )
    chosen = _outcomes(cohort, model, outcomes)
    pts = _thresholds(thresholds)
    name = model_name or str(getattr(model, "name", None) or type(model).__name__)
    fitted_baselines = resolve_baselines(baselines, landmarks=lms)
    if name in fitted_baselines:
        raise ConfigError(f"The model's name {name!r} clashes with a baseline; pass model_name=....")
    levels = subgroup_levels(cohort, subgroups, age_bands=age_bands)  # validates codes before any fitting

    models: dict[str, Any] = {name: model}
    failures: dict[str, str] = {}
    train_only = cohort.subset(split="train")
    for key, obj in fitted_baselines.items():
        _say(progress, f"fitting baseline {key} on {train_only.n_subjects} train subjects")
        try:
            models[key] = obj.fit(train_only)
        except MigptTrajError as err:
            failures[key] = f"fit failed: {err}"
    _say(progress, f"predicting with {name}")
    predictions = {name: model.predict_risk(cohort, horizons=hs, landmarks=lms, split=split)}  # errors propagate
    for key, obj in models.items():
        if key == name:
            continue
        _say(progress, f"predicting with {key}")
        try:
            predictions[key] = obj.predict_risk(cohort, horizons=hs, landmarks=lms, split=split)
        except MigptTrajError as err:  # a failing baseline is reported in its cells, not fatal
            failures[key] = f"prediction failed: {err}"
    for key in fitted_baselines:
        models.setdefault(key, fitted_baselines[key])

    boot = bs.SubjectBootstrap.draw(cohort.subject_ids(split), n_replicates=n_bootstrap, seed=seed)
    prepared = [prepare_landmark(cohort, s, split, boot) for s in lms]
    _say(
        progress, f"scoring {len(models)} models × {len(lms)} landmarks × {len(hs)} horizons ({n_bootstrap} replicates)"
    )
    opts = GridOptions(chosen, tuple(cohort.outcomes), hs, pts, min_events, calibration_groups, confidence)
    tables = score_grid(name, list(models), predictions, failures, prepared, levels, opts)
    _say(progress, "describing the cohort")
    audit = None
    if leakage:
        _say(progress, "running the leakage audit")
        audit = audit_leakage(
            {k: m for k, m in models.items() if k in predictions},
            cohort,
            landmarks=lms,
            horizons=hs,
            split=split,
            n_subjects=leakage_subjects,
            seed=seed,
        )
    return EvaluationReport(
        metrics=tables.metrics,
        comparisons=tables.comparisons,
        calibration=tables.calibration,
        decision_curves=tables.decision_curves,
        subgroups=tables.subgroups,
        description=cohort_description(cohort),
        flow=flow_table(cohort, landmarks=lms, horizons=hs, outcomes=chosen),
        missingness=missingness_table(cohort, landmarks=lms),
        predictions=tables.predictions,
        leakage=audit if audit is not None else LeakageAudit.skipped(),
        settings={
            "model": name,
            "baselines": list(fitted_baselines),
            "landmarks_days": lms,
            "horizons_days": hs,
            "split": split,
            "outcomes": chosen,
            "cohort_outcomes": list(cohort.outcomes),
            "n_bootstrap": n_bootstrap,
            "seed": seed,
            "confidence": confidence,
            "min_events": min_events,
            "thresholds": pts.tolist(),
            "subgroups": list(subgroups or []),
            "age_bands": [float(a) for a in age_bands],
            "dataset": cohort.name,
            "failures": failures,
        },
    )
