r"""Multimodal synthetic cohort with exact, versioned ground truth: :func:`make_synthetic`, :func:`stream_synthetic`.

The test bed for risk, forecasts, treatment effects under time-dependent confounding, imaging and notes. Every
constant below is a field of :class:`SimulatorParams` (defaults shown); ``SIMULATOR_VERSION`` changes whenever the
model or its random stream does. Inside the simulator time ``u`` is in years since entry (365.25 days); the API
speaks days.

Generative model
----------------
*Baseline.* Subtype ``G`` in {a, b, c} with P = (0.40, 0.35, 0.25); female ~ Bernoulli(0.55); age at entry
~ N(55, 10^2) clipped to [18, 95]; entry date uniform over [2010-01-01, 2016-01-01) (whole days).

*Latent state* z(u) = (z1, z2, z3), linear in time on each treatment segment::

    z1(u) = a1 + b1 u - delta[G, O] (u - s)_+      severity: a1 ~ N(mu_G, 0.7^2), mu = (-0.4, 0, 0.4),
                                                             b1 ~ N(nu_G, 0.15^2), nu = (0.10, 0.20, 0.30) / year
    z2(u) = a2 + b2 u                              imaging only: a2 ~ N(0, 1), b2 ~ N(0.05, 0.05^2)
    z3(u) = a3 + b3 u                              symptoms (notes only): a3 ~ N(0, 1), b3 ~ N(0, 0.1^2)

where ``s`` is the start time and ``O`` the option of the subject's treatment (no treatment: delta = 0).

*Treatment policy (time-dependent confounding).* Decisions happen only at scheduled reviews u = 1, 2, 3, ...
years. At each review, a subject who is untreated and event-free starts a treatment with probability::

    p(u) = sigmoid(-2 + gamma * 1.5 * (z1(u) - 0.5)),   and p(u) = 0 if gamma > 0 and z1(u) < 0,

``gamma = confounding`` (0: randomised, constant 0.12 per review; larger: sicker subjects treated more often,
and mild disease, z1 < 0, never treated). The option is drug_a for subtype a (drug_b is never given to subtype
a: a protocol exclusion) and drug_a / drug_b 50/50 for subtypes b and c. A treatment, once started, is kept: at
most one start per subject, never a switch.

*Heterogeneous effects* (subtype rows a, b, c; columns drug_a, drug_b)::

    delta (cut of the z1 slope per year):   a: 0.25, -0.05   b: 0.12, 0.12   c: 0.00, 0.25
    theta (immediate log HR on death):      a: -0.40, 0.20   b: -0.20, -0.20 c: 0.10, -0.40

so drug_a is best for subtype a, drug_b for c, and they are similar for b. Treatment reaches the competing
event only through z1.

*Competing hazards* (per year; age(u) = age at entry + u)::

    log h_death(u)      = -3.5 + 0.9 z1(u) + 0.5 z2(u) + 0.5 z3(u) + 0.3 (age(u) - 55) / 10 - 0.2 female
                          + theta[G, O] 1[u >= s]
    log h_transplant(u) = -4.1 + 0.6 z1(u) - 0.2 z3(u) - 0.3 (age(u) - 55) / 10

Both are piecewise log-linear in u; each cause's latent time is drawn by exact inversion of its cumulative
hazard along the subject's path and the first one is the event (``MEDS_DEATH``, primary; ``TRANSPLANT``,
competing). Censoring is independent: min(administrative end 2021-01-01 - entry, Exponential(0.05 / year)
dropout). Follow-up ends at min(event, censoring) with an ``END_OF_FOLLOWUP`` row.

*Visits.* Entry (u = 0), every review before the end of follow-up, and unscheduled visits from a Poisson process
with rate 0.4 + 1.6 sigmoid(1.5 (z1(u) - 0.5)) per year (more visits when sicker).

*Observations* at a visit at u (labs depend on z1 only, so z2 and z3 are invisible to them)::

    LAB//bilirubin = exp(0.7 z1) * LN              LN = exp(0.25 e - 0.25^2 / 2), mean one; missing 5 %
    LAB//albumin   = 3.8 - 0.3 z1 + 0.25 e                                              missing 15 %
    LAB//platelets = 250 exp(-0.2 z1) * exp(0.2 e - 0.2^2 / 2)                          missing 25 %
    LAB//sodium    = 139 + 2.5 e        (uninformative)                                 missing 20 %
    IMAGE//ct      embedding = b + W (z1, z2) + 0.5 e_16     (16-d, fixed W and b): entry always, reviews 50 %,
                   unscheduled 15 %; read available after Gamma(2, 1.5) days (mean 3)
    NOTE//progress text_value = "<opener> <symptom phrase> <plan>", the phrase from the level of
                   z3(u) + 0.3 e cut at (-0.8, 0, 0.8): "no complaints" ... "severe fatigue and jaundice";
                   entry and reviews always, unscheduled 50 %; available after Uniform(0.5, 5) days

with independent standard normal e. Labs, treatments and outcomes are available at their ``time``. Statics:
``SEX//female`` or ``SEX//male``, ``SUBTYPE//<G>`` (null time) and ``MEDS_BIRTH`` at entry - age.

Ground truth (``cohort.truth``, a :class:`SyntheticTruth`)
----------------------------------------------------------
Given the latent state at t (the subject's parameters and the treatment in force) and event-free at t::

    CIF_k(t, h) = integral_t^{t+h} h_k(u) S(u) / S(t) du,   S(u) = exp(-H_death(u) - H_transplant(u)).

*Natural course* (:meth:`SyntheticTruth.risk`): the future policy is random only through the review decisions,
so the future is an exact finite mixture: start option o at the j-th review after t with probability
prod_{l<j} (1 - p_l) p_j q_{G,o}, or no start in the window with prod_l (1 - p_l) (decisions are independent of
the event clocks, so the mixture weights need no conditioning on survival). No Monte Carlo. For each path the
cumulative hazards are closed form, so S is exact; the cumulative incidences split each interval of a
``grid_days`` grid (default 14 days, plus the horizons) in proportion to the exact cause-specific cumulative
hazards (error O(step^2), < 1e-5), and CIF_death + CIF_transplant + S = 1 to rounding.

*Counterfactual* (:meth:`SyntheticTruth.counterfactual_risk`): ``option`` starts at t (``"none"``: no new
treatment; a treatment in force continues) and nothing changes after: one deterministic path.

*Unsupported regions* (the observational policy never goes there, so estimates from the data cannot be
checked there and ``supported=False`` is the honest answer): drug_b in subtype a; any start while z1 < 0 when
``confounding > 0``; any start between reviews; any switch of treatment.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from migpt_traj.data.cohort import Cohort, Split, seeded_split
from migpt_traj.data.meds import CODES_FILE, DATASET_FILE, SPLITS_FILE
from migpt_traj.data.schema import CodeConventions
from migpt_traj.datasets._sim_generate import simulate_block
from migpt_traj.datasets._sim_params import CAUSES, SIMULATOR_VERSION, SimulatorParams
from migpt_traj.datasets._sim_truth import LATENT_FILE, SyntheticTruth
from migpt_traj.errors import ConfigError, DataReadError, ValueRangeError

__all__ = [
    "SIMULATOR_VERSION",
    "SimulatorParams",
    "SyntheticCohort",
    "SyntheticTruth",
    "make_synthetic",
    "stream_synthetic",
]

DATASET_NAME = "migpt_traj_synthetic"


class SyntheticCohort(Cohort):
    """A :class:`~migpt_traj.Cohort` from the simulator, with its ground truth in ``.truth``.

    Outcomes are ``("MEDS_DEATH", "TRANSPLANT")``: death is primary, transplant competes.
    """

    truth: SyntheticTruth

    @classmethod
    def from_cohort(cls, cohort: Cohort, truth: SyntheticTruth) -> SyntheticCohort:
        """Wrap an already validated cohort with its truth (no second validation)."""
        out = cls(
            events=cohort.events,
            splits=cohort.splits,
            outcomes=cohort.outcomes,
            conventions=cohort.conventions,
            metadata=cohort.metadata,
            codes=cohort._codes,
        )
        out.truth = truth
        return out

    @classmethod
    def from_meds(
        cls,
        root: str | Path,
        *,
        outcomes: Sequence[str] = CAUSES,
        conventions: CodeConventions | None = None,
        split_seed: int = 0,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    ) -> SyntheticCohort:
        """Read a root written by :func:`stream_synthetic` (or :meth:`to_meds`) together with its truth."""
        truth = SyntheticTruth.from_meds(root)
        cohort = Cohort.from_meds(
            root, outcomes=outcomes, conventions=conventions, split_seed=split_seed, split_fractions=split_fractions
        )
        return cls.from_cohort(cohort, truth)

    def subset(self, subject_ids: Iterable[int] | None = None, *, split: Split | None = None) -> SyntheticCohort:
        """As :meth:`Cohort.subset`, keeping ``.truth``."""
        return SyntheticCohort.from_cohort(super().subset(subject_ids, split=split), self.truth)

    def to_meds(self, root: str | Path, *, overwrite: bool = False, subjects_per_shard: int = 50_000) -> Path:
        """As :meth:`Cohort.to_meds`, plus the latent table so that :meth:`from_meds` restores ``.truth``."""
        root = super().to_meds(root, overwrite=overwrite, subjects_per_shard=subjects_per_shard)
        latent = self.truth.subjects.join(self.splits.select("subject_id"), on="subject_id", how="semi")
        latent.write_parquet(Path(root) / LATENT_FILE)
        return root


def _check(n_subjects: int, confounding: float, block_size: int) -> None:
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int | np.integer) or n_subjects < 1:
        raise ConfigError(f"'n_subjects' must be a positive integer; got {n_subjects!r}.")
    if not math.isfinite(confounding) or confounding < 0:
        raise ValueRangeError(
            f"'confounding' must be a finite number >= 0 (0 = randomised treatment); got {confounding!r}."
        )
    if block_size < 1:
        raise ConfigError(f"'subjects_per_shard' must be a positive integer; got {block_size!r}.")


def _blocks(
    n_subjects: int, *, seed: int, confounding: float, params: SimulatorParams, block_size: int
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """The one generator behind both entry points: blocks of ``block_size`` subjects, ids 1..n."""
    for block, first in enumerate(range(0, n_subjects, block_size)):
        n = min(block_size, n_subjects - first)
        yield simulate_block(seed=seed, block=block, n=n, first_id=first + 1, params=params, confounding=confounding)


def _metadata(n_subjects: int, *, seed: int, confounding: float, params: SimulatorParams, block: int) -> dict[str, Any]:
    return {
        "dataset_name": DATASET_NAME,
        "dataset_version": SIMULATOR_VERSION,
        "n_subjects": n_subjects,
        "outcomes": list(CAUSES),
        "simulator": {
            "version": SIMULATOR_VERSION,
            "seed": seed,
            "confounding": confounding,
            "subjects_per_shard": block,
            "params": params.to_dict(),
        },
    }


def _codes(params: SimulatorParams) -> pl.DataFrame:
    rows: list[tuple[str, str, list[str]]] = [
        ("MEDS_BIRTH", "Date of birth", []),
        ("SEX//female", "Sex: female (static)", ["SEX"]),
        ("SEX//male", "Sex: male (static)", ["SEX"]),
        *(
            (f"SUBTYPE//{g}", f"Disease subtype {g} (static; modifies treatment effects)", ["SUBTYPE"])
            for g in params.subtypes
        ),
        *((lab.code, f"Laboratory value ({lab.unit})", ["LAB"]) for lab in params.labs),
        (params.image_code, f"Imaging study with a {params.embedding_dim}-d embedding", ["IMAGE"]),
        (params.note_code, "Clinical progress note", ["NOTE"]),
        *((f"TREATMENT//{o}", f"Start of treatment {o}", ["TREATMENT"]) for o in params.options),
        ("MEDS_DEATH", "Death (primary outcome)", []),
        ("TRANSPLANT", "Transplant (competing outcome)", []),
        ("END_OF_FOLLOWUP", "End of follow-up (event or censoring)", []),
    ]
    return pl.DataFrame(
        {"code": [r[0] for r in rows], "description": [r[1] for r in rows], "parent_codes": [r[2] for r in rows]},
        schema={"code": pl.String, "description": pl.String, "parent_codes": pl.List(pl.String)},
    )


def make_synthetic(
    n_subjects: int = 2000,
    *,
    seed: int = 0,
    confounding: float = 1.0,
    volumes: bool = False,
    volume_dir: str | Path | None = None,
    params: SimulatorParams | None = None,
    grid_days: float = 14.0,
    block_size: int = 100_000,
) -> SyntheticCohort:
    """A validated synthetic cohort with exact ground truth in ``.truth`` (model: module docstring).

    Args:
        n_subjects: number of subjects (ids 1..n).
        seed: seed of everything random; the same (seed, params, confounding, block_size) gives the same cohort.
        confounding: strength of confounding by severity in the treatment policy (>= 0; 0 = randomised).
        volumes: also write a 32^3 NIfTI volume per imaging study (needs ``volume_dir``; slow, small cohorts).
        volume_dir: folder for the volumes; events then carry ``image_path``.
        params: simulator constants (defaults: :class:`SimulatorParams`).
        grid_days: integration step of the truth (days).
        block_size: subjects per generator block; equal to :func:`stream_synthetic`'s ``subjects_per_shard``
            the two give identical events.

    Returns:
        A :class:`SyntheticCohort` with outcomes ``("MEDS_DEATH", "TRANSPLANT")`` and a seeded 70/15/15
        subject split (train / tuning / held_out).

    Raises:
        ConfigError: a bad size, ``volumes=True`` without ``volume_dir``, or a cohort too small to hold both
            outcomes.
        ValueRangeError: a negative or non-finite ``confounding``.

    Example:
        >>> from migpt_traj.datasets.synthetic import make_synthetic
        >>> syn = make_synthetic(300, seed=0)
        >>> syn.outcomes
        ('MEDS_DEATH', 'TRANSPLANT')
        >>> sorted(syn.splits["split"].unique().to_list())
        ['held_out', 'train', 'tuning']
    """
    _check(n_subjects, confounding, block_size)
    if volumes and volume_dir is None:
        raise ConfigError("volumes=True needs 'volume_dir', the folder the NIfTI volumes are written to.")
    params = params or SimulatorParams()
    parts = list(_blocks(n_subjects, seed=seed, confounding=confounding, params=params, block_size=block_size))
    events = pl.concat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    latent = pl.concat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    missing = [c for c in CAUSES if events.filter(pl.col("code") == c).height == 0]
    if missing:
        raise ConfigError(
            f"A synthetic cohort of {n_subjects} subject(s) (seed {seed}) has no {missing[0]!r} event; use more "
            f"subjects (>= 100 is safe) so that both outcomes occur."
        )
    if volumes:
        from migpt_traj.datasets._sim_volumes import write_volumes

        events = write_volumes(events, latent, params, Path(str(volume_dir)), seed=seed)
    ids = latent["subject_id"]
    cohort = Cohort.from_events(
        events,
        outcomes=CAUSES,
        splits=seeded_split(ids, seed=seed),
        metadata=_metadata(n_subjects, seed=seed, confounding=confounding, params=params, block=block_size),
        codes=_codes(params),
        source=f"synthetic cohort (seed {seed})",
    )
    truth = SyntheticTruth(latent, params=params, confounding=confounding, grid_days=grid_days)
    return SyntheticCohort.from_cohort(cohort, truth)


def stream_synthetic(
    n_subjects: int,
    root: str | Path,
    *,
    seed: int = 0,
    subjects_per_shard: int = 100_000,
    confounding: float = 1.0,
    params: SimulatorParams | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic MEDS root shard by shard, in memory bounded by one shard.

    Writes ``data/NNNN.parquet`` (one per ``subjects_per_shard`` subjects), ``metadata/subject_splits.parquet``
    (seeded 70/15/15), ``metadata/codes.parquet``, ``metadata/dataset.json`` (with the simulator record) and
    ``metadata/synthetic_latent.parquet`` (the truth: :meth:`SyntheticCohort.from_meds` or
    :meth:`SyntheticTruth.from_meds` read it back). Events equal :func:`make_synthetic`'s for the same arguments.

    Raises:
        DataReadError: ``root/data`` already holds parquet files and ``overwrite`` is false.
        ConfigError, ValueRangeError: as :func:`make_synthetic`.
    """
    _check(n_subjects, confounding, subjects_per_shard)
    params = params or SimulatorParams()
    root = Path(root)
    data_dir = root / "data"
    if data_dir.is_dir() and any(data_dir.glob("*.parquet")):
        if not overwrite:
            raise DataReadError(
                f"MEDS root {str(root)!r} already holds data files; pass overwrite=True to replace them."
            )
        for old in data_dir.glob("*.parquet"):
            old.unlink()
    data_dir.mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    writer: pq.ParquetWriter | None = None
    try:
        blocks = _blocks(n_subjects, seed=seed, confounding=confounding, params=params, block_size=subjects_per_shard)
        for index, (events, latent) in enumerate(blocks):
            events.write_parquet(data_dir / f"{index:04d}.parquet")
            table = latent.to_arrow()
            writer = writer or pq.ParquetWriter(root / LATENT_FILE, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    ids = pl.Series("subject_id", np.arange(1, n_subjects + 1, dtype=np.int64))
    seeded_split(ids, seed=seed).write_parquet(root / SPLITS_FILE)
    _codes(params).write_parquet(root / CODES_FILE)
    meta = _metadata(n_subjects, seed=seed, confounding=confounding, params=params, block=subjects_per_shard)
    (root / DATASET_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return root
