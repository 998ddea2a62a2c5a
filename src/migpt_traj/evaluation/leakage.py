"""Leakage audit of an evaluation: three checks, each a clear pass/fail with the numbers behind it.

(a) **Future perturbation** (:func:`check_future_perturbation`): for a sample of evaluation subjects at each
    landmark, every event after the prediction time (and every fact not yet *available* at it) is removed, or changed
    (values altered, times shifted, the outcome flipped), and the model re-predicts. Predictions must not move:
    passed when the largest absolute difference is below ``tol`` (1e-6).
(b) **Outcome-derived features** (:func:`scan_outcome_derived_codes`): per input code, whether its timing is anchored
    to the outcome (its last occurrence the same number of days before the outcome in most subjects who had one) or
    its value is a function of the time to the outcome or to the end of follow-up (``|Spearman| > 0.9``) — the
    "time index counted back from the end of follow-up" mistake. A model fails when one of its input codes is
    flagged.
(c) **Split overlap** (:func:`check_split_overlap`): no subject in two splits, and the model's fitted vocabulary and
    value normalisers hold nothing that only tuning or held-out subjects could have given: no code present only in
    non-train subjects, and each normaliser's value range within the train values of its code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from migpt_traj.data.cohort import Cohort, Split, days_to_duration, duration_to_days
from migpt_traj.errors import MigptTrajError

__all__ = [
    "LeakageAudit",
    "audit_leakage",
    "check_future_perturbation",
    "check_outcome_derived",
    "check_split_overlap",
    "model_input_codes",
    "scan_outcome_derived_codes",
]

_CHECK_SCHEMA = {
    "check": pl.String,
    "model": pl.String,
    "passed": pl.Boolean,
    "statistic": pl.Float64,
    "threshold": pl.Float64,
    "detail": pl.String,
}
_SHIFT_DAYS = 97.0  # how far the "change" perturbation moves future events


@dataclass(frozen=True, eq=False)
class LeakageAudit:
    """Results of the leakage audit.

    Attributes:
        checks: One row per (check, model): ``check`` (``future_perturbation``, ``outcome_derived_features``,
            ``split_overlap``), ``model``, ``passed``, ``statistic`` (max |Δrisk|, flagged input codes, leaking
            vocabulary entries), ``threshold`` and ``detail``.
        codes: Per-code statistics of the outcome-derived scan (see :func:`scan_outcome_derived_codes`).
    """

    checks: pl.DataFrame
    codes: pl.DataFrame

    @property
    def passed(self) -> bool:
        """True when every check ran and passed."""
        return bool(self.checks.height) and bool(self.checks["passed"].all())

    @classmethod
    def skipped(cls) -> LeakageAudit:
        return cls(pl.DataFrame(schema=_CHECK_SCHEMA), scan_outcome_derived_codes(None))


def _row(check: str, model: str, passed: bool, statistic: float, threshold: float, detail: str) -> dict[str, Any]:
    return {"check": check, "model": model, "passed": passed, "statistic": statistic, "threshold": threshold} | {
        "detail": detail
    }


# ---------------------------------------------------------------------------------------------------- (a)
def _perturb(cohort: Cohort, cut: pl.DataFrame, how: Literal["remove", "change"]) -> pl.DataFrame:
    """Events of the subjects in ``cut`` (``subject_id, prediction_time``) with everything not known at the
    prediction time removed or changed; the subject stays at risk there."""
    ev = cohort.events.join(cut, on="subject_id", how="inner")
    t = pl.col("prediction_time")
    avail = pl.coalesce("available_time", "time") if "available_time" in ev.columns else pl.col("time")
    future = pl.col("time").is_not_null() & (pl.col("time") > t)
    hidden = pl.col("time").is_not_null() & (pl.col("time") <= t) & (avail > t)
    conv = cohort.conventions
    ending = pl.col("code").is_in([*cohort.outcomes, conv.end_of_followup_code])
    changed_value = pl.col("numeric_value") * -2.5 + 11.0
    changed_text = pl.lit("perturbed: ") + pl.col("text_value")
    shift = days_to_duration(pl.lit(_SHIFT_DAYS))
    keep = ev.filter(~future & ~hidden)
    late = ev.filter(hidden).with_columns(
        numeric_value=changed_value.cast(pl.Float32),
        text_value=changed_text,
        **({"available_time": pl.col("available_time") + shift} if "available_time" in ev.columns else {}),
    )
    if how == "remove":
        extra = cut.with_columns(time=t + days_to_duration(pl.lit(1.0)), code=pl.lit(conv.end_of_followup_code))
        parts = [keep, late]
    else:
        moved = ev.filter(future & ~ending).with_columns(
            time=pl.col("time") + shift,
            numeric_value=changed_value.cast(pl.Float32),
            text_value=changed_text,
            **({"available_time": pl.col("available_time") + shift} if "available_time" in ev.columns else {}),
        )
        had_outcome = cohort.subjects.select("subject_id", had=pl.col("outcome").is_not_null())
        last = (
            pl.concat([keep, late, moved], how="vertical_relaxed")
            .group_by("subject_id")
            .agg(_end=pl.max_horizontal(pl.col("time").max(), avail.max()))
        )
        extra = (
            cut.join(last, on="subject_id", how="left")
            .join(had_outcome, on="subject_id", how="left")
            .with_columns(time=pl.max_horizontal("_end", t) + days_to_duration(pl.lit(30.0)))
            .with_columns(
                code=pl.when("had").then(pl.lit(conv.end_of_followup_code)).otherwise(pl.lit(cohort.outcomes[0]))
            )
            .select("subject_id", "prediction_time", "time", "code")
        )
        parts = [keep, late, moved]
    columns = cohort.events.columns
    rows = pl.concat([p.select(columns) for p in parts], how="vertical_relaxed")
    extra_rows = extra.select(
        [pl.col(c) if c in ("subject_id", "time", "code") else pl.lit(None).alias(c) for c in columns]
    )
    out = pl.concat([rows, extra_rows.cast(rows.schema)], how="vertical")
    return out.sort("subject_id", "time", nulls_last=False, maintain_order=True)


def check_future_perturbation(
    model: Any,
    cohort: Cohort,
    *,
    landmarks: Sequence[float],
    horizons: Sequence[float],
    split: Split,
    n_subjects: int = 10,
    seed: int = 0,
    tol: float = 1e-6,
    name: str = "model",
) -> dict[str, Any]:
    """Check (a): predictions at the landmarks do not change when the future is removed or changed.

    Returns:
        A row ``check, model, passed, statistic`` (max |Δrisk| over every sampled subject, landmark, outcome and
        horizon, both perturbations), ``threshold`` (``tol``), ``detail``.
    """
    rng = np.random.default_rng(seed)
    worst, compared, problems = 0.0, 0, []
    keys = ["subject_id", "prediction_time", "event", "horizon_days"]
    for s in landmarks:
        lab = cohort.labels(landmarks=[s], split=split)
        if lab.height == 0:
            continue
        pick = np.sort(rng.choice(lab["subject_id"].to_numpy(), size=min(n_subjects, lab.height), replace=False))
        cut = lab.filter(pl.col("subject_id").is_in(pick.tolist())).select("subject_id", "prediction_time")
        # one unperturbed subject per outcome keeps every outcome present, so the small cohort validates
        carriers = (
            cohort.subjects.filter(pl.col("outcome").is_not_null() & ~pl.col("subject_id").is_in(pick.tolist()))
            .group_by("outcome")
            .agg(pl.col("subject_id").min())["subject_id"]
            .to_list()
        )
        base = cohort.subset([*pick.tolist(), *carriers])
        picked = pl.col("subject_id").is_in(pick.tolist())
        try:
            reference = model.predict_risk(
                base.with_events(base.events), horizons=horizons, landmarks=[s], split=split
            ).filter(picked)
            for how in ("remove", "change"):
                events = pl.concat(
                    [_perturb(base, cut, how), base.events.filter(~picked)],
                    how="vertical_relaxed",
                ).sort("subject_id", "time", nulls_last=False, maintain_order=True)
                again = model.predict_risk(
                    base.with_events(events), horizons=horizons, landmarks=[s], split=split
                ).filter(picked)
                both = reference.join(again, on=keys, how="full", suffix="_perturbed")
                unmatched = both.filter(pl.col("risk").is_null() | pl.col("risk_perturbed").is_null()).height
                if unmatched:
                    problems.append(f"{unmatched} prediction(s) appear in only one run at landmark {s:g} ({how})")
                diff = (both["risk"] - both["risk_perturbed"]).abs().max()
                worst = max(worst, float(diff) if isinstance(diff, int | float) else 0.0)
                compared += reference.height
        except MigptTrajError as err:
            problems.append(f"re-prediction failed at landmark {s:g}: {err}")
    passed = not problems and worst < tol and compared > 0
    detail = (
        f"{compared} predictions re-made after removing and after changing every event later than the prediction "
        f"time (and facts not yet available): max |Δrisk| = {worst:.3g}"
    )
    if compared == 0 and not problems:
        detail = "no evaluation subject at risk at any landmark: nothing to re-predict"
    return _row("future_perturbation", name, passed, worst, tol, "; ".join([detail, *problems]))


# ---------------------------------------------------------------------------------------------------- (b)
_SCAN_SCHEMA = {
    "code": pl.String,
    "n_subjects": pl.Int64,
    "n_outcome_subjects": pl.Int64,
    "anchor_gap_days": pl.Float64,
    "anchor_share": pl.Float64,
    "rho_value_time_to_outcome": pl.Float64,
    "rho_value_time_to_end": pl.Float64,
    "flagged": pl.Boolean,
    "reason": pl.String,
}


def scan_outcome_derived_codes(
    cohort: Cohort | None,
    *,
    rho_threshold: float = 0.9,
    anchor_threshold: float = 0.9,
    min_subjects: int = 5,
) -> pl.DataFrame:
    """Per input code: is its timing or value derived from the outcome or the end of follow-up?

    Statistics per code (outcome, birth and end-of-follow-up codes are not inputs and are skipped):

    * ``anchor_gap_days`` / ``anchor_share``: among subjects with an outcome and the code before it, the most
      common gap (days, to 0.01) from the code's last occurrence to the outcome, and the share of them with that gap.
      Flagged when ``anchor_share >= anchor_threshold`` over at least ``min_subjects`` subjects (a code recorded
      exactly k days before every outcome).
    * ``rho_value_time_to_outcome``: Spearman correlation, over occurrences before the outcome in subjects with one,
      between the numeric value and the days from the occurrence (time zero for a static row) to the outcome.
    * ``rho_value_time_to_end``: the same over every subject, to the end of follow-up (a time index counted back
      from the end of follow-up). Either flagged when ``|rho| > rho_threshold`` over at least ``min_subjects``
      subjects.

    Returns:
        ``code, n_subjects, n_outcome_subjects, anchor_gap_days, anchor_share, rho_value_time_to_outcome,
        rho_value_time_to_end, flagged, reason``, sorted by code.
    """
    if cohort is None:
        return pl.DataFrame(schema=_SCAN_SCHEMA)
    conv = cohort.conventions
    excluded = [*cohort.outcomes, conv.birth_code, conv.end_of_followup_code]
    subj = cohort.subjects.select("subject_id", "outcome_time", "end_of_followup", "time_zero")
    ev = (
        cohort.events.lazy()
        .filter(~pl.col("code").is_in(excluded))
        .select("subject_id", "time", "code", "numeric_value")
        .join(subj.lazy(), on="subject_id", how="inner")
        .with_columns(_ref=pl.coalesce("time", "time_zero"))
    )
    before = pl.col("outcome_time").is_not_null() & (pl.col("_ref") <= pl.col("outcome_time"))
    gaps = (
        ev.filter(before & pl.col("time").is_not_null())
        .group_by("code", "subject_id")
        .agg(gap=duration_to_days(pl.col("outcome_time").first() - pl.col("time").max()).round(2))
    )
    mode = pl.col("gap").mode().min()
    anchor = gaps.group_by("code").agg(
        n_outcome_subjects=pl.len().cast(pl.Int64), anchor_gap_days=mode, anchor_share=(pl.col("gap") == mode).mean()
    )
    valued = ev.filter(pl.col("numeric_value").is_not_null()).with_columns(
        _to_outcome=duration_to_days(pl.col("outcome_time") - pl.col("_ref")),
        _to_end=duration_to_days(pl.col("end_of_followup") - pl.col("_ref")),
        _v=pl.col("numeric_value").cast(pl.Float64),
    )
    rho_outcome = (
        valued.filter(before)
        .group_by("code")
        .agg(_n1=pl.col("subject_id").n_unique(), _r1=pl.corr("_v", "_to_outcome", method="spearman"))
    )
    rho_end = valued.group_by("code").agg(
        _n2=pl.col("subject_id").n_unique(), _r2=pl.corr("_v", "_to_end", method="spearman")
    )
    counts = ev.group_by("code").agg(n_subjects=pl.col("subject_id").n_unique().cast(pl.Int64))
    table = (
        counts.join(anchor, on="code", how="left")
        .join(rho_outcome, on="code", how="left")
        .join(rho_end, on="code", how="left")
        .collect()
        .with_columns(
            pl.col("n_outcome_subjects").fill_null(0),
            rho_value_time_to_outcome=pl.when(pl.col("_n1") >= min_subjects).then(pl.col("_r1").fill_nan(None)),
            rho_value_time_to_end=pl.when(pl.col("_n2") >= min_subjects).then(pl.col("_r2").fill_nan(None)),
        )
    )
    anchored = (pl.col("n_outcome_subjects") >= min_subjects) & (pl.col("anchor_share") >= anchor_threshold)
    by_outcome = pl.col("rho_value_time_to_outcome").abs() > rho_threshold
    by_end = pl.col("rho_value_time_to_end").abs() > rho_threshold
    reasons = pl.concat_str(
        [
            pl.when(anchored).then(
                pl.format(
                    "last recorded {} days before the outcome in {}% of the {} subjects with one",
                    pl.col("anchor_gap_days"),
                    (pl.col("anchor_share") * 100).round(0),
                    pl.col("n_outcome_subjects"),
                )
            ),
            pl.when(by_outcome).then(
                pl.format(
                    "value tracks the time to the outcome (Spearman {})", pl.col("rho_value_time_to_outcome").round(3)
                )
            ),
            pl.when(by_end).then(
                pl.format(
                    "value tracks the time to the end of follow-up (Spearman {})",
                    pl.col("rho_value_time_to_end").round(3),
                )
            ),
        ],
        separator="; ",
        ignore_nulls=True,
    )
    return (
        table.with_columns(flagged=(anchored | by_outcome | by_end).fill_null(False), reason=reasons)
        .with_columns(pl.col("reason").replace("", None))
        .select(list(_SCAN_SCHEMA))
        .cast(dict(_SCAN_SCHEMA))  # type: ignore[arg-type]
        .with_columns(pl.col(c).fill_null(float("nan")) for c, t in _SCAN_SCHEMA.items() if t == pl.Float64)
        .sort("code")
    )


def model_input_codes(model: Any) -> set[str] | None:
    """Codes a fitted model reads: a ``TrajectoryModel``'s vocabulary, a landmark baseline's feature vocabulary,
    the empty set for a model without features; None when unknown (then every code counts)."""
    pre = getattr(model, "preprocessor", None)
    if pre is not None and hasattr(pre, "codes"):
        return set(pre.codes)
    specs = getattr(model, "specs", None)
    if isinstance(specs, Mapping) and specs:
        return {
            c
            for spec in specs.values()
            for part in ("numeric", "static", "treatment")
            for c in getattr(spec.vocabulary, part)
        }
    if getattr(model, "uses_features", None) is False:
        return set()
    return None


def check_outcome_derived(model: Any, scan: pl.DataFrame, *, name: str = "model") -> dict[str, Any]:
    """Check (b) for one model: none of its input codes is flagged by :func:`scan_outcome_derived_codes`."""
    inputs = model_input_codes(model)
    flagged = scan.filter(pl.col("flagged"))
    used = flagged if inputs is None else flagged.filter(pl.col("code").is_in(sorted(inputs)))
    ignored = flagged.height - used.height
    if used.height:
        listed = "; ".join(f"{c}: {r}" for c, r in used.select("code", "reason").iter_rows())
        detail = f"{used.height} input code(s) derived from the outcome: {listed}"
    else:
        detail = f"none of the model's input codes is derived from the outcome ({scan.height} codes scanned)"
    if ignored:
        detail += f"; {ignored} flagged code(s) are not model inputs"
    if inputs is None:
        detail += " (the model's inputs are unknown, so every code counts)"
    return _row("outcome_derived_features", name, used.height == 0, float(used.height), 0.0, detail)


# ---------------------------------------------------------------------------------------------------- (c)
def check_split_overlap(model: Any, cohort: Cohort, *, name: str = "model") -> dict[str, Any]:
    """Check (c): no subject in two splits, and nothing fitted from tuning/held-out subjects only.

    Vocabulary: no code that occurs only in non-train subjects. Normalisers (a ``TrajectoryModel``'s per-code
    quantile grids): each grid's range lies within the train values of its code.
    """
    problems: list[str] = []
    dup = cohort.splits.filter(pl.col("subject_id").is_duplicated())["subject_id"].unique()
    if dup.len():
        problems.append(f"{dup.len()} subject(s) in more than one split (first {dup.sort()[0]})")
    ev = cohort.events.join(cohort.splits, on="subject_id", how="left")
    is_train = pl.col("split") == "train"
    train_codes = set(ev.filter(is_train)["code"].unique().to_list())
    other_only = set(ev.filter(~is_train)["code"].unique().to_list()) - train_codes
    inputs = model_input_codes(model)
    leaked = sorted((inputs or set()) & other_only)
    if leaked:
        problems.append(f"vocabulary holds {len(leaked)} code(s) seen only in tuning/held-out subjects: {leaked[:5]}")
    pre = getattr(model, "preprocessor", None)
    quantiles = getattr(pre, "quantiles", None) or {}
    outside: list[str] = []
    if quantiles:
        ranges = (
            ev.filter(is_train & pl.col("numeric_value").is_not_null())
            .group_by("code")
            .agg(lo=pl.col("numeric_value").cast(pl.Float64).min(), hi=pl.col("numeric_value").cast(pl.Float64).max())
        )
        known = {c: (lo, hi) for c, lo, hi in ranges.iter_rows()}
        for code, grid in quantiles.items():  # one entry per code of the vocabulary, not per subject
            lo, hi = known.get(code, (None, None))
            if (
                lo is None
                or hi is None
                or grid[0] < lo - 1e-6 * max(1.0, abs(lo))
                or grid[-1] > hi + 1e-6 * max(1.0, abs(hi))
            ):
                outside.append(code)
        if outside:
            problems.append(
                f"value normalisers of {len(outside)} code(s) span values outside the train split's: "
                f"{sorted(outside)[:5]}"
            )
    statistic = float(dup.len() + len(leaked) + len(outside))
    fitted = "unknown inputs" if inputs is None else f"vocabulary ({len(inputs)} codes)"
    fitted += " and value normalisers" if quantiles else ""
    detail = "; ".join(problems) if problems else f"splits are disjoint; fitted {fitted}: train subjects only"
    return _row("split_overlap", name, not problems, statistic, 0.0, detail)


# ---------------------------------------------------------------------------------------------------- audit
def audit_leakage(
    models: Mapping[str, Any],
    cohort: Cohort,
    *,
    landmarks: Sequence[float],
    horizons: Sequence[float],
    split: Split = "held_out",
    n_subjects: int = 10,
    seed: int = 0,
    tol: float = 1e-6,
) -> LeakageAudit:
    """Run checks (a), (b) and (c) for every fitted model (``{name: model}``) on ``cohort``."""
    scan = scan_outcome_derived_codes(cohort)
    rows = []
    for name, model in models.items():
        rows.append(
            check_future_perturbation(
                model,
                cohort,
                landmarks=landmarks,
                horizons=horizons,
                split=split,
                n_subjects=n_subjects,
                seed=seed,
                tol=tol,
                name=name,
            )
        )
        rows.append(check_outcome_derived(model, scan, name=name))
        rows.append(check_split_overlap(model, cohort, name=name))
    return LeakageAudit(pl.DataFrame(rows, schema=_CHECK_SCHEMA, orient="row"), scan)
