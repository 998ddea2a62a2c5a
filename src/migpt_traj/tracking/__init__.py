"""migpt_traj.tracking: MLflow experiment tracking and Optuna tuning (both imported lazily on first use).

- :func:`track_fit`: fit inside an MLflow run; config, dataset counts, versions, curves, evaluation metrics with
  CIs, the HTML report and the model as a pyfunc (optionally registered under an alias). Nothing subject-level.
- :func:`tune`: resumable Optuna study over a YAML search space, objective on the tuning split only.
"""

from migpt_traj.tracking.mlflow_tracking import TrackedRun, default_tracking_uri, log_fit, log_report, track_fit
from migpt_traj.tracking.tuning import (
    ParamSpec,
    bundled_search_space_path,
    load_search_space,
    tune,
    tuning_objective,
)

__all__ = [
    "ParamSpec",
    "TrackedRun",
    "bundled_search_space_path",
    "default_tracking_uri",
    "load_search_space",
    "log_fit",
    "log_report",
    "track_fit",
    "tune",
    "tuning_objective",
]
