"""Scoring of the landmark × horizon grid: point estimates, bootstrap replicates, status of every cell, and the rows
of the report's tables. Used by :func:`migpt_traj.evaluation.harness.evaluate`.

Point estimates of the main table are direct calls of :mod:`migpt_traj.evaluation.metrics`; replicates come from the
vectorised kernels of :mod:`migpt_traj.evaluation.bootstrap` (equal to those functions on the resampled rows).
Subgroup cells use the kernels for the point estimate too (a row of ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from migpt_traj.data.cohort import Cohort, Split
from migpt_traj.errors import ConfigError, MigptTrajError
from migpt_traj.evaluation import bootstrap as bs
from migpt_traj.evaluation.metrics import (
    brier_score,
    calibration,
    concordance_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
    net_benefit,
)

__all__ = [
    "COMPARED",
    "METRICS",
    "SUBGROUP_METRICS",
    "GridOptions",
    "Landmark",
    "ScoredTables",
    "prepare_landmark",
    "score_grid",
]

METRICS = ("auc", "c_index", "brier", *bs.CALIBRATION_METRICS)
COMPARED = ("auc", "c_index", "brier", "ibs", "ici")
LOWER_IS_BETTER = frozenset({"brier", "ibs", "ici"})
SUBGROUP_METRICS = ("auc", "c_index", "brier", "calibration_in_the_large", "observed_risk", "mean_risk")
_UNSTABLE = 100.0  # |calibration intercept or slope| beyond this: the quasi-likelihood has no finite maximiser
F64 = NDArray[np.float64]
Masks = dict[tuple[str, str], NDArray[np.bool_]]


@dataclass(frozen=True)
class Landmark:
    """The evaluation rows at one landmark, with train-split censoring and bootstrap weights."""

    landmark: float
    labels: pl.DataFrame  # subject_id, prediction_time, event, duration_days (sorted)
    sample: bs.EvalSample
    train_time: F64
    train_event: NDArray[np.int64]
    weights: F64  # (B, n) replicate multiplicities of each row


@dataclass(frozen=True)
class _Score:
    value: float
    replicates: F64
    status: str
    detail: str


def _event_codes(events: pl.Series, outcomes: Sequence[str]) -> NDArray[np.int64]:
    mapping = {o: i + 1 for i, o in enumerate(outcomes)}
    return events.replace_strict(mapping, default=0, return_dtype=pl.Int64).to_numpy()


def _risk_array(pred: pl.DataFrame, labels: pl.DataFrame, outcomes: Sequence[str], horizons: Sequence[float]) -> F64:
    """Predictions aligned with the label rows: (n, K, H), NaN where the model gave none."""
    n, hs = labels.height, np.asarray(horizons)
    out = np.full((n, len(outcomes), hs.size), np.nan)
    keyed = labels.select("subject_id", "prediction_time").with_row_index("_row")
    p = pred.join(keyed, on=["subject_id", "prediction_time"], how="inner").filter(pl.col("event").is_in(outcomes))
    if p.height == 0:
        return out
    hd = p["horizon_days"].to_numpy().astype(np.float64)
    j = np.abs(hd[:, None] - hs[None, :]).argmin(axis=1)
    close = np.abs(hd - hs[j]) <= 1e-3
    k = _event_codes(p["event"], outcomes) - 1
    rows = p["_row"].to_numpy().astype(np.int64)
    out[rows[close], k[close], j[close]] = p["risk"].to_numpy().astype(np.float64)[close]
    return out


def _direct(fn: Callable[[], float]) -> tuple[float, str | None]:
    try:
        return float(fn()), None
    except MigptTrajError as err:
        return float("nan"), str(err)


def _score(value: float, reason: str | None, replicates: F64, status: str = "ok") -> _Score:
    if status != "ok":
        return _Score(float("nan"), np.full(replicates.size, np.nan), status, reason or "")
    if reason is not None or not np.isfinite(value):
        return _Score(float("nan"), np.full(replicates.size, np.nan), "not_estimable", reason or "undefined")
    return _Score(value, replicates, "ok", "")


def _main_scores(
    lm: Landmark, r: F64, h: float, cause: int, n_groups: int, constant: bool
) -> tuple[dict[str, _Score], Any]:
    """Every metric of one cell: direct point estimates, kernel replicates; also the CalibrationResult."""
    s, w, tt, te = lm.sample, lm.weights, lm.train_time, lm.train_event
    t, e = s.time, s.event
    auc = _direct(lambda: cumulative_dynamic_auc(t, e, r, h, cause=cause, train_time=tt, train_event=te))
    c_index = _direct(lambda: concordance_ipcw(t, e, r, tau=h, cause=cause, train_time=tt, train_event=te))
    brier = _direct(lambda: brier_score(t, e, r, h, cause=cause, train_time=tt, train_event=te))
    scores = {
        "auc": _score(*auc, bs.weighted_auc(s, r, h, cause, w).values),
        "c_index": _score(*c_index, bs.weighted_concordance(s, r, h, cause, w).values),
        "brier": _score(*brier, bs.weighted_brier(s, r, h, cause, w).values),
    }
    reps = bs.weighted_calibration(s, r, h, cause, w)
    wild = (np.abs(reps["calibration_intercept"].values) > _UNSTABLE) | (
        np.abs(reps["calibration_slope"].values) > _UNSTABLE
    )
    for name in ("calibration_intercept", "calibration_slope"):  # replicates without a stable maximiser
        reps[name] = bs.Estimate(np.where(wild, np.nan, reps[name].values), reps[name].reason)
    try:
        cal = calibration(t, e, r, h, cause=cause, n_groups=n_groups)
    except MigptTrajError as err:
        for name in bs.CALIBRATION_METRICS:
            scores[name] = _score(float("nan"), str(err), reps[name].values)
        return scores, None
    values = {
        "calibration_in_the_large": cal.calibration_in_the_large,
        "calibration_intercept": cal.intercept,
        "calibration_slope": cal.slope,
        "ici": cal.ici,
        "observed_risk": cal.observed,
        "mean_risk": cal.expected,
    }
    unstable = max(abs(cal.intercept), abs(cal.slope)) > _UNSTABLE
    for name, value in values.items():
        reason = None
        if name in ("calibration_intercept", "calibration_slope") and constant:
            reason = "predictions are constant (no slope or intercept to estimate)"
        elif name in ("calibration_intercept", "calibration_slope") and unstable:
            reason = (
                f"calibration regression has no stable maximiser (intercept {cal.intercept:.3g}, slope "
                f"{cal.slope:.3g}): pseudo-observations outside [0, 1] with few events"
            )
        scores[name] = _score(value, reason, reps[name].values)
    return scores, cal


def _kernel_scores(lm: Landmark, mask: NDArray[np.bool_], r: F64, h: float, cause: int) -> dict[str, _Score]:
    """Subgroup metrics from the vectorised kernels (point = a row of ones; equal to the direct metrics)."""
    s = lm.sample.subset(mask)
    w = np.vstack([np.ones((1, int(mask.sum()))), lm.weights[:, mask]])
    rm = r[mask]
    ests = {
        "auc": bs.weighted_auc(s, rm, h, cause, w),
        "c_index": bs.weighted_concordance(s, rm, h, cause, w),
        "brier": bs.weighted_brier(s, rm, h, cause, w),
        **bs.weighted_calibration(s, rm, h, cause, w, full=False),
    }
    return {m: _score(float(ests[m].values[0]), ests[m].reason, ests[m].values[1:]) for m in SUBGROUP_METRICS}


def _interval(score: _Score, level: float) -> tuple[float, float, str]:
    if score.status != "ok":
        return float("nan"), float("nan"), score.detail
    if score.replicates.size == 0:
        return float("nan"), float("nan"), "no bootstrap"
    lo, hi, n_ok = bs.percentile_interval(score.replicates, level=level)
    b = score.replicates.size
    if not np.isfinite(lo):
        return lo, hi, f"CI undefined: the metric is estimable in only {n_ok} of {b} bootstrap replicates"
    return lo, hi, "" if n_ok == b else f"CI from the {n_ok} of {b} bootstrap replicates where it is estimable"


@dataclass(frozen=True)
class GridOptions:
    """What to score: outcomes (codes), horizons (days), decision thresholds and the cell rules."""

    outcomes: list[str]
    cohort_outcomes: tuple[str, ...]
    horizons: list[float]
    thresholds: F64
    min_events: int
    calibration_groups: int
    confidence: float


@dataclass(frozen=True)
class ScoredTables:
    metrics: pl.DataFrame
    comparisons: pl.DataFrame
    calibration: pl.DataFrame
    decision_curves: pl.DataFrame
    subgroups: pl.DataFrame
    predictions: pl.DataFrame


def prepare_landmark(cohort: Cohort, landmark: float, split: Split, boot: bs.SubjectBootstrap) -> Landmark:
    """Evaluation rows at ``landmark`` (days), the train split's censoring there, and the replicate weights.

    Raises:
        ConfigError: evaluation subjects are at risk at the landmark but no train subject is (no IPCW weights).
    """
    lab = cohort.labels(landmarks=[landmark], split=split)
    train = cohort.labels(landmarks=[landmark], split="train")
    tt = train["duration_days"].to_numpy()
    te = _event_codes(train["event"], cohort.outcomes)
    if lab.height and not tt.size:
        raise ConfigError(f"No train subject is at risk at landmark {landmark:g} days: no censoring weights there.")
    sample = bs.EvalSample.build(
        lab["duration_days"].to_numpy(),
        _event_codes(lab["event"], cohort.outcomes),
        lab["subject_id"].to_numpy(),
        train_time=tt if tt.size else np.ones(1),
        train_event=te if tt.size else np.zeros(1, dtype=np.int64),
    )
    return Landmark(landmark, lab, sample, tt, te, boot.weights(sample.subject_id, with_point=False))


def score_grid(
    name: str,
    models: Sequence[str],
    predictions: Mapping[str, pl.DataFrame],
    failures: Mapping[str, str],
    landmarks: Sequence[Landmark],
    levels: Callable[[pl.DataFrame], Masks],
    opts: GridOptions,
) -> ScoredTables:
    """Score every (model, landmark, horizon, outcome) cell, its subgroups, and ``name`` − each other model."""
    chosen, hs, min_events, confidence = opts.outcomes, opts.horizons, opts.min_events, opts.confidence
    rows: list[dict[str, Any]] = []
    cal_rows: list[dict[str, Any]] = []
    dca_rows: list[dict[str, Any]] = []
    sub_rows: list[dict[str, Any]] = []
    pred_rows: list[pl.DataFrame] = []
    replicates: dict[tuple[str, float, float, str, str], _Score] = {}
    for lm in landmarks:
        n = lm.labels.height
        member_masks = levels(lm.labels)
        for key in models:
            risk = _risk_array(predictions[key], lm.labels, chosen, hs) if key in predictions else None
            if risk is not None:
                pred_rows.append(_prediction_frame(key, lm, risk, chosen, hs))
            for ki, outcome in enumerate(chosen):
                cause = opts.cohort_outcomes.index(outcome) + 1
                for hi, h in enumerate(hs):
                    n_events = int(((lm.sample.time <= h) & (lm.sample.event == cause)).sum())
                    status, detail = _cell_status(key, failures, risk, ki, hi, n, n_events, min_events, outcome, h)
                    base = {"model": key, "landmark_days": lm.landmark, "horizon_days": h, "event": outcome}
                    if status != "ok":
                        scores = {m: _Score(float("nan"), np.zeros(0), status, detail) for m in METRICS}
                    else:
                        assert risk is not None
                        r = risk[:, ki, hi]
                        groups = max(1, min(opts.calibration_groups, n // 10))
                        scores, cal = _main_scores(lm, r, h, cause, groups, bool(np.ptp(r) <= 1e-12))
                        cal_rows.extend(_calibration_rows(base, cal))
                        dca_rows.extend(_decision_rows(base, lm, r, h, cause, opts.thresholds))
                        for (sub, level), mask in member_masks.items():
                            sub_rows.extend(
                                _subgroup_rows(sub, level, base, lm, mask, r, h, cause, min_events, confidence)
                            )
                    counts = {"n_at_risk": n, "n_events": n_events}
                    for metric, score in scores.items():
                        replicates[(key, lm.landmark, h, outcome, metric)] = score
                        rows.append(_metric_row(base, metric, score, counts, confidence))
                ibs = _ibs_score(key, lm, risk, ki, hs, cause, failures, min_events, outcome)
                replicates[(key, lm.landmark, hs[-1], outcome, "ibs")] = ibs
                n_last = int(((lm.sample.time <= hs[-1]) & (lm.sample.event == cause)).sum())
                base = {"model": key, "landmark_days": lm.landmark, "horizon_days": hs[-1], "event": outcome}
                rows.append(_metric_row(base, "ibs", ibs, {"n_at_risk": n, "n_events": n_last}, confidence))
    return ScoredTables(
        metrics=_frame(rows, METRIC_SCHEMA),
        comparisons=_comparisons(name, [k for k in models if k != name], replicates, confidence),
        calibration=_frame(cal_rows, _CAL_SCHEMA),
        decision_curves=_frame(dca_rows, _DCA_SCHEMA),
        subgroups=_frame(sub_rows, _SUB_SCHEMA),
        predictions=pl.concat(pred_rows) if pred_rows else _frame([], _PRED_SCHEMA),
    )


def _cell_status(
    key: str,
    failures: Mapping[str, str],
    risk: F64 | None,
    ki: int,
    hi: int,
    n: int,
    n_events: int,
    min_events: int,
    outcome: str,
    h: float,
) -> tuple[str, str]:
    if key in failures:
        return ("fit_failed" if failures[key].startswith("fit") else "predict_failed"), failures[key]
    if n == 0:
        return "no_subjects", "no subject of the evaluation split is at risk at this landmark"
    assert risk is not None
    missing = int(np.isnan(risk[:, ki, hi]).sum())
    if missing == n:
        return "no_predictions", f"the model gives no risk of {outcome} at {h:g} days"
    if missing:
        return "missing_predictions", f"the model gives no risk for {missing} of the {n} subjects at risk"
    if n_events < min_events:
        return "few_events", f"{n_events} {outcome} event(s) by {h:g} days (< {min_events})"
    return "ok", ""


def _ibs_score(
    key: str,
    lm: Landmark,
    risk: F64 | None,
    ki: int,
    hs: list[float],
    cause: int,
    failures: Mapping[str, str],
    min_events: int,
    outcome: str,
) -> _Score:
    n = lm.labels.height
    n_events = int(((lm.sample.time <= hs[-1]) & (lm.sample.event == cause)).sum())
    status, detail = _cell_status(key, failures, risk, ki, len(hs) - 1, n, n_events, min_events, outcome, hs[-1])
    if status == "ok" and risk is not None and np.isnan(risk[:, ki, :]).any():
        status, detail = "missing_predictions", "the model lacks a risk at some horizon"
    if status == "ok" and len(hs) < 2:
        status, detail = "not_estimable", "the integrated Brier score needs at least two horizons"
    if status != "ok":
        return _Score(float("nan"), np.zeros(0), status, detail)
    assert risk is not None
    rm, ha = risk[:, ki, :], np.asarray(hs)
    s = lm.sample
    value, reason = _direct(
        lambda: integrated_brier_score(
            s.time, s.event, rm, ha, cause=cause, train_time=lm.train_time, train_event=lm.train_event
        )
    )
    out = _score(value, reason, bs.weighted_integrated_brier(s, rm, ha, cause, lm.weights).values)
    if out.status == "ok":
        return _Score(out.value, out.replicates, "ok", f"integrated over [{hs[0]:g}, {hs[-1]:g}] days")
    return out


# ---------------------------------------------------------------------------------------------------- rows
METRIC_SCHEMA = {
    "model": pl.String,
    "landmark_days": pl.Float64,
    "horizon_days": pl.Float64,
    "event": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
    "n_at_risk": pl.Int64,
    "n_events": pl.Int64,
    "status": pl.String,
    "detail": pl.String,
}
_KEY_SCHEMA = {k: METRIC_SCHEMA[k] for k in ("model", "landmark_days", "horizon_days", "event")}
_SUB_SCHEMA = {"subgroup": pl.String, "level": pl.String, **METRIC_SCHEMA}
_CAL_SCHEMA = {**_KEY_SCHEMA, "kind": pl.String, "predicted": pl.Float64, "observed": pl.Float64, "n": pl.Int64}
_DCA_SCHEMA = {
    **_KEY_SCHEMA,
    "threshold": pl.Float64,
    "net_benefit": pl.Float64,
    "treat_all": pl.Float64,
    "treat_none": pl.Float64,
    "treated": pl.Float64,
}
_CMP_SCHEMA = {
    "model": pl.String,
    "baseline": pl.String,
    "landmark_days": pl.Float64,
    "horizon_days": pl.Float64,
    "event": pl.String,
    "metric": pl.String,
    "difference": pl.Float64,
    "lower": pl.Float64,
    "upper": pl.Float64,
    "favours": pl.String,
    "status": pl.String,
    "detail": pl.String,
}
_PRED_SCHEMA = {
    "model": pl.String,
    "subject_id": pl.Int64,
    "prediction_time": pl.Datetime("us"),
    "landmark_days": pl.Float64,
    "horizon_days": pl.Float64,
    "event": pl.String,
    "risk": pl.Float64,
    "duration_days": pl.Float64,
    "observed": pl.String,
}


def _frame(rows: list[dict[str, Any]], schema: Mapping[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=dict(schema), orient="row") if rows else pl.DataFrame(schema=dict(schema))


def _metric_row(
    base: Mapping[str, Any], metric: str, score: _Score, counts: Mapping[str, int], level: float
) -> dict[str, Any]:
    lo, hi, ci_note = _interval(score, level)
    detail = "; ".join(x for x in (score.detail, ci_note) if x) if score.status == "ok" else score.detail
    return {**base, "metric": metric, "value": score.value, "lower": lo, "upper": hi, **counts} | {
        "status": score.status,
        "detail": detail,
    }


def _subgroup_rows(
    sub: str,
    level: str,
    base: Mapping[str, Any],
    lm: Landmark,
    mask: NDArray[np.bool_],
    r: F64,
    h: float,
    cause: int,
    min_events: int,
    confidence: float,
) -> list[dict[str, Any]]:
    n = int(mask.sum())
    n_events = int(((lm.sample.time[mask] <= h) & (lm.sample.event[mask] == cause)).sum())
    if n_events < min_events:
        detail = f"{n_events} {base['event']} event(s) by {h:g} days in this subgroup (< {min_events})"
        scores = {m: _Score(float("nan"), np.zeros(0), "few_events", detail) for m in SUBGROUP_METRICS}
    else:
        scores = _kernel_scores(lm, mask, r, h, cause)
    counts = {"n_at_risk": n, "n_events": n_events}
    return [{"subgroup": sub, "level": level, **_metric_row(base, m, s, counts, confidence)} for m, s in scores.items()]


def _calibration_rows(base: Mapping[str, Any], cal: Any) -> list[dict[str, Any]]:
    if cal is None:
        return []
    groups = [
        {**base, "kind": "group", "predicted": float(p), "observed": float(o), "n": int(k)}
        for p, o, k in zip(cal.group_predicted, cal.group_observed, cal.group_size, strict=True)
    ]
    curve = [
        {**base, "kind": "curve", "predicted": float(p), "observed": float(o), "n": None}
        for p, o in zip(cal.curve_predicted, cal.curve_observed, strict=True)
    ]
    return groups + curve


def _decision_rows(
    base: Mapping[str, Any], lm: Landmark, r: F64, h: float, cause: int, pts: F64
) -> list[dict[str, Any]]:
    try:
        nb = net_benefit(lm.sample.time, lm.sample.event, r, h, pts, cause=cause)
    except MigptTrajError:
        return []
    return [
        {
            **base,
            "threshold": float(p),
            "net_benefit": float(m),
            "treat_all": float(a),
            "treat_none": 0.0,
            "treated": float(t),
        }
        for p, m, a, t in zip(nb.thresholds, nb.model, nb.treat_all, nb.treated, strict=True)
    ]


def _prediction_frame(key: str, lm: Landmark, risk: F64, outcomes: Sequence[str], hs: Sequence[float]) -> pl.DataFrame:
    n, k, h = risk.shape
    lab = lm.labels
    idx = np.repeat(np.arange(n), k * h)
    return pl.DataFrame(
        {
            "model": [key] * (n * k * h),
            "subject_id": lab["subject_id"].gather(idx),
            "prediction_time": lab["prediction_time"].gather(idx),
            "landmark_days": np.full(n * k * h, lm.landmark),
            "horizon_days": np.tile(np.asarray(hs, dtype=np.float64), n * k),
            "event": np.tile(np.repeat(np.asarray(outcomes, dtype=object), h), n),
            "risk": risk.reshape(-1),
            "duration_days": lab["duration_days"].gather(idx),
            "observed": lab["event"].gather(idx),
        },
        schema=_PRED_SCHEMA,  # type: ignore[arg-type]
    )


def _comparisons(
    name: str, others: Sequence[str], replicates: Mapping[tuple[str, float, float, str, str], _Score], level: float
) -> pl.DataFrame:
    rows = []
    for (key, s, h, outcome, metric), mine in replicates.items():
        if key != name or metric not in COMPARED:
            continue
        for other in others:
            theirs = replicates.get((other, s, h, outcome, metric))
            if theirs is None:
                continue
            base = {"model": name, "baseline": other, "landmark_days": s, "horizon_days": h, "event": outcome}
            if mine.status != "ok" or theirs.status != "ok":
                bad = mine if mine.status != "ok" else theirs
                who = name if bad is mine else other
                rows.append(
                    {**base, "metric": metric, "difference": float("nan"), "lower": float("nan")}
                    | {
                        "upper": float("nan"),
                        "favours": "unknown",
                        "status": bad.status,
                        "detail": f"{who}: {bad.detail}",
                    }
                )
                continue
            diff = _Score(mine.value - theirs.value, mine.replicates - theirs.replicates, "ok", "")
            lo, hi, note = _interval(diff, level)
            sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
            favours = "neither"
            if np.isfinite(lo) and sign * lo > 0 and sign * hi > 0:
                favours = "model"
            elif np.isfinite(lo) and sign * lo < 0 and sign * hi < 0:
                favours = "baseline"
            rows.append(
                {**base, "metric": metric, "difference": diff.value, "lower": lo, "upper": hi}
                | {"favours": favours if np.isfinite(lo) else "unknown", "status": "ok", "detail": note}
            )
    return _frame(rows, _CMP_SCHEMA)
