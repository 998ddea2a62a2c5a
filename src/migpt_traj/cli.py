"""The ``migpt-traj`` command: demo, fit, predict, evaluate, tune (options as the API; YAML configs in ``configs/``)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from migpt_traj.durations import parse_days_list
from migpt_traj.errors import MigptTrajError

if TYPE_CHECKING:
    from migpt_traj.data.cohort import Cohort

__all__ = ["main"]


def _cohort(root: str, outcomes: str | None, seed: int) -> Cohort:
    from migpt_traj.data.cohort import Cohort

    codes = [c.strip() for c in outcomes.split(",")] if outcomes else ["MEDS_DEATH"]
    return Cohort.from_meds(root, outcomes=codes, split_seed=seed)


def _cmd_fit(args: argparse.Namespace) -> int:
    from migpt_traj.api import TrajectoryModel
    from migpt_traj.config import TrajectoryConfig

    config = TrajectoryConfig.from_yaml(args.config) if args.config else TrajectoryConfig()
    overrides = {}
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.quiet:
        overrides["progress"] = False
    outcomes = args.outcomes or (",".join(config.outcomes) if config.outcomes else None)
    cohort = _cohort(args.data, outcomes, args.split_seed)
    model = TrajectoryModel(config, **overrides)
    model.fit(cohort, run_dir=args.out)
    if model.history.get("global_rank", 0) != 0:  # under DDP only rank 0 writes the model
        return 0
    model.save(args.out)
    print(f"Saved model to {args.out} (best epoch {model.history.get('best_epoch')}).")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from migpt_traj.api import TrajectoryModel

    model = TrajectoryModel.load(args.model)
    cohort = _cohort(args.data, args.outcomes or ",".join(model.outcomes), args.split_seed)
    split = None if args.split == "all" else args.split
    risk = model.predict_risk(
        cohort,
        landmarks=parse_days_list(args.landmarks, name="--landmarks"),
        horizons=parse_days_list(args.horizons, name="--horizons"),
        split=split,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    risk.write_parquet(out)
    print(f"Wrote {risk.height} rows ({risk['subject_id'].n_unique()} subjects) to {out}.")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from migpt_traj.api import TrajectoryModel
    from migpt_traj.evaluation.harness import evaluate

    model = TrajectoryModel.load(args.model)
    cohort = _cohort(args.data, args.outcomes or ",".join(model.outcomes), args.split_seed)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()] if args.baselines else []
    subgroups = [c.strip() for c in args.subgroups.split(",") if c.strip()] if args.subgroups else None
    report = evaluate(
        model,
        cohort,
        landmarks=parse_days_list(args.landmarks, name="--landmarks"),
        horizons=parse_days_list(args.horizons, name="--horizons"),
        baselines=baselines,
        split=args.split,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        subgroups=subgroups,
        progress=not args.quiet,
    )
    out = report.save(args.out)
    print(report)
    print(f"Wrote {out / 'report.html'}, {out / 'report.json'} and {out / 'figures'}.")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from migpt_traj.config import TrajectoryConfig
    from migpt_traj.tracking.tuning import tune

    config = TrajectoryConfig.from_yaml(args.config) if args.config else TrajectoryConfig()
    if args.quiet:
        config = config.replace(progress=False)
    outcomes = args.outcomes or (",".join(config.outcomes) if config.outcomes else None)
    cohort = _cohort(args.data, outcomes, args.split_seed)
    study = tune(
        cohort,
        search_space=args.search_space,
        n_trials=args.trials,
        storage=args.storage,
        study_name=args.study_name,
        objective=args.objective,
        base_config=config,
        landmarks=parse_days_list(args.landmarks, name="--landmarks"),
        horizons=parse_days_list(args.horizons, name="--horizons") if args.horizons else None,
        pruning=not args.no_pruning,
        tracking_uri=args.tracking_uri,
        seed=args.seed,
    )
    done = [t for t in study.trials if t.value is not None]
    best = f"best {args.objective} {study.best_value:.4f} with {study.best_params}" if done else "no completed trial"
    print(f"Study {args.study_name!r}: {len(study.trials)} trials in {args.storage}; {best}.")
    return 0


def _cmd_summarize(args: argparse.Namespace) -> int:
    from migpt_traj.api import TrajectoryModel
    from migpt_traj.durations import parse_days

    model = TrajectoryModel.load(args.model)
    cohort = _cohort(args.data, args.outcomes or ",".join(model.outcomes), args.split_seed)
    state = model.summarize(
        cohort,
        subject_id=args.subject,
        prediction_time=parse_days(args.at, name="--at"),
        horizons=parse_days_list(args.horizons, name="--horizons") if args.horizons else None,
    )
    out = state.save(args.out)
    print(state.text)
    print(f"Wrote {out / 'summary.json'}, {out / 'summary.md'} and {out / 'timeline.png'}.")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # Wide tables for a terminal, for this command only (polars' Config as a context restores the defaults).
    with pl.Config(tbl_rows=30, tbl_cols=20, tbl_width_chars=240, fmt_str_lengths=40):
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from migpt_traj.api import TrajectoryModel
    from migpt_traj.datasets import load_pbc2

    start = time.perf_counter()
    cohort = load_pbc2()
    print(cohort)
    print(cohort.describe())
    try:
        from migpt_traj.datasets import make_synthetic

        syn = make_synthetic(n_subjects=500, seed=0)
        print(syn)
        print(syn.describe())
    except ImportError:
        pass
    from migpt_traj.config import bundled_config_path

    config_path = Path(args.config) if args.config else bundled_config_path("pbc2")
    overrides: dict[str, object] = {"progress": not args.quiet}
    if args.max_epochs is not None:
        overrides["max_epochs"] = args.max_epochs
    model = TrajectoryModel.from_config(config_path, **overrides)
    print(f"Config: {config_path}")
    print(f"\nFitting on the PBC2 train split ({len(cohort.subject_ids('train'))} subjects) ...")
    model.fit(cohort)
    print(f"Best epoch {model.history['best_epoch']} (tuning NLL {model.history['best_val_loss']:.4f}).")
    landmarks = [365.25, 1095.75]
    horizons = [365.25, 1095.75, 1826.25]
    risk = model.predict_risk(cohort, landmarks=landmarks, horizons=horizons, split="held_out")
    print("\nHeld-out predicted risk of death (cumulative incidence), first subjects:")
    print(risk.filter(pl.col("event") == "MEDS_DEATH").head(9))
    _print_discrimination(cohort, risk, landmarks=landmarks, horizons=horizons)
    first = int(risk["subject_id"][0])
    state = model.summarize(cohort, subject_id=first, prediction_time=landmarks[0])
    print(f"\nPatient summary (held-out subject {first}, {landmarks[0]:g} days after entry):\n{state.text}")
    if args.out:
        model.save(args.out)
        risk.write_parquet(Path(args.out) / "predictions.parquet")
        print(f"Saved the model and predictions to {args.out}.")
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s.")
    return 0


def _print_discrimination(cohort: Cohort, risk: pl.DataFrame, *, landmarks: list[float], horizons: list[float]) -> None:
    """Held-out td-AUC for death per landmark × horizon (IPCW, censoring from the train split)."""
    try:
        from migpt_traj.evaluation.metrics import cumulative_dynamic_auc
    except ImportError:
        return
    rows = []
    for lm in landmarks:
        held = cohort.labels(landmarks=[lm], split="held_out")
        train = cohort.labels(landmarks=[lm], split="train")
        for h in horizons:
            r = risk.filter(
                (pl.col("event") == "MEDS_DEATH") & (pl.col("landmark_days") == lm) & (pl.col("horizon_days") == h)
            )
            j = held.join(r.select("subject_id", "risk"), on="subject_id")
            code = {"MEDS_DEATH": 1, "TRANSPLANT": 2}
            ev = j["event"].replace_strict(code, default=0, return_dtype=pl.Int64).to_numpy()
            tr_ev = train["event"].replace_strict(code, default=0, return_dtype=pl.Int64).to_numpy()
            try:
                auc = cumulative_dynamic_auc(
                    j["duration_days"].to_numpy(),
                    ev,
                    j["risk"].to_numpy(),
                    h,
                    cause=1,
                    train_time=train["duration_days"].to_numpy(),
                    train_event=tr_ev,
                )
                value = f"{float(getattr(auc, 'auc', auc)):.3f}"
            except MigptTrajError as err:
                value = f"n/a ({str(err)[:40]})"
            rows.append({"landmark_days": lm, "horizon_days": h, "at_risk": j.height, "td_auc_death": value})
    print("\nHeld-out time-dependent AUC (death), small split: read with care.")
    print(pl.DataFrame(rows))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="migpt-traj", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="fit on the bundled PBC2 cohort and predict, end to end")
    demo.add_argument("--config", default=None, help="YAML config (default: the bundled configs/pbc2.yaml)")
    demo.add_argument("--max-epochs", type=int, default=None)
    demo.add_argument("--out", default=None, help="folder for the model and predictions")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(func=_cmd_demo)

    fit = sub.add_parser("fit", help="fit a model on a MEDS root (train split; tuning split for early stopping)")
    fit.add_argument("--data", required=True, help="MEDS root")
    fit.add_argument("--out", required=True, help="run folder for the saved model")
    fit.add_argument("--config", default=None)
    fit.add_argument("--outcomes", default=None, help="comma-separated outcome codes, primary first")
    fit.add_argument("--max-epochs", type=int, default=None)
    fit.add_argument("--seed", type=int, default=None)
    fit.add_argument("--split-seed", type=int, default=0, help="seed of the subject split when the root has none")
    fit.add_argument("--quiet", action="store_true")
    fit.set_defaults(func=_cmd_fit)

    pred = sub.add_parser("predict", help="risk for every subject at risk at every landmark")
    pred.add_argument("--model", required=True, help="run folder written by fit")
    pred.add_argument("--data", required=True, help="MEDS root")
    pred.add_argument("--landmarks", required=True, help="e.g. 1y,3y or 365,1095")
    pred.add_argument("--horizons", required=True, help="e.g. 1y,3y,5y")
    pred.add_argument("--split", default="held_out", choices=["train", "tuning", "held_out", "all"])
    pred.add_argument("--outcomes", default=None)
    pred.add_argument("--split-seed", type=int, default=0)
    pred.add_argument("--out", required=True, help="parquet file to write")
    pred.set_defaults(func=_cmd_predict)

    ev = sub.add_parser("evaluate", help="landmark × horizon evaluation with CIs, baselines and a leakage audit")
    ev.add_argument("--model", required=True, help="run folder written by fit")
    ev.add_argument("--data", required=True, help="MEDS root")
    ev.add_argument("--landmarks", required=True, help="e.g. 1y,3y or 365,1095")
    ev.add_argument("--horizons", required=True, help="e.g. 1y,3y,5y")
    ev.add_argument("--baselines", default="null,cox", help="comma-separated: null, cox, cox_tv, rsf ('' for none)")
    ev.add_argument("--split", default="held_out", choices=["tuning", "held_out"])
    ev.add_argument("--subgroups", default=None, help="comma-separated codes present at time zero, e.g. SEX//female")
    ev.add_argument("--bootstrap", type=int, default=200, help="subject-level bootstrap replicates (0: no CIs)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--outcomes", default=None)
    ev.add_argument("--split-seed", type=int, default=0)
    ev.add_argument("--quiet", action="store_true")
    ev.add_argument("--out", required=True, help="folder for report.html, report.json and figures/")
    ev.set_defaults(func=_cmd_evaluate)

    tu = sub.add_parser("tune", help="Optuna search on the tuning split (resumable; workers may share a storage)")
    tu.add_argument("--data", required=True, help="MEDS root")
    tu.add_argument("--trials", type=int, required=True, help="trials this worker runs")
    tu.add_argument("--storage", default="sqlite:///optuna.db", help="Optuna RDB storage URL")
    tu.add_argument("--config", default=None, help="base YAML config (fields not tuned)")
    tu.add_argument("--search-space", default=None, help="YAML search space (default: configs/search_space.yaml)")
    tu.add_argument("--study-name", default="migpt_traj")
    tu.add_argument("--objective", default="td_auc", choices=["td_auc", "ibs"])
    tu.add_argument("--landmarks", default="0", help="landmarks of the objective, e.g. 0,1y")
    tu.add_argument("--horizons", default=None, help="horizons of the objective (default: the config's)")
    tu.add_argument("--no-pruning", action="store_true")
    tu.add_argument("--tracking-uri", default=None, help="MLflow tracking URI: one nested run per trial")
    tu.add_argument("--seed", type=int, default=0, help="sampler seed")
    tu.add_argument("--outcomes", default=None)
    tu.add_argument("--split-seed", type=int, default=0)
    tu.add_argument("--quiet", action="store_true")
    tu.set_defaults(func=_cmd_tune)

    sm = sub.add_parser("summarize", help="one subject's state at a time: risks, labs, imaging change, attributions")
    sm.add_argument("--model", required=True, help="run folder written by fit")
    sm.add_argument("--data", required=True, help="MEDS root")
    sm.add_argument("--subject", required=True, type=int, help="subject_id")
    sm.add_argument("--at", required=True, help="days after the subject's time zero (first timed event), e.g. 2y")
    sm.add_argument("--horizons", default=None, help="risk horizons, e.g. 1y,3y (default: the model's config)")
    sm.add_argument("--outcomes", default=None)
    sm.add_argument("--split-seed", type=int, default=0)
    sm.add_argument("--out", required=True, help="folder for summary.json, summary.md and timeline.png")
    sm.set_defaults(func=_cmd_summarize)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MigptTrajError as err:
        print(f"migpt-traj: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
