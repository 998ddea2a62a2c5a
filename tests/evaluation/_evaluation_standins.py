"""Stand-in risk models with the ``predict_risk`` contract, for the evaluation-harness, leakage and report tests.

``AsOfLabModel`` is the correctly specified model of ``conftest.tiny_events``: the last ``LAB//a`` value available at
the prediction time gives the latent risk ``r = (a - 5) / 2`` (ignoring the slow drift), death hazard
``exp(1.5 r) / 400`` and transplant hazard ``1 / 4000`` per day, so the cumulative incidence of each outcome is
closed-form. ``peek="end_of_followup"`` makes it cheat by reading the subject's end of follow-up (a future fact), for
the leakage tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from migpt_traj.data.cohort import Cohort, duration_to_days


class AsOfLabModel:
    """Closed-form competing-exponential risk from the last ``code`` value available at the prediction time."""

    name = "AsOfLab"

    def __init__(self, *, code: str = "LAB//a", peek: str | None = None, only_primary: bool = False) -> None:
        self.code, self.peek, self.only_primary = code, peek, only_primary
        self.outcomes: tuple[str, ...] = ()
        self.fitted_on: Cohort | None = None

    def fit(self, cohort: Cohort) -> AsOfLabModel:
        self.outcomes, self.fitted_on = tuple(cohort.outcomes), cohort
        return self

    def predict_risk(
        self,
        cohort: Cohort,
        *,
        horizons: Sequence[float],
        landmarks: Sequence[float],
        split: Any = None,
    ) -> pl.DataFrame:
        lab = cohort.labels(landmarks=landmarks, split=split).select("subject_id", "prediction_time", "landmark_days")
        ev = cohort.events
        avail = pl.coalesce("available_time", "time") if "available_time" in ev.columns else pl.col("time")
        values = (
            ev.filter((pl.col("code") == self.code) & pl.col("time").is_not_null())
            .select("subject_id", _avail=avail, value=pl.col("numeric_value").cast(pl.Float64))
            .sort("_avail")
        )
        joined = lab.sort("prediction_time").join_asof(
            values,
            left_on="prediction_time",
            right_on="_avail",
            by="subject_id",
            strategy="backward",
            check_sortedness=False,  # both sides are sorted by time above
        )
        r = (joined["value"].fill_null(5.0).to_numpy() - 5.0) / 2.0
        if self.peek == "end_of_followup":
            end = joined.join(cohort.subjects.select("subject_id", "end_of_followup"), on="subject_id", how="left")
            left = end.select(duration_to_days(pl.col("end_of_followup") - pl.col("prediction_time"))).to_series()
            r = r - np.log(left.to_numpy() / 500.0)
        death, transplant = np.exp(1.5 * r) / 400.0, np.full(r.size, 1.0 / 4000.0)
        total = death + transplant
        frames = []
        outcomes = self.outcomes[:1] if self.only_primary else self.outcomes
        for k, outcome in enumerate(outcomes):
            rate = death if k == 0 else transplant
            for h in horizons:
                risk = rate / total * -np.expm1(-total * float(h))
                frames.append(
                    joined.select("subject_id", "prediction_time", "landmark_days").with_columns(
                        event=pl.lit(outcome), horizon_days=pl.lit(float(h)), risk=pl.Series(risk)
                    )
                )
        return pl.concat(frames).sort("subject_id", "prediction_time", "event", "horizon_days")


class Replay:
    """A "baseline" replaying another model's predictions (for paired-difference tests); records its fit cohort."""

    def __init__(self, model: Any, *, name: str = "replay") -> None:
        self.model, self.name = model, name
        self.fitted_on: Cohort | None = None

    def fit(self, cohort: Cohort) -> Replay:
        self.fitted_on = cohort
        return self

    def predict_risk(self, cohort: Cohort, **kwargs: Any) -> pl.DataFrame:
        return self.model.predict_risk(cohort, **kwargs)


def event_codes(events: pl.Series, outcomes: Sequence[str]) -> np.ndarray:
    """0 = censored, k = ``outcomes[k - 1]`` (written independently of the harness)."""
    return np.array([0 if e is None else list(outcomes).index(e) + 1 for e in events.to_list()], dtype=np.int64)
