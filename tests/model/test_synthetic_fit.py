"""End-to-end quality on the simulator: the model ranks outcomes better than chance, and imaging + notes help.

The model is fitted on one simulated cohort and scored on an independent one from the same generative model
(another seed), so the comparison is not at the mercy of a small held-out split.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import migpt_traj as mt
from migpt_traj.config import bundled_config_path
from migpt_traj.evaluation import cumulative_dynamic_auc

pytestmark = pytest.mark.slow

LANDMARKS = [365.25, 1095.75]
HORIZON = 1095.75
CODES = {"MEDS_DEATH": 1, "TRANSPLANT": 2}


def _auc(test: mt.Cohort, train: mt.Cohort, risk: pl.DataFrame) -> float:
    values = []
    for lm in LANDMARKS:
        lab = test.labels(landmarks=[lm])
        ref = train.labels(landmarks=[lm], split="train")
        r = risk.filter(
            (pl.col("event") == "MEDS_DEATH") & (pl.col("landmark_days") == lm) & (pl.col("horizon_days") == HORIZON)
        )
        j = lab.join(r.select("subject_id", "risk"), on="subject_id")
        values.append(
            cumulative_dynamic_auc(
                j["duration_days"].to_numpy(),
                j["event"].replace_strict(CODES, default=0, return_dtype=pl.Int64).to_numpy(),
                j["risk"].to_numpy(),
                HORIZON,
                train_time=ref["duration_days"].to_numpy(),
                train_event=ref["event"].replace_strict(CODES, default=0, return_dtype=pl.Int64).to_numpy(),
            )
        )
    return float(np.mean(values))


def test_imaging_and_notes_improve_on_labs_only() -> None:
    train = mt.datasets.make_synthetic(900, seed=3)
    test = mt.datasets.make_synthetic(1200, seed=4)
    settings = {"d_model": 32, "n_layers": 1, "max_epochs": 12, "patience": 4, "progress": False, "seed": 0}
    scores = {}
    for name, extra in {"labs": {"use_notes": False, "use_images": False}, "all": {}}.items():
        model = mt.TrajectoryModel.from_config(bundled_config_path("synthetic"), **settings, **extra).fit(train)
        scores[name] = _auc(test, train, model.predict_risk(test, landmarks=LANDMARKS, horizons=[HORIZON]))
    lab = test.labels(landmarks=LANDMARKS)
    truth = test.truth.risk(lab["subject_id"], lab["prediction_time"], [HORIZON], event="MEDS_DEATH").join(
        lab.select("subject_id", "prediction_time", "landmark_days"), on=["subject_id", "prediction_time"]
    )
    scores["truth"] = _auc(test, train, truth.with_columns(event=pl.lit("MEDS_DEATH")))
    assert scores["labs"] > 0.6, scores
    assert scores["all"] > scores["labs"] + 0.02, scores
    assert scores["all"] < scores["truth"] + 0.02, scores  # nobody beats the data-generating risk by much
