"""Data layer: MEDS schema and I/O, the Cohort, as-of samples and tensors."""

from migpt_traj.data.cohort import SPLITS, Cohort
from migpt_traj.data.schema import CodeConventions

__all__ = ["SPLITS", "CodeConventions", "Cohort"]
