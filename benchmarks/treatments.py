"""Treatment suggestions against the simulator's exact counterfactuals, and the PBC2 trial's null answer.

Simulator (``make_synthetic(n, seed, confounding=c)`` for c in 0, 1, 2, 4): held-out subjects at risk at the
1-year landmark (a scheduled review, where the simulator's decisions happen), death within 5 years under each
option started then. Truth: ``cohort.truth.counterfactual_risk`` 1 µs before the landmark (so that a start the
simulator made exactly at the landmark is the decision being evaluated, as in ``suggest_treatments``).

Metrics per confounding level:

* ``risk_mae``: mean |estimated - true| counterfactual risk over rows and options (supported rows only, and all);
* ``effect_mae``: mean |estimated - true| risk difference (option - none), over treatment options;
* ``regret``: true risk of the top-ranked option minus the true best risk over every option (mean over rows), and
  ``regret_supported``: against the best supported option;
* the same for NAIVE: the Aalen-Johansen 5-year risk from the landmark among train subjects who started each
  option at the landmark's decision (start within a year after it) vs those who did not, no adjustment at all —
  what a crude comparison of treated and untreated patients gives. It ranks options identically for everyone;
* ``coverage``: share of true risks inside the 95 % bootstrap intervals (the intervals hold the transformer fixed
  and ignore model bias: expect under-coverage);
* support: share of ``supported=False`` where the simulator's start probability is 0, and where it is > 0.

PBC2: the randomised arm is a ``TREATMENT//`` row at registration (scripts/convert_pbc2.py), so at landmark 0 the
options are the two arms (the arm row at t is the decision evaluated; "none" = no arm, never seen: unsupported).
Reported: mean over subjects of the 5-year death-risk difference D-penicillamine - placebo, its bootstrap
interval, and the crude Aalen-Johansen difference between the arms.

Run: ``.venv/bin/python benchmarks/treatments.py [--n 800] [--bootstrap 20]``; writes
``benchmarks/results/treatments.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import migpt_traj as mt
from migpt_traj.evaluation._km import aalen_johansen
from migpt_traj.outputs.treatments import TreatmentEstimates, estimate_treatments

LANDMARK = 365.25
HORIZON = 1826.25
WINDOW = 365.25
RESULTS = Path(__file__).parent / "results" / "treatments.json"


def _model(**extra: Any) -> mt.TrajectoryModel:
    # Small settings for 2 shared CPU cores; no notes (their encoder dominates the fit time), so z3 is unseen.
    return mt.TrajectoryModel(
        d_model=16, n_layers=1, n_heads=2, max_epochs=1, use_notes=False, progress=False, seed=0, **extra
    )


def _naive(cohort: mt.Cohort, codes: tuple[str | None, ...], landmark: float, horizon: float) -> np.ndarray:
    """Crude AJ risk per option among train subjects by what started at the landmark decision."""
    lab = cohort.labels(landmarks=[landmark], split="train")
    prefix = cohort.conventions.treatment_prefix
    starts = (
        cohort.events.filter(pl.col("code").str.starts_with(prefix) & pl.col("time").is_not_null())
        .group_by("subject_id")
        .agg(pl.col("time").min().alias("start"), pl.col("code").sort_by("time").first())
    )
    lab = lab.join(starts, on="subject_id", how="left")
    before = pl.col("start") < pl.col("prediction_time")
    lab = lab.filter(~before.fill_null(False)).with_columns(
        group=pl.when(pl.col("start") <= pl.col("prediction_time") + pl.duration(days=WINDOW))
        .then(pl.col("code"))
        .otherwise(None)
    )
    cause = lab["event"].replace_strict({o: i + 1 for i, o in enumerate(cohort.outcomes)}, default=0).to_numpy()
    out = []
    for code in codes:
        mask = (lab["group"].is_null() if code is None else (lab["group"] == code).fill_null(False)).to_numpy()
        if mask.sum() == 0:
            out.append(np.nan)
            continue
        out.append(
            float(aalen_johansen(lab["duration_days"].to_numpy()[mask], cause[mask], cause=1, times=[horizon])[0])
        )
    return np.asarray(out)


def _regret(true: np.ndarray, score: np.ndarray, allowed: np.ndarray) -> tuple[float, float]:
    pick = np.argmin(np.where(allowed, score, np.inf), axis=1)
    chosen = true[np.arange(true.shape[0]), pick]
    return float((chosen - true.min(axis=1)).mean()), float(
        (chosen - np.where(allowed, true, np.inf).min(axis=1)).mean()
    )


def simulator(confounding: float, n: int, n_bootstrap: int, seed: int) -> dict[str, Any]:
    syn = mt.datasets.make_synthetic(n, seed=seed, confounding=confounding)
    t0 = time.perf_counter()
    model = _model().fit(syn)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    est: TreatmentEstimates = estimate_treatments(
        model, syn, horizon=HORIZON, landmarks=[LANDMARK], split="held_out", n_bootstrap=n_bootstrap
    )
    suggest_s = time.perf_counter() - t0
    ids = est.rows["subject_id"]
    before = est.rows.select(pl.col("prediction_time") - pl.duration(microseconds=1))["prediction_time"]
    true = np.stack(
        [syn.truth.counterfactual_risk(ids, before, [HORIZON], option=o)["risk"].to_numpy() for o in est.options], 1
    )
    naive = _naive(syn, est.codes, LANDMARK, HORIZON)[None, :].repeat(true.shape[0], 0)
    sup = est.supported
    lo, hi = np.quantile(est.replicates, [0.025, 0.975], axis=-1)
    start = syn.truth.start_probability(ids, before)
    p_true = np.stack(
        [np.ones(ids.len()), *(start.filter(pl.col("option") == o)["probability"].to_numpy() for o in est.options[1:])],
        1,
    )
    treat = (slice(None), slice(1, None))
    reg, reg_sup = _regret(true, est.risk, sup)
    nreg, nreg_sup = _regret(true, naive, sup)
    nreg_all, _ = _regret(true, naive, np.ones_like(sup))
    eff, neff, teff = est.risk - est.risk[:, :1], naive - naive[:, :1], true - true[:, :1]
    return {
        "confounding": confounding,
        "n_subjects": n,
        "held_out_rows": int(true.shape[0]),
        "options": list(est.options),
        "train_starts": est.train_starts.tolist(),
        "fit_seconds": round(fit_s, 1),
        "suggest_seconds": round(suggest_s, 1),
        "model_best_epoch": model.history.get("best_epoch"),
        "risk_mae": float(np.abs(est.risk - true)[sup].mean()),
        "risk_mae_all": float(np.abs(est.risk - true).mean()),
        "naive_risk_mae": float(np.abs(naive - true)[sup].mean()),
        "naive_risk_mae_all": float(np.abs(naive - true).mean()),
        "effect_mae": float(np.abs(eff - teff)[treat].mean()),
        "naive_effect_mae": float(np.abs(neff - teff)[treat].mean()),
        "mean_effect": np.round(eff[treat].mean(0), 4).tolist(),
        "naive_mean_effect": np.round(neff[treat].mean(0), 4).tolist(),
        "true_mean_effect": np.round(teff[treat].mean(0), 4).tolist(),
        "regret": reg,
        "regret_supported": reg_sup,
        "naive_regret": nreg_all,
        "naive_regret_within_support": nreg,
        "naive_regret_supported": nreg_sup,
        "coverage": float(((true >= lo) & (true <= hi)).mean()),
        "unsupported_where_never_treated": float((~sup[p_true == 0]).mean()) if (p_true == 0).any() else None,
        "unsupported_where_treated": float((~sup[p_true > 0]).mean()),
        "rows_never_treated": int((p_true == 0).sum()),
    }


def pbc2(n_bootstrap: int) -> dict[str, Any]:
    cohort = mt.datasets.load_pbc2()
    model = _model().fit(cohort)
    options = ["D-penicillamine", "placebo"]
    est = estimate_treatments(model, cohort, horizon=HORIZON, landmarks=[0.0], options=options, n_bootstrap=n_bootstrap)
    diff, reps = est.difference("D-penicillamine", "placebo")
    mean_reps = reps.mean(axis=0)
    lab = cohort.labels(landmarks=[0.0])
    arm = cohort.events.filter(pl.col("code").str.starts_with("TREATMENT//")).select("subject_id", "code")
    lab = lab.join(arm, on="subject_id")
    cause = lab["event"].replace_strict({o: i + 1 for i, o in enumerate(cohort.outcomes)}, default=0).to_numpy()
    crude = [
        float(aalen_johansen(lab["duration_days"].to_numpy()[m], cause[m], cause=1, times=[HORIZON])[0])
        for m in (
            (lab["code"] == "TREATMENT//D-penicillamine").to_numpy(),
            (lab["code"] == "TREATMENT//placebo").to_numpy(),
        )
    ]
    lo, hi = (float(v) for v in np.quantile(mean_reps, [0.025, 0.975]))
    return {
        "rows": int(diff.size),
        "mean_difference": float(diff.mean()),
        "interval": [lo, hi],
        "covers_zero": bool(lo <= 0.0 <= hi),
        "crude_aj_difference": crude[0] - crude[1],
        "supported_share": dict(zip(est.options, est.supported.mean(axis=0).round(3).tolist(), strict=True)),
        "train_starts": dict(zip(est.options, est.train_starts.tolist(), strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--bootstrap", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    sims = [simulator(c, args.n, args.bootstrap, args.seed) for c in (0.0, 1.0, 2.0, 4.0)]
    trial = pbc2(args.bootstrap)
    header = (
        f"{'conf':>5} {'risk MAE':>9} {'naive':>7} {'eff MAE':>8} {'naive':>7} {'regret':>7} {'naive':>7} "
        f"{'cover':>6} {'unsup|p=0':>9}"
    )
    print(header)
    for r in sims:
        never = r["unsupported_where_never_treated"]
        print(
            f"{r['confounding']:>5.1f} {r['risk_mae']:>9.3f} {r['naive_risk_mae']:>7.3f} {r['effect_mae']:>8.3f} "
            f"{r['naive_effect_mae']:>7.3f} {r['regret']:>7.3f} {r['naive_regret']:>7.3f} {r['coverage']:>6.2f} "
            f"{never if never is not None else float('nan'):>9.2f}"
        )
    print(
        f"PBC2 D-penicillamine - placebo, 5-year death risk: {trial['mean_difference']:+.3f} "
        f"[{trial['interval'][0]:+.3f}, {trial['interval'][1]:+.3f}] (crude AJ {trial['crude_aj_difference']:+.3f})"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {
        "settings": vars(args) | {"landmark_days": LANDMARK, "horizon_days": HORIZON},
        "simulator": sims,
        "pbc2": trial,
    }
    RESULTS.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
