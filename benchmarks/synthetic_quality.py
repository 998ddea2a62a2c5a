"""Simulator quality benchmark: migpt_traj (labs only, and all modalities) against landmark Cox and the true risk.

For each seed ``s``, the models are fitted on ``make_synthetic(n_train, seed=s)`` (its own train/tuning split) and
scored on an independent cohort ``make_synthetic(n_test, seed=100 + s)`` from the same generative model, so the
comparison is not at the mercy of a small held-out split. Death by ``horizon`` at landmarks 1 and 3 years,
transplant competing; td-AUC (:func:`migpt_traj.evaluation.cumulative_dynamic_auc`, IPCW with the train cohort's
censoring) and IPCW Brier of the predicted cumulative incidence. "Truth" scores the simulator's exact risk given the
latent state: no model can beat it by more than noise.

Usage:
    .venv/bin/python benchmarks/synthetic_quality.py [--seeds 3] [--n-train 1500] [--n-test 2000]
        [--overrides '{"max_epochs": 10}'] [--out benchmarks/results/synthetic_quality]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _common import REPO, git_state, machine_info, markdown_table, mean_interval, package_versions, write_json

import migpt_traj as mt
from migpt_traj.config import bundled_config_path
from migpt_traj.evaluation import brier_score, cumulative_dynamic_auc
from migpt_traj.evaluation.baselines import LandmarkCox

LANDMARKS = (365.25, 1095.75)
HORIZON = 1095.75
CODES = {"MEDS_DEATH": 1, "TRANSPLANT": 2}
MODELS = ("truth", "cox", "labs", "all")
NAMES = {"truth": "True risk", "cox": "Landmark Cox", "labs": "migpt_traj, labs only", "all": "migpt_traj, all"}


def _events(column: pl.Series) -> np.ndarray:
    return column.replace_strict(CODES, default=0, return_dtype=pl.Int64).to_numpy()


def _score(test: mt.Cohort, train: mt.Cohort, risk: pl.DataFrame) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, float]] = {"auc": {}, "brier": {}}
    for lm in LANDMARKS:
        lab = test.labels(landmarks=[lm])
        ref = train.labels(landmarks=[lm], split="train")
        r = risk.filter(
            (pl.col("event") == "MEDS_DEATH") & (pl.col("landmark_days") == lm) & (pl.col("horizon_days") == HORIZON)
        )
        j = lab.join(r.select("subject_id", "risk"), on="subject_id")
        args = (j["duration_days"].to_numpy(), _events(j["event"]), j["risk"].to_numpy(), HORIZON)
        ref_kw = {"train_time": ref["duration_days"].to_numpy(), "train_event": _events(ref["event"])}
        out["auc"][lm] = float(cumulative_dynamic_auc(*args, **ref_kw))
        out["brier"][lm] = float(brier_score(*args, **ref_kw))
    return out


def _truth(test: mt.Cohort) -> pl.DataFrame:
    lab = test.labels(landmarks=list(LANDMARKS))
    assert test.truth is not None
    risk = test.truth.risk(lab["subject_id"], lab["prediction_time"], [HORIZON], event="MEDS_DEATH")
    keys = lab.select("subject_id", "prediction_time", "landmark_days")
    return risk.join(keys, on=["subject_id", "prediction_time"]).with_columns(event=pl.lit("MEDS_DEATH"))


def run_seed(seed: int, *, n_train: int, n_test: int, overrides: dict[str, Any]) -> dict[str, Any]:
    train = mt.datasets.make_synthetic(n_train, seed=seed)
    test = mt.datasets.make_synthetic(n_test, seed=100 + seed)
    result: dict[str, Any] = {"seed": seed, "models": {}}
    for name in MODELS:
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        if name == "truth":
            risk = _truth(test)
        elif name == "cox":
            risk = (
                LandmarkCox(landmarks=LANDMARKS)
                .fit(train)
                .predict_risk(test, landmarks=list(LANDMARKS), horizons=[HORIZON])
            )
        else:
            modalities = {"use_notes": False, "use_images": False} if name == "labs" else {}
            model = mt.TrajectoryModel.from_config(
                bundled_config_path("synthetic"), progress=False, **{**modalities, **overrides}
            ).fit(train)
            risk = model.predict_risk(test, landmarks=list(LANDMARKS), horizons=[HORIZON])
            extra = {"best_epoch": model.history["best_epoch"], "wide_penalty": model.history["wide_penalty"]}
        scores = _score(test, train, risk)
        result["models"][name] = {**scores, **extra, "seconds": time.perf_counter() - start}
        print(f"  seed {seed} {name:6s} AUC {[round(v, 3) for v in scores['auc'].values()]}", flush=True)
    return result


def _fmt(cell: dict[str, Any]) -> str:
    if cell["mean"] is None:
        return "—"
    if cell["lower"] is None:
        return f"{cell['mean']:.3f}"
    return f"{cell['mean']:.3f} [{cell['lower']:.3f}, {cell['upper']:.3f}]"


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for metric in ("auc", "brier"):
        for name in MODELS:
            for lm in LANDMARKS:
                values = [r["models"][name][metric][lm] for r in runs]
                table[f"{metric}|{name}|{lm}"] = mean_interval(values)
    return table


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# Simulator quality benchmark",
        "",
        f"{meta['seeds']} seeds; train `make_synthetic({meta['n_train']}, seed=s)`, test `make_synthetic("
        f"{meta['n_test']}, seed=100+s)`; death by {HORIZON / 365.25:.0f} y, transplant competing. Mean over seeds "
        "[95 % t interval across seeds].",
        f"Run {meta['started']} on {meta['machine'].get('cpu_count')} CPUs; commit {str(meta['git']['commit'])[:10]}.",
    ]
    for metric, title in (("auc", "td-AUC (higher is better)"), ("brier", "IPCW Brier (lower is better)")):
        rows = [[NAMES[name], *[_fmt(summary[f"{metric}|{name}|{lm}"]) for lm in LANDMARKS]] for name in MODELS]
        lines += [
            "",
            f"## {title}",
            "",
            markdown_table(["model", *[f"landmark {lm / 365.25:.0f} y" for lm in LANDMARKS]], rows),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=1500)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--overrides", type=json.loads, default={})
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "synthetic_quality")
    args = parser.parse_args()
    meta = {
        "seeds": args.seeds,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "overrides": args.overrides,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "git": git_state(),
        "packages": package_versions(["migpt-traj", "torch", "polars", "lifelines"]),
    }
    runs = [run_seed(s, n_train=args.n_train, n_test=args.n_test, overrides=args.overrides) for s in range(args.seeds)]
    summary = summarise(runs)
    text = markdown(summary, meta)
    print(text)
    write_json(args.out.with_suffix(".json"), {"meta": meta, "summary": summary, "runs": runs})
    args.out.with_suffix(".md").write_text(text)
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
