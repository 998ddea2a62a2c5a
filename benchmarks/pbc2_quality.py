"""PBC2 quality benchmark: the migpt_traj transformer against Null, landmark Cox, time-varying Cox and landmark RSF.

For split seeds ``0..K-1`` (subject-level splits drawn by ``load_pbc2(split_seed=s)``: 70 % train, 15 % tuning,
15 % held out), every model is fitted through its public API (train split; the transformer also early-stops on
the tuning split) and evaluated on the held-out subjects at risk at landmarks 1, 3 and 5 years after registration,
for death (the primary outcome) by horizons 1, 3 and 5 years, transplantation competing:

* td-AUC: :func:`migpt_traj.evaluation.cumulative_dynamic_auc` (cases: deaths by ``h``; controls: event-free at
  ``h`` or transplanted by ``h``), IPCW with the censoring distribution of the train split at that landmark;
* Brier: :func:`migpt_traj.evaluation.brier_score` of the predicted cumulative incidence of death, same weights.

A cell whose held-out set has fewer than 5 deaths by the horizon is reported as such, and so is one where the
metric is not estimable (no control, horizon beyond follow-up); neither is dropped silently. Each cell gives the
mean over the splits that contributed, a 95 % t interval across splits with the Nadeau–Bengio correction for
overlapping random splits (``sd * sqrt(1/J + n_test/n_train)``), and the number of splits; the paired difference
transformer − Cox is computed split by split on the splits where both are estimable.

Usage:
    .venv/bin/python benchmarks/pbc2_quality.py [--splits 5] [--max-epochs N] [--overrides '{"d_model": 32}']
        [--config configs/pbc2.yaml] [--quick] [--out benchmarks/results/pbc2_quality]

``--quick`` (2 splits, 2 epochs, a small forest) is a smoke test; it writes files only when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _common import REPO, git_state, machine_info, markdown_table, mean_interval, package_versions, write_json

import migpt_traj as mt
from migpt_traj.errors import ValueRangeError
from migpt_traj.evaluation import brier_score, cumulative_dynamic_auc
from migpt_traj.evaluation.baselines import LandmarkCox, LandmarkCoxTV, LandmarkRSF, NullModel

LANDMARKS = (365.25, 1095.75, 1826.25)
HORIZONS = (365.25, 1095.75, 1826.25)
MIN_DEATHS = 5
PRIMARY = "MEDS_DEATH"
MODELS = ("null", "cox", "cox_tv", "rsf", "transformer")
LABELS = {
    "null": "Null (AJ)",
    "cox": "Landmark Cox",
    "cox_tv": "Time-varying Cox",
    "rsf": "Landmark RSF",
    "transformer": "Transformer",
}
METRICS = ("auc", "brier")
DEFAULT_OUT = REPO / "benchmarks" / "results" / "pbc2_quality"
VERSIONS = ("migpt-traj", "torch", "lightning", "polars", "numpy", "scipy", "lifelines", "scikit-survival", "pandas")


def _codes(labels: pl.DataFrame, outcomes: tuple[str, ...]) -> np.ndarray:
    return labels["event"].replace_strict({o: i + 1 for i, o in enumerate(outcomes)}, default=0).to_numpy()


def _model_factories(args: argparse.Namespace, seed: int) -> dict[str, Callable[[], Any]]:
    overrides: dict[str, Any] = {"use_notes": False, "progress": False, "seed": seed}
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    overrides.update(args.overrides)
    return {
        "null": lambda: NullModel(landmarks=LANDMARKS),
        "cox": lambda: LandmarkCox(landmarks=LANDMARKS, penalizer=args.cox_penalizer),
        "cox_tv": lambda: LandmarkCoxTV(landmarks=LANDMARKS, penalizer=args.cox_penalizer),
        "rsf": lambda: LandmarkRSF(landmarks=LANDMARKS, n_estimators=args.rsf_trees, random_state=seed),
        "transformer": lambda: mt.TrajectoryModel.from_config(args.config, **overrides),
    }


def _describe(name: str, model: Any) -> dict[str, Any]:
    if name == "transformer":
        return {"config": model.config.to_dict(), "history": model.history}
    if name in ("cox", "cox_tv"):
        return {"penalizer": model.penalizer, "l1_ratio": model.l1_ratio, "log_skew": model.log_skew_threshold}
    if name == "rsf":
        return {"forest": model.forest_options, "log_skew": model.log_skew_threshold}
    return {}


def _cell(
    held: pl.DataFrame, train: pl.DataFrame, risk: pl.DataFrame | None, horizon: float, outcomes: tuple[str, ...]
) -> dict[str, Any]:
    """Counts and metrics of one (model, split, landmark, horizon) cell, with a status per metric."""
    t, e = held["duration_days"].to_numpy(), _codes(held, outcomes)
    out: dict[str, Any] = {
        "n_at_risk": held.height,
        "n_deaths": int(((e == 1) & (t <= horizon)).sum()),
        "n_competing": int(((e > 1) & (t <= horizon)).sum()),
        "n_followed_beyond": int((t > horizon).sum()),
    }
    for metric in METRICS:
        out[metric], out[f"{metric}_status"] = None, "ok"
    if risk is None:
        for metric in METRICS:
            out[f"{metric}_status"] = "model_failed"
        return out
    if out["n_deaths"] < MIN_DEATHS:
        for metric in METRICS:
            out[f"{metric}_status"] = "too_few_deaths"
        return out
    r = held.select("subject_id").join(risk, on="subject_id", how="left", maintain_order="left")["risk"]
    if r.null_count():
        raise RuntimeError(f"{r.null_count()} held-out subjects at risk got no prediction at horizon {horizon}.")
    train_t, train_e = train["duration_days"].to_numpy(), _codes(train, outcomes)
    for metric, fn in (("auc", cumulative_dynamic_auc), ("brier", brier_score)):
        try:
            out[metric] = fn(t, e, r.to_numpy(), horizon, cause=1, train_time=train_t, train_event=train_e)
        except ValueRangeError as err:
            out[f"{metric}_status"], out[f"{metric}_reason"] = "not_estimable", str(err)
    return out


def run_split(seed: int, args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cohort = mt.datasets.load_pbc2(split_seed=seed)
    outcomes = tuple(cohort.outcomes)
    labels = {
        (s, split): cohort.labels(landmarks=[s], split=split) for s in LANDMARKS for split in ("train", "held_out")
    }
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"split_seed": seed, "subjects": dict(cohort.splits.group_by("split").len().iter_rows())}
    for name, factory in _model_factories(args, seed).items():
        if name not in args.models:
            continue
        record: dict[str, Any] = {}
        pred: pl.DataFrame | None = None
        try:
            start = time.perf_counter()
            model = factory().fit(cohort)
            record["fit_s"] = time.perf_counter() - start
            start = time.perf_counter()
            pred = model.predict_risk(cohort, landmarks=list(LANDMARKS), horizons=list(HORIZONS), split="held_out")
            record["predict_s"] = time.perf_counter() - start
            record.update(_describe(name, model))
            pred = pred.filter(pl.col("event") == PRIMARY)
        except Exception as err:  # a failed model is reported, not hidden, and the others still run
            record["error"] = "".join(traceback.format_exception_only(err)).strip()
            pred = None
        info[name] = record
        for s in LANDMARKS:
            for h in HORIZONS:
                risk = (
                    None
                    if pred is None
                    else pred.filter((pl.col("landmark_days") == s) & (pl.col("horizon_days") == h)).select(
                        "subject_id", "risk"
                    )
                )
                cell = _cell(labels[(s, "held_out")], labels[(s, "train")], risk, h, outcomes)
                rows.append({"split_seed": seed, "model": name, "landmark_days": s, "horizon_days": h, **cell})
        fit = record.get("fit_s")
        print(f"  split {seed} {name:<12s} fit {fit or float('nan'):7.1f} s {record.get('error', '')}", flush=True)
    return rows, info


def summarise(rows: list[dict[str, Any]], ratio: float, models: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    frame = pl.DataFrame(rows, infer_schema_length=None)
    cells, paired = [], []
    for s in LANDMARKS:
        for h in HORIZONS:
            at = frame.filter((pl.col("landmark_days") == s) & (pl.col("horizon_days") == h))
            counts = at.filter(pl.col("model") == models[0])
            base = {
                "landmark_days": s,
                "horizon_days": h,
                "mean_at_risk": counts["n_at_risk"].mean(),
                "mean_deaths": counts["n_deaths"].mean(),
                "mean_competing": counts["n_competing"].mean(),
            }
            for metric in METRICS:
                values = {}
                for name in models:
                    sub = at.filter(pl.col("model") == name).sort("split_seed")
                    ok = sub.filter(pl.col(f"{metric}_status") == "ok")
                    status = dict(sub.group_by(f"{metric}_status").len().iter_rows())
                    values[name] = dict(zip(ok["split_seed"].to_list(), ok[metric].to_list(), strict=True))
                    cells.append(
                        {
                            **base,
                            "model": name,
                            "metric": metric,
                            "splits": sub.height,
                            "status_counts": status,
                            **mean_interval(list(values[name].values()), test_train_ratio=ratio),
                            "naive": mean_interval(list(values[name].values())),
                        }
                    )
                if "transformer" in values and "cox" in values:
                    both = sorted(set(values["transformer"]) & set(values["cox"]))
                    diffs = [values["transformer"][k] - values["cox"][k] for k in both]
                    paired.append(
                        {**base, "metric": metric, "splits": both, **mean_interval(diffs, test_train_ratio=ratio)}
                    )
    return {"cells": cells, "paired": paired}


def _reasons(cell: dict[str, Any]) -> str:
    counts = {k: v for k, v in cell.get("status_counts", {}).items() if k != "ok"}
    return ", ".join(f"{k.replace('_', ' ')} ×{v}" for k, v in sorted(counts.items()))


def _fmt(cell: dict[str, Any], digits: int = 3) -> str:
    """``mean [lower, upper] (n)``, with the reasons of the splits that did not contribute."""
    reasons = _reasons(cell)
    if cell["n"] == 0:
        return f"— ({reasons})" if reasons else "—"
    text = f"{cell['mean']:.{digits}f}"
    if cell["lower"] is not None:
        text += f" [{cell['lower']:.{digits}f}, {cell['upper']:.{digits}f}]"
    return text + (f" ({cell['n']}; {reasons})" if reasons else f" ({cell['n']})")


def render(result: dict[str, Any]) -> str:
    models = tuple(result["settings"]["models"])
    cells = {(c["landmark_days"], c["horizon_days"], c["metric"], c["model"]): c for c in result["summary"]["cells"]}
    paired = {(c["landmark_days"], c["horizon_days"], c["metric"]): c for c in result["summary"]["paired"]}
    st = result["settings"]
    out = [
        "# PBC2 quality benchmark",
        "",
        f"{st['splits']} subject-level splits (seeds 0..{st['splits'] - 1}; 218 train / 47 tuning / 47 held-out "
        f"subjects), held-out subjects at risk at each landmark; death primary, transplant competing. Cells: mean "
        f"[95 % interval across splits, Nadeau–Bengio corrected] (splits that contributed). A cell with fewer "
        f"than {MIN_DEATHS} held-out deaths by the horizon is not scored (shown as —, with the reason per split).",
        f"Run {result['machine']['utc']} on {result['machine']['cpu_count']} CPUs; commit "
        f"{(result['git']['commit'] or '?')[:10]}{' (dirty tree)' if result['git']['dirty'] else ''}.",
        "",
    ]
    for metric, title in (("auc", "td-AUC (higher is better)"), ("brier", "IPCW Brier score (lower is better)")):
        header = ["landmark (y)", "horizon (y)", "at risk", "deaths", *[LABELS[m] for m in models]]
        if "transformer" in models and "cox" in models:
            header.append("Transformer − Cox")
        rows = []
        for s in LANDMARKS:
            for h in HORIZONS:
                first = cells[(s, h, metric, models[0])]
                row = [
                    f"{s / 365.25:g}",
                    f"{h / 365.25:g}",
                    f"{first['mean_at_risk']:.1f}",
                    f"{first['mean_deaths']:.1f}",
                ]
                row += [_fmt(cells[(s, h, metric, m)]) for m in models]
                if (s, h, metric) in paired:
                    row.append(_fmt(paired[(s, h, metric)]))
                rows.append(row)
        out += [f"## {title}", "", markdown_table(header, rows), ""]
    timing_rows = [
        [
            LABELS[m],
            f"{np.mean(t['fit_s']):.1f}" if t["fit_s"] else "—",
            f"{np.mean(t['predict_s']):.2f}" if t["predict_s"] else "—",
        ]
        for m, t in result["timings"].items()
    ]
    out += ["## Time per split (s, mean)", "", markdown_table(["model", "fit", "predict"], timing_rows), ""]
    out += ["## Notes", "", *[f"* {n}" for n in result["notes"]], ""]
    return "\n".join(out)


NOTES = [
    "At risk / deaths: mean over splits of held-out subjects at risk at the landmark and of their deaths by the "
    "horizon (the AUC and Brier of each cell rest on these few subjects; intervals are wide).",
    "The Null model gives everyone the same risk at a landmark: its AUC is 0.5 by construction; its Brier score is "
    "the reference a useful model must beat.",
    "Landmark RSF treats transplant as censoring; its risk is 1 − S(h), the net risk of death without transplant, "
    "which overstates the cumulative incidence when transplants occur. Its Brier score is penalised for that.",
    "IPCW weights come from the train split's censoring at the same landmark; cells beyond the follow-up of the "
    "held-out set or without a control are reported as not estimable.",
    "Paired difference: per split, transformer minus Cox on the same held-out subjects, on splits where both are "
    "scored; an interval excluding 0 is evidence of a difference.",
]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5, help="number of split seeds (0..K-1)")
    parser.add_argument("--max-epochs", type=int, default=None, help="transformer max_epochs override")
    parser.add_argument("--overrides", type=json.loads, default={}, help="transformer config overrides as JSON")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "pbc2.yaml", help="transformer config")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--cox-penalizer", type=float, default=0.1)
    parser.add_argument("--rsf-trees", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 splits, 2 epochs, 50 trees")
    parser.add_argument("--out", type=Path, default=None, help=f"output stem (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if not isinstance(args.overrides, dict):
        parser.error("--overrides must be a JSON object")
    args.models = tuple(m for m in MODELS if m in args.models.split(","))
    if args.quick:
        args.splits, args.max_epochs, args.rsf_trees = min(args.splits, 2), args.max_epochs or 2, 50
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # this script's output only
    machine = machine_info()
    rows: list[dict[str, Any]] = []
    splits: list[dict[str, Any]] = []
    for seed in range(args.splits):
        print(f"split seed {seed}", flush=True)
        split_rows, info = run_split(seed, args)
        rows += split_rows
        splits.append(info)
    sizes = splits[0]["subjects"]
    ratio = sizes.get("held_out", 0) / max(sizes.get("train", 1), 1)
    result: dict[str, Any] = {
        "benchmark": "pbc2_quality",
        "machine": machine,
        "versions": package_versions(VERSIONS),
        "git": git_state(),
        "command": " ".join(sys.argv if argv is None else ["pbc2_quality.py", *argv]),
        "settings": {
            "splits": args.splits,
            "models": list(args.models),
            "landmarks_days": list(LANDMARKS),
            "horizons_days": list(HORIZONS),
            "primary_outcome": PRIMARY,
            "min_deaths": MIN_DEATHS,
            "interval": "95% t interval across splits, Nadeau-Bengio corrected (1/J + n_test/n_train)",
            "test_train_ratio": ratio,
            "transformer_config_file": str(args.config),
            "transformer_overrides": args.overrides,
            "max_epochs": args.max_epochs,
            "cox_penalizer": args.cox_penalizer,
            "rsf_trees": args.rsf_trees,
            "quick": args.quick,
        },
        "timings": {
            m: {
                "fit_s": [s[m]["fit_s"] for s in splits if "fit_s" in s.get(m, {})],
                "predict_s": [s[m]["predict_s"] for s in splits if "predict_s" in s.get(m, {})],
            }
            for m in args.models
        },
        "splits": splits,
        "per_split": rows,
        "summary": summarise(rows, ratio, args.models),
        "notes": NOTES,
    }
    text = render(result)
    print(text)
    if out is not None:
        write_json(out.with_suffix(".json"), result)
        out.with_suffix(".md").write_text(text)
        print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
