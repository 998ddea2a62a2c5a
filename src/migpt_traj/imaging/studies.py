"""Imaging studies of a cohort (events with an ``image_path``), and what happens when one cannot be read.

A *study* is one ``IMAGE//<modality>`` event (by the cohort's :class:`~migpt_traj.data.schema.CodeConventions`)
whose ``image_path`` is set. Failures (a missing path, an unreadable or non-volume file) are collected per study
and resolved once by the ``on_missing_image`` policy: ``"error"`` raises an
:class:`~migpt_traj.errors.ImageReadError` naming the subject, time, code and path of the first failure (and how
many there are); ``"skip"`` issues one :class:`~migpt_traj.errors.MigptTrajWarning` and the studies are dropped.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError, ImageReadError, MigptTrajWarning
from migpt_traj.imaging.config import MissingImagePolicy

__all__ = ["StudyFailures", "image_studies", "read_each", "with_embeddings"]

#: Columns of :func:`image_studies` and of :attr:`StudyFailures.frame` (plus ``reason``).
STUDY_COLUMNS = ("_row", "subject_id", "time", "code", "image_path")


def image_studies(cohort: Cohort) -> pl.DataFrame:
    """``_row`` (position in ``cohort.events``), ``subject_id``, ``time``, ``code``, ``image_path`` of each study."""
    ev = cohort.events.with_row_index("_row")
    if "image_path" not in ev.columns:
        empty = pl.lit(None, dtype=pl.String).alias("image_path")
        return ev.select("_row", "subject_id", "time", "code", empty).clear()
    prefix = cohort.conventions.image_prefix
    return ev.filter(pl.col("code").str.starts_with(prefix) & pl.col("image_path").is_not_null()).select(STUDY_COLUMNS)


@dataclass
class StudyFailures:
    """Studies that could not be read, by row of a study frame, with the reason (the error's message)."""

    policy: MissingImagePolicy
    reasons: dict[int, str] = field(default_factory=dict)

    def add(self, row: int, err: BaseException) -> None:
        if row not in self.reasons:
            self.reasons[row] = f"{type(err).__name__}: {err}"

    def frame(self, studies: pl.DataFrame) -> pl.DataFrame:
        """The failed studies (``subject_id, time, code, image_path, reason``), in study order."""
        rows = pl.DataFrame(
            {"_row": list(self.reasons), "reason": list(self.reasons.values())},
            schema={"_row": pl.UInt32, "reason": pl.String},
        )
        return studies.join(rows, on="_row", how="inner").sort("_row").drop("_row")

    def resolve(self, studies: pl.DataFrame, *, stage: str, final: bool) -> None:
        """Raise (``"error"``, at once) or warn (``"skip"``, once, when ``final``) about the failures so far.

        Args:
            studies: the study frame the rows refer to.
            stage: what was being done, for the message (e.g. ``"embedding imaging studies"``).
            final: the last check of a call: the one that warns under ``"skip"``.
        """
        if not self.reasons or (self.policy == "skip" and not final):
            return
        failed = self.frame(studies)
        first = failed.row(0, named=True)
        where = (
            f"subject {first['subject_id']}, time {first['time']}, code {first['code']!r}: cannot read image_path "
            f"{first['image_path']!r} ({first['reason']})"
        )
        more = f" ({failed.height} such studies in all)" if failed.height > 1 else ""
        if self.policy == "error":
            raise ImageReadError(
                f"Imaging study of {where}{more} while {stage}. Fix or remove the path, or set the imaging option "
                f"on_missing_image='skip' to drop unreadable studies with a warning."
            )
        warnings.warn(
            f"Dropped {failed.height} imaging stud{'y' if failed.height == 1 else 'ies'} that could not be read "
            f"while {stage} (on_missing_image='skip'); first: {where}. They are listed in ImagingReport.skipped.",
            MigptTrajWarning,
            stacklevel=4,
        )


def read_each(
    rows: np.ndarray,
    paths: list[str],
    read: Callable[[str], Any],
    failures: StudyFailures,
) -> list[tuple[int, Any]]:
    """``(row, read(path))`` for each study that reads; a failure is recorded, not raised."""
    out: list[tuple[int, Any]] = []
    for row, path in zip(rows.tolist(), paths, strict=True):  # per-file I/O: one read per study is the work
        try:
            out.append((row, read(path)))
        except (OSError, ValueError) as err:  # VolumeReader's failures; anything else is a bug and propagates
            failures.add(row, err)
    return out


def with_embeddings(cohort: Cohort, embedded: pl.DataFrame, *, dropped: list[int], dim: int) -> tuple[Cohort, int]:
    """The cohort with new study embeddings, the ``dropped`` rows removed and foreign image embeddings nulled.

    Args:
        cohort: the cohort (any subclass; copied shallowly so a ``SyntheticCohort`` keeps ``.truth``).
        embedded: ``_row`` (position in ``cohort.events``) and ``_vec`` (list<float32>) of each embedded study.
        dropped: rows of studies that could not be read (``on_missing_image="skip"``).
        dim: the encoder's embedding length; any other embedding left in the events is an error.

    Returns:
        ``(cohort, n)``: ``n`` imaging events with a precomputed embedding but no ``image_path`` lost it (it
        lives in another space than the encoder's).

    Raises:
        ConfigError: a non-imaging event carries an embedding of another length than ``dim``.
    """
    ev = cohort.events.with_row_index("_row")
    if "embedding" not in ev.columns:
        ev = ev.with_columns(embedding=pl.lit(None, dtype=pl.List(pl.Float32)))
    is_image = pl.col("code").str.starts_with(cohort.conventions.image_prefix)
    has_path = pl.col("image_path").is_not_null() if "image_path" in ev.columns else pl.lit(False)
    foreign = is_image & ~has_path & pl.col("embedding").is_not_null()
    n_foreign = int(ev.select(foreign.sum()).item())
    ev = ev.join(embedded.select("_row", "_vec"), on="_row", how="left", maintain_order="left")
    ev = ev.with_columns(
        embedding=pl.when(pl.col("_vec").is_not_null())
        .then(pl.col("_vec"))
        .when(is_image)
        .then(pl.lit(None, dtype=pl.List(pl.Float32)))
        .otherwise(pl.col("embedding"))
    )
    other = ev.filter(pl.col("embedding").is_not_null() & (pl.col("embedding").list.len() != dim))
    if other.height:
        row = other.row(0, named=True)
        raise ConfigError(
            f"Event of subject {row['subject_id']} (code {row['code']!r}, not an imaging study) has an embedding "
            f"of length {len(row['embedding'])}; the image encoder writes length {dim}, and one model reads one "
            f"embedding length. Drop those embeddings or set embedding_dim={len(row['embedding'])}."
        )
    drop = pl.Series("_row", dropped, dtype=pl.UInt32)
    events = ev.filter(~pl.col("_row").is_in(drop.implode())).drop("_row", "_vec")
    out = copy.copy(cohort)  # keeps the subclass and its extras (a SyntheticCohort's truth)
    out.events = events
    if drop.len():
        out.subjects = out._subject_table()  # dropping events may move a subject's last event
    return out, n_foreign
