"""User-facing outputs of a fitted model: forecasts, treatment suggestions and patient state summaries.

Each module turns model outputs into frames and frozen result objects; ``TrajectoryModel`` exposes them as thin
methods (``forecast``, ``suggest_treatments``, ``summarize``).
"""

from migpt_traj.outputs.summary import PatientState, summarize
from migpt_traj.outputs.treatments import TreatmentEstimates, estimate_treatments, suggest_treatments

__all__ = ["PatientState", "summarize"]
__all__ += ["TreatmentEstimates", "estimate_treatments", "suggest_treatments"]
