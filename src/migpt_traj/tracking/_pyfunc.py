"""The MLflow pyfunc flavour of a :class:`~migpt_traj.api.TrajectoryModel` (safetensors + JSON inside, no pickle of
weights): MEDS-style events in, cumulative-incidence risks out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import polars as pl
from mlflow.pyfunc import PythonModel

from migpt_traj.errors import ConfigError, SchemaError

__all__ = ["TrajectoryPyfunc", "events_frame", "synthetic_events"]

#: Artifact key under which the saved model directory travels with the MLflow model.
MODEL_ARTIFACT = "trajectory_model"
_EVENT_COLUMNS: dict[str, pl.DataType] = {
    "subject_id": pl.Int64(),
    "time": pl.Datetime("us"),
    "code": pl.String(),
    "numeric_value": pl.Float32(),
    "text_value": pl.String(),
}
_SENTINEL_TIME = dt.datetime(1900, 1, 1)


def events_frame(model_input: Any) -> pl.DataFrame:
    """A polars MEDS event frame from a pandas or polars frame (``subject_id, time, code`` required;
    ``numeric_value, text_value`` optional).

    Raises:
        SchemaError: a required column is missing.
    """
    frame = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
    missing = [c for c in ("subject_id", "time", "code") if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"The model input lacks column(s) {missing}; it needs MEDS events with subject_id, time, code "
            f"(and optionally numeric_value, text_value). It has {frame.columns}."
        )
    return frame.select(
        pl.col(c).cast(t) if c in frame.columns else pl.lit(None, dtype=t).alias(c) for c, t in _EVENT_COLUMNS.items()
    )


def synthetic_events(codes: Sequence[str], *, outcomes: Sequence[str]) -> pl.DataFrame:
    """A made-up two-subject event frame for the MLflow input example: no real subject, date or value.

    Subject ids 1 and 2 start on 1970-01-01 and have one row of each vocabulary code (value 0) a day apart; subject 1
    ends with the primary outcome, subject 2 with end of follow-up, both at day 400.
    """
    start = dt.datetime(1970, 1, 1)
    used = [c for c in codes if c not in outcomes][:5] or ["MEASUREMENT//example"]
    rows: list[dict[str, Any]] = []
    for sid, end_code in ((1, outcomes[0]), (2, "END_OF_FOLLOWUP")):
        rows += [
            {"subject_id": sid, "time": start + dt.timedelta(days=i), "code": c, "numeric_value": 0.0}
            for i, c in enumerate(used)
        ]
        rows.append({"subject_id": sid, "time": start + dt.timedelta(days=400), "code": end_code})
    return pl.DataFrame([{c: r.get(c) for c in _EVENT_COLUMNS} for r in rows], schema=_EVENT_COLUMNS, orient="row")


class TrajectoryPyfunc(PythonModel):
    """Pyfunc wrapper: loads the saved model (``model.safetensors`` + ``model.json``) and predicts risk.

    Input: a pandas (or polars) MEDS event frame ``subject_id, time, code[, numeric_value, text_value]``. Params:
    ``landmarks`` (days after each subject's time zero; default ``[0.0]``) and ``horizons`` (days; default the
    config's ``horizons_days``). Output: a pandas frame ``subject_id, prediction_time, landmark_days, event,
    horizon_days, risk`` (cumulative incidence in ``(t, t + h]``, higher = worse) for every subject at risk at a
    landmark (no outcome at or before it, follow-up beyond it), as :meth:`TrajectoryModel.predict_risk`.
    """

    def load_context(self, context: Any) -> None:
        from migpt_traj.api import TrajectoryModel

        self.model = TrajectoryModel.load(context.artifacts[MODEL_ARTIFACT])

    # No annotations on purpose: MLflow 3 reads predict's type hints as a schema and warns on anything but list[...];
    # the logged signature (inferred from the synthetic input example) is the schema.
    def predict(self, context, model_input, params=None):
        return predict_events(self.model, model_input, params=params).to_pandas()


def predict_events(model: Any, model_input: Any, *, params: dict[str, Any] | None = None) -> pl.DataFrame:
    """Risks from an event frame (see :class:`TrajectoryPyfunc`), as a polars frame."""
    from migpt_traj.data.cohort import Cohort

    params = params or {}
    landmarks = [float(x) for x in params.get("landmarks") or [0.0]]
    horizons = [float(x) for x in params.get("horizons") or model.config.horizons_days]
    events = events_frame(model_input)
    if events.height == 0:
        raise ConfigError("The model input has no events; give at least one MEDS event row per subject.")
    # Cohort.from_events requires each outcome code to occur; a sentinel subject carries the absent ones and is
    # dropped from the output (subjects never see each other's events).
    present = set(events["code"].unique().to_list())
    absent = [o for o in model.outcomes if o not in present]
    sentinel = int(events["subject_id"].cast(pl.Int64).max() or 0) + 1  # type: ignore[arg-type]
    if absent:
        extra = pl.DataFrame(
            {"subject_id": [sentinel] * len(absent), "time": [_SENTINEL_TIME] * len(absent), "code": absent},
            schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String},
        )
        events = pl.concat([events, extra], how="diagonal_relaxed")
    ids = events["subject_id"].unique().to_list()
    cohort = Cohort.from_events(events, outcomes=model.outcomes, splits=dict.fromkeys(ids, "held_out"))
    risk: pl.DataFrame = model.predict_risk(cohort, landmarks=landmarks, horizons=horizons)
    return risk.filter(pl.col("subject_id") != sentinel) if absent else risk
