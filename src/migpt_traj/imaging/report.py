"""What one fit or transform of the imaging path did: :class:`ImagingReport` (counts for the cohort description)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

__all__ = ["ImagingReport"]


@dataclass(frozen=True)
class ImagingReport:
    """What one fit or transform did. Counts are imaging studies (events with an ``image_path``).

    Attributes:
        stage: ``"fit"`` or ``"transform"``.
        encoder: the encoder kind; ``identity``: its weights hash (None for ``"precomputed"``).
        n_studies: studies considered (fit: the train subjects' studies used for training).
        n_embedded: studies given an embedding (transform) or trained on (fit).
        n_from_cache: of those, embeddings taken from the cache without reading the volume.
        n_read: volumes read from disk and transformed.
        n_hashed: studies whose bytes were hashed (the rest were known by their file stat).
        n_skipped: studies dropped because their file could not be read (``on_missing_image="skip"``);
            ``skipped`` lists them (``subject_id, time, code, image_path, reason``).
        n_embeddings_dropped: imaging events with a precomputed ``embedding`` but no ``image_path`` whose
            embedding was removed (it lives in another space than the encoder's).
        fitted_from_cache: the encoder's weights came from the cache (fit only).
        training_loss: epoch-mean training losses (fit only, empty when not trained).
        seconds: wall time.
    """

    stage: str
    encoder: str
    identity: str | None
    n_studies: int = 0
    n_embedded: int = 0
    n_from_cache: int = 0
    n_read: int = 0
    n_hashed: int = 0
    n_skipped: int = 0
    n_embeddings_dropped: int = 0
    fitted_from_cache: bool = False
    training_loss: tuple[float, ...] = ()
    seconds: float = 0.0
    skipped: pl.DataFrame = field(default_factory=pl.DataFrame)

    @property
    def volumes_per_second(self) -> float:
        """Embedded studies per second of wall time (cached ones included)."""
        return self.n_embedded / self.seconds if self.seconds > 0 else float("nan")

    def counts(self) -> dict[str, Any]:
        """The counts a cohort description shows: ``image_studies``, ``image_embedded``, ``image_from_cache``,
        ``image_skipped``, ``image_embeddings_dropped`` (plain ints, for one row of ``Cohort.describe``)."""
        return {
            "image_studies": self.n_studies,
            "image_embedded": self.n_embedded,
            "image_from_cache": self.n_from_cache,
            "image_skipped": self.n_skipped,
            "image_embeddings_dropped": self.n_embeddings_dropped,
        }
