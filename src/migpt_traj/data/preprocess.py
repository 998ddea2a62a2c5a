"""Everything fitted on the train split before tensorizing: vocabulary, value normalisers, embedding scalers.

Fitted only on train-split subjects (nothing from tuning or held-out subjects), and serialised to JSON.

Numeric values are normalised per code by their train-split empirical distribution function mapped to a standard
normal score (a quantile transform): robust to the skewed, heavy-tailed lab distributions of clinical data, and
monotone, so order is kept. Ties (binary signs, ordinal stages) get the mid-rank of their tied block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from scipy.special import ndtr, ndtri

from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError

__all__ = ["PAD_ID", "START_ID", "UNK_ID", "Preprocessor"]

PAD_ID = 0
UNK_ID = 1
START_ID = 2
_SPECIAL = ("<pad>", "<unk>", "<start>")
_N_QUANTILES = 101


@dataclass
class Preprocessor:
    """Train-split statistics used to turn events into model inputs.

    Attributes:
        codes: vocabulary; index = code id. Ids 0, 1, 2 are padding, unknown and the start token.
        quantiles: per measured code, ``_N_QUANTILES`` train-split quantiles of its numeric values.
        image_mean, image_std: per-dimension train statistics of image embeddings (empty if none).
        image_dim: length of image embeddings (0 if none).
        excluded_codes: codes never used as inputs (outcomes, end of follow-up, birth).
    """

    codes: list[str]
    quantiles: dict[str, list[float]]
    image_mean: list[float] = field(default_factory=list)
    image_std: list[float] = field(default_factory=list)
    image_dim: int = 0
    excluded_codes: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, cohort: Cohort, *, min_code_count: int = 1) -> Preprocessor:
        """Fit on the cohort's train split only.

        Raises:
            ConfigError: the train split is empty or ``min_code_count < 1``.
        """
        if min_code_count < 1:
            raise ConfigError(f"min_code_count must be >= 1; got {min_code_count}.")
        train_ids = cohort.splits.filter(pl.col("split") == "train")["subject_id"]
        if train_ids.len() == 0:
            raise ConfigError("The cohort's train split is empty; nothing to fit the preprocessor on.")
        conv = cohort.conventions
        excluded = sorted({*cohort.outcomes, conv.end_of_followup_code, conv.birth_code})
        ev = cohort.events.filter(pl.col("subject_id").is_in(train_ids.implode()) & ~pl.col("code").is_in(excluded))
        counts = ev.group_by("code").len().filter(pl.col("len") >= min_code_count).sort("code")
        codes = [*_SPECIAL, *counts["code"].to_list()]

        levels = np.linspace(0.0, 1.0, _N_QUANTILES).tolist()
        q = (
            ev.filter(pl.col("numeric_value").is_not_null())
            .group_by("code")
            .agg(
                [
                    pl.col("numeric_value").cast(pl.Float64).quantile(p, "linear").alias(f"q{i}")
                    for i, p in enumerate(levels)
                ]
            )
            .sort("code")
        )
        quantiles = {row[0]: [float(v) for v in row[1:]] for row in q.iter_rows()}

        image_mean: list[float] = []
        image_std: list[float] = []
        image_dim = 0
        if "embedding" in ev.columns:
            emb = ev.filter(pl.col("embedding").is_not_null())["embedding"]
            if emb.len():
                mat = np.asarray(emb.to_list(), dtype=np.float64)
                image_dim = int(mat.shape[1])
                image_mean = mat.mean(axis=0).tolist()
                image_std = np.maximum(mat.std(axis=0), 1e-6).tolist()
        return cls(
            codes=codes,
            quantiles=quantiles,
            image_mean=image_mean,
            image_std=image_std,
            image_dim=image_dim,
            excluded_codes=excluded,
        )

    # ------------------------------------------------------------------ transforms
    def code_frame(self) -> pl.DataFrame:
        """``code → code_id`` as a frame for joins."""
        return pl.DataFrame(
            {"code": self.codes, "code_id": np.arange(len(self.codes), dtype=np.int32)},
            schema={"code": pl.String, "code_id": pl.Int32},
        )

    def normalise_values(self, codes: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Normal scores of ``values`` under each code's train distribution (NaN where a value is missing).

        Args:
            codes: ``(n,)`` code strings (object array) of the events.
            values: ``(n,)`` float values, NaN = no value.

        Returns:
            ``(n,)`` float32 in [-3.1, 3.1] (0 for codes never measured in train), NaN where ``values`` is NaN.
        """
        out = np.full(values.shape, np.nan, dtype=np.float32)
        has = ~np.isnan(values)
        if not has.any():
            return out
        idx = np.flatnonzero(has)
        order = idx[np.argsort(codes[idx], kind="stable")]
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        ends = np.r_[starts[1:], order.size]
        levels = np.linspace(0.0, 1.0, _N_QUANTILES)
        for s, e in zip(starts, ends, strict=True):
            rows = order[s:e]
            grid = self.quantiles.get(str(sorted_codes[s]))
            if grid is None:
                out[rows] = 0.0
                continue
            out[rows] = _normal_score(values[rows], np.asarray(grid), levels)
        return out

    def denormalise_values(self, codes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalise_values`: normal scores back to each code's original units.

        The score's normal probability is mapped through the code's train quantile grid (linear between grid
        points), so ``denormalise_values(c, normalise_values(c, v)) == v`` for values inside the train range whose
        score is not clipped (levels 0.001 to 0.999); scores beyond ±3.1 map towards the train minimum / maximum.
        Codes never measured in train give NaN.

        Args:
            codes: ``(n,)`` code strings (object array).
            scores: ``(n,)`` float normal scores (NaN passes through).

        Returns:
            ``(n,)`` float64 values in the codes' units.
        """
        out = np.full(scores.shape, np.nan, dtype=np.float64)
        levels = np.linspace(0.0, 1.0, _N_QUANTILES)
        for code in np.unique(codes):
            grid = self.quantiles.get(str(code))
            if grid is None:
                continue
            rows = codes == code
            out[rows] = np.interp(ndtr(scores[rows].astype(np.float64)), levels, np.asarray(grid))
        out[np.isnan(scores)] = np.nan
        return out

    def denormalise_images(self, mat: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalise_images` (train mean and standard deviation), float64."""
        if self.image_dim == 0:
            return mat.astype(np.float64)
        return mat * np.asarray(self.image_std) + np.asarray(self.image_mean)

    def normalise_images(self, mat: np.ndarray) -> np.ndarray:
        """Standardise image embeddings with the train mean and standard deviation."""
        if self.image_dim == 0:
            return mat.astype(np.float32)
        return ((mat - np.asarray(self.image_mean)) / np.asarray(self.image_std)).astype(np.float32)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "codes": self.codes,
            "quantiles": self.quantiles,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "image_dim": self.image_dim,
            "excluded_codes": self.excluded_codes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessor:
        return cls(**data)


def _normal_score(values: np.ndarray, grid: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF on a quantile grid, then the standard normal quantile, clipped to ±3.1."""
    lo = np.searchsorted(grid, values, side="left")
    hi = np.searchsorted(grid, values, side="right")
    m = grid.size
    tied = hi > lo
    # Values equal to one or more grid points: the mean level of that tied block.
    p_tied = 0.5 * (levels[np.clip(lo, 0, m - 1)] + levels[np.clip(hi - 1, 0, m - 1)])
    # Values strictly between grid points: linear interpolation of the level.
    left = np.clip(lo - 1, 0, m - 1)
    right = np.clip(lo, 0, m - 1)
    span = grid[right] - grid[left]
    frac = np.where(span > 0, (values - grid[left]) / np.where(span > 0, span, 1.0), 0.5)
    p_between = levels[left] + frac * (levels[right] - levels[left])
    p = np.where(tied, p_tied, p_between)
    p = np.where(values < grid[0], 0.0, np.where(values > grid[-1], 1.0, p))
    eps = 0.5 / (m * 10)
    return np.clip(ndtri(np.clip(p, eps, 1 - eps)), -3.1, 3.1).astype(np.float32)
