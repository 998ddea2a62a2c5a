"""Forecast quality: MAE / RMSE per measurement on held-out future observations against last value carried forward
(LVCF) and the per-patient linear trend, 80 % interval coverage; on the simulator also the error against the true
(noise-free) future values.

    python benchmarks/forecast.py [--synthetic-n 1000] [--epochs 10]

Writes ``benchmarks/results/forecast.json`` and prints the tables. Forecasts are scored at every observed value
within 3 years after each held-out subject's landmark (1, 3, 5 years; subjects at risk there); the model's ``median``
scores MAE and its ``mean`` RMSE (the optimal point forecasts of each loss). The image row pools the 16 embedding
dimensions.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import polars as pl
from _common import REPO, git_state, machine_info, markdown_table, write_json

import migpt_traj as mt
from migpt_traj.outputs.forecast import forecast_at, future_observations, last_value_forecast, linear_trend_forecast

KEYS = ["subject_id", "prediction_time", "code", "dim", "target_days"]
LANDMARKS = [365.25, 1095.75, 1826.25]
HORIZON = 1095.75


def scored_observations(model: mt.TrajectoryModel, cohort: mt.Cohort, split: str | None) -> pl.DataFrame:
    samples = cohort.labels(landmarks=LANDMARKS, split=split).select("subject_id", "prediction_time")
    obs = future_observations(cohort, samples, horizon_days=HORIZON)
    fc = forecast_at(model, cohort, obs)
    lv = last_value_forecast(cohort, obs).select(*KEYS, pl.col("prediction").alias("lvcf"))
    tr = linear_trend_forecast(cohort, obs).select(*KEYS, pl.col("prediction").alias("trend"))
    out = fc.join(lv, on=KEYS, nulls_equal=True).join(tr, on=KEYS, nulls_equal=True)
    # Scored where every method has an answer (a value of the code was seen by the prediction time).
    return out.filter(pl.col("lvcf").is_not_null()).with_columns(
        pl.when(pl.col("dim").is_null()).then("code").otherwise(pl.lit("IMAGE (16 dims)")).alias("measure")
    )


def error_table(frame: pl.DataFrame) -> pl.DataFrame:
    def mae(col: str) -> pl.Expr:
        return (pl.col(col) - pl.col("value")).abs().mean()

    def rmse(col: str) -> pl.Expr:
        return ((pl.col(col) - pl.col("value")) ** 2).mean().sqrt()

    inside = (pl.col("value") >= pl.col("lower")) & (pl.col("value") <= pl.col("upper"))
    return (
        frame.group_by("measure")
        .agg(
            pl.len().alias("n"),
            mae("median").alias("mae_model"),
            mae("lvcf").alias("mae_lvcf"),
            mae("trend").alias("mae_trend"),
            rmse("mean").alias("rmse_model"),
            rmse("lvcf").alias("rmse_lvcf"),
            rmse("trend").alias("rmse_trend"),
            inside.mean().alias("coverage_80"),
        )
        .sort("measure")
    )


def truth_table(model: mt.TrajectoryModel, cohort: mt.datasets.SyntheticCohort) -> pl.DataFrame:
    at = [90.0, 365.25, 730.5, 1095.75]
    labs = [c for c in cohort.events["code"].unique().sort().to_list() if c.startswith("LAB//")]
    f = model.forecast(cohort, landmarks=LANDMARKS[:2], at=at, codes=labs)
    parts = []
    for code in labs:
        fc = f.filter(pl.col("code") == code)
        keys = fc.select("subject_id", "prediction_time").unique(maintain_order=True)
        tv = cohort.truth.future_values(keys["subject_id"], keys["prediction_time"], at, code=code)
        j = fc.join(tv.rename({"value": "truth"}), on=["subject_id", "prediction_time", "code", "target_days"])
        base = last_value_forecast(cohort, j.select(KEYS)).select(*KEYS, pl.col("prediction").alias("lvcf"))
        trend = linear_trend_forecast(cohort, j.select(KEYS)).select(*KEYS, pl.col("prediction").alias("trend"))
        parts.append(j.join(base, on=KEYS, nulls_equal=True).join(trend, on=KEYS, nulls_equal=True))
    frame = pl.concat(parts).filter(pl.col("lvcf").is_not_null())
    return (
        frame.group_by("code", "target_days")
        .agg(
            pl.len().alias("n"),
            (pl.col("mean") - pl.col("truth")).abs().mean().alias("mae_model"),
            (pl.col("lvcf") - pl.col("truth")).abs().mean().alias("mae_lvcf"),
            (pl.col("trend") - pl.col("truth")).abs().mean().alias("mae_trend"),
        )
        .sort("code", "target_days")
    )


def show(title: str, table: pl.DataFrame) -> None:
    print(f"\n{title}")
    rows = [[f"{v:.4g}" if isinstance(v, float) else v for v in row] for row in table.rows()]
    print(markdown_table(table.columns, rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-n", type=int, default=1000)
    parser.add_argument("--test-n", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    results: dict[str, Any] = {"machine": machine_info(), "git": git_state(), "args": vars(args)}

    t0 = time.perf_counter()
    pbc2 = mt.datasets.load_pbc2()
    model = mt.TrajectoryModel.from_config(REPO / "configs" / "pbc2.yaml", progress=False).fit(pbc2)
    table = error_table(scored_observations(model, pbc2, "held_out"))
    show("PBC2, held-out subjects (original units)", table)
    results["pbc2"] = {"errors": table.to_dicts(), "best_epoch": model.history["best_epoch"]}
    results["pbc2"]["seconds"] = time.perf_counter() - t0

    train = mt.datasets.make_synthetic(args.synthetic_n, seed=0)
    test = mt.datasets.make_synthetic(args.test_n, seed=1)  # independent subjects
    cfg = mt.TrajectoryConfig.from_yaml(REPO / "configs" / "synthetic.yaml")
    results["synthetic"] = {}
    for weight in (0.0, cfg.forecast_weight):
        t0 = time.perf_counter()
        model = mt.TrajectoryModel(
            cfg, use_notes=False, max_epochs=args.epochs, forecast_weight=weight, progress=False
        ).fit(train)
        errors = error_table(scored_observations(model, test, None))
        truth = truth_table(model, test)
        show(f"Synthetic (forecast_weight {weight}), independent test cohort: observed future values", errors)
        show(f"Synthetic (forecast_weight {weight}): error against the true future mean", truth)
        results["synthetic"][f"forecast_weight_{weight}"] = {
            "errors": errors.to_dicts(),
            "truth": truth.to_dicts(),
            "best_epoch": model.history["best_epoch"],
            "val_loss": model.history["val_loss"],
            "seconds": time.perf_counter() - t0,
        }
    path = write_json(REPO / "benchmarks" / "results" / "forecast.json", results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
