"""Data layer: MEDS schema and I/O, the Cohort, as-of samples and tensors."""

from migpt_traj.data.cohort import SPLITS, Cohort, Split, days_to_duration, duration_to_days, seeded_split
from migpt_traj.data.meds import MedsTables, read_meds, write_meds
from migpt_traj.data.schema import (
    EVENT_SCHEMA,
    MODALITY_IDS,
    OPTIONAL_COLUMNS,
    CodeConventions,
    cast_to_schema,
    sort_events,
    validate_events,
)

__all__ = [
    "EVENT_SCHEMA",
    "MODALITY_IDS",
    "OPTIONAL_COLUMNS",
    "SPLITS",
    "CodeConventions",
    "Cohort",
    "MedsTables",
    "Split",
    "cast_to_schema",
    "days_to_duration",
    "duration_to_days",
    "read_meds",
    "seeded_split",
    "sort_events",
    "validate_events",
    "write_meds",
]
