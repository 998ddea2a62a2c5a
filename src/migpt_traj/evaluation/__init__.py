"""migpt_traj.evaluation: survival metrics with censoring and competing risks.

Durations are days from the prediction time (flat 1-D arrays); ``event`` codes are 0 = censored, 1..K = cause k;
``risk`` is the predicted cumulative incidence of the cause of interest by the horizon (higher = worse).
See :mod:`migpt_traj.evaluation.metrics` for the conventions (IPCW, ties, inclusivity).
"""

from migpt_traj.evaluation._km import StepFunction, aalen_johansen, censoring_survival, kaplan_meier
from migpt_traj.evaluation.metrics import (
    CalibrationResult,
    NetBenefitResult,
    brier_score,
    calibration,
    concordance_ipcw,
    cumulative_dynamic_auc,
    estimable_horizon,
    integrated_brier_score,
    net_benefit,
)

__all__ = [
    "CalibrationResult",
    "NetBenefitResult",
    "StepFunction",
    "aalen_johansen",
    "brier_score",
    "calibration",
    "censoring_survival",
    "concordance_ipcw",
    "cumulative_dynamic_auc",
    "estimable_horizon",
    "integrated_brier_score",
    "kaplan_meier",
    "net_benefit",
]

# Classical landmark baselines (Null / Cox / RSF) with the TrajectoryModel.predict_risk contract.
from migpt_traj.evaluation.baselines import LandmarkCox, LandmarkCoxTV, LandmarkRSF, NullModel

__all__ += ["LandmarkCox", "LandmarkCoxTV", "LandmarkRSF", "NullModel"]

# The cohort evaluation (TRIPOD+AI): evaluate → EvaluationReport (tables, HTML, JSON) with a leakage audit.
from migpt_traj.evaluation.harness import evaluate  # noqa: E402
from migpt_traj.evaluation.leakage import LeakageAudit, audit_leakage, scan_outcome_derived_codes  # noqa: E402
from migpt_traj.evaluation.report import EvaluationReport  # noqa: E402

__all__ += ["EvaluationReport", "LeakageAudit", "audit_leakage", "evaluate", "scan_outcome_derived_codes"]
