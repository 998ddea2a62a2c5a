"""Bundled and simulated cohorts, ready as :class:`~migpt_traj.Cohort` objects without a download."""

from migpt_traj.datasets.pbc2 import load_pbc2

__all__ = ["load_pbc2"]
