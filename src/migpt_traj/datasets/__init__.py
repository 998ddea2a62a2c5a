"""Bundled and simulated cohorts: the real Mayo PBC2 cohort and a multimodal simulator with known truth."""

from migpt_traj.datasets.pbc2 import load_pbc2
from migpt_traj.datasets.synthetic import (
    SIMULATOR_VERSION,
    SimulatorParams,
    SyntheticCohort,
    SyntheticTruth,
    make_synthetic,
    stream_synthetic,
)

__all__ = [
    "SIMULATOR_VERSION",
    "SimulatorParams",
    "SyntheticCohort",
    "SyntheticTruth",
    "load_pbc2",
    "make_synthetic",
    "stream_synthetic",
]
