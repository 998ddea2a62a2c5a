"""migpt_traj: temporal patient-trajectory risk prediction.

Longitudinal labs, imaging embeddings and clinical notes feed a time-aware transformer with competing-risk
survival heads. See DESIGN.md for the data contract.

The model layer (torch, Lightning) is imported on first use, so ``import migpt_traj`` stays light for data work.

Example:
    >>> import migpt_traj as mt
    >>> cohort = mt.datasets.load_pbc2()
    >>> cohort.n_subjects
    312
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from migpt_traj import datasets, errors
from migpt_traj.data import CodeConventions, Cohort

if TYPE_CHECKING:
    from migpt_traj import encoders, evaluation, imaging, outputs
    from migpt_traj.api import TrajectoryModel
    from migpt_traj.config import TrajectoryConfig
    from migpt_traj.evaluation import EvaluationReport, evaluate
    from migpt_traj.imaging import ImagingConfig, embed_images
    from migpt_traj.outputs import PatientState
    from migpt_traj.tracking import TrackedRun, track_fit, tune

__version__ = "0.1.0"

__all__ = [
    "CodeConventions",
    "Cohort",
    "EvaluationReport",
    "ImagingConfig",
    "PatientState",
    "TrackedRun",
    "TrajectoryConfig",
    "TrajectoryModel",
    "__version__",
    "datasets",
    "embed_images",
    "encoders",
    "errors",
    "evaluate",
    "evaluation",
    "imaging",
    "outputs",
    "track_fit",
    "tune",
]

_LAZY = {
    "TrajectoryModel": ("migpt_traj.api", "TrajectoryModel"),
    "TrajectoryConfig": ("migpt_traj.config", "TrajectoryConfig"),
    "encoders": ("migpt_traj.encoders", None),
    "evaluation": ("migpt_traj.evaluation", None),
    "evaluate": ("migpt_traj.evaluation", "evaluate"),
    "EvaluationReport": ("migpt_traj.evaluation", "EvaluationReport"),
    "TrackedRun": ("migpt_traj.tracking", "TrackedRun"),
    "track_fit": ("migpt_traj.tracking", "track_fit"),
    "tune": ("migpt_traj.tracking", "tune"),
    "imaging": ("migpt_traj.imaging", None),
    "ImagingConfig": ("migpt_traj.imaging", "ImagingConfig"),
    "embed_images": ("migpt_traj.imaging", "embed_images"),
    "outputs": ("migpt_traj.outputs", None),
    "PatientState": ("migpt_traj.outputs", "PatientState"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'migpt_traj' has no attribute {name!r}")
