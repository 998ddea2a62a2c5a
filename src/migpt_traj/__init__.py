"""migpt_traj: temporal patient-trajectory risk prediction.

Longitudinal labs, imaging embeddings and clinical notes feed a time-aware transformer with competing-risk
survival heads. See DESIGN.md for the data contract.

Example:
    >>> import migpt_traj as mt
    >>> cohort = mt.datasets.load_pbc2()
    >>> cohort.n_subjects
    312
"""

from migpt_traj import datasets, errors
from migpt_traj.api import TrajectoryModel
from migpt_traj.config import TrajectoryConfig
from migpt_traj.data import CodeConventions, Cohort

__version__ = "0.1.0"

__all__ = [
    "CodeConventions",
    "Cohort",
    "TrajectoryConfig",
    "TrajectoryModel",
    "__version__",
    "datasets",
    "errors",
]
