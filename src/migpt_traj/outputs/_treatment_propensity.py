"""Propensity of each treatment option at a decision time: a ridge multinomial logistic model (torch, L-BFGS).

*Decision points* (general MEDS data, no schedule assumed): every training query time ``t`` of a train subject
(time zero, each availability time of an input, the fit's seeded extra times). Its label is the option whose
first start falls in ``(t, t + window]`` after the treatment rows are moved 1 µs later (so a start at exactly
``t`` counts, as the decision taken at ``t``), the earliest if several, else ``"none"``. Its features are the
model's standardised wide features as of ``t`` on that shifted history: the labs, images and notes seen at the
visit at ``t`` and every treatment started before ``t`` (a subject already on treatment then learns its own,
usually low, propensity of a new start), never the decision itself.

Only train subjects fit the weights; the tuning subjects' decision points pick the ridge penalty by log loss
(hyperparameters only, as everywhere in migpt_traj); held-out subjects are never used. Classes with no train start
get propensity exactly 0 (no data support at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from migpt_traj.data.cohort import DAY_US

__all__ = ["PropensityModel", "decision_labels", "fit_propensity"]


@dataclass(frozen=True)
class PropensityModel:
    """Softmax weights over classes ``(none, options...)``; ``starts`` = train decision points per class."""

    weight: torch.Tensor  # (F, C)
    bias: torch.Tensor  # (C,)
    present: np.ndarray  # (C,) bool: the class has at least one train start
    starts: np.ndarray  # (C,) int64
    penalty: float

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> np.ndarray:
        """``(N, C)`` probabilities; absent classes are exactly 0."""
        logits = x @ self.weight + self.bias
        logits[:, ~torch.from_numpy(self.present)] = -torch.inf
        return torch.softmax(logits, dim=1).numpy().astype(np.float64)


def decision_labels(
    queries: pl.DataFrame, starts: pl.DataFrame, codes: list[str | None], *, window_days: float
) -> np.ndarray:
    """Class index per decision point: the first listed option started in ``(t, t + window]``, else 0 (none).

    Args:
        queries: ``subject_id, prediction_time`` (any order).
        starts: ``subject_id, code, start_time`` first starts on the shifted clock.
        codes: class codes, ``None`` (none) first.
    """
    index = {c: i for i, c in enumerate(codes) if c is not None}
    s = starts.filter(pl.col("code").is_in(list(index))).with_columns(
        cls=pl.col("code").replace_strict(index, return_dtype=pl.Int64)
    )
    q = queries.select("subject_id", pl.col("prediction_time").cast(pl.Datetime("us"))).with_row_index("_q")
    window = pl.duration(microseconds=round(window_days * DAY_US))
    hit = (
        q.join(s, on="subject_id", how="inner")
        .filter(
            (pl.col("start_time") > pl.col("prediction_time"))
            & (pl.col("start_time") <= pl.col("prediction_time") + window)
        )
        .sort("start_time", "cls")
        .group_by("_q")
        .agg(pl.col("cls").first())
    )
    out = np.zeros(q.height, dtype=np.int64)
    out[hit["_q"].to_numpy()] = hit["cls"].to_numpy()
    return out


def _fit(x: torch.Tensor, y: torch.Tensor, present: torch.Tensor, penalty: float) -> tuple[torch.Tensor, torch.Tensor]:
    n_class = present.numel()
    weight = torch.zeros(x.shape[1], n_class, requires_grad=True)
    prior = torch.bincount(y, minlength=n_class).float().clamp(min=0.5)
    bias = torch.log(prior / prior.sum()).requires_grad_(True)
    mask = torch.where(present, 0.0, -torch.inf)
    opt = torch.optim.LBFGS([weight, bias], max_iter=100, line_search_fn="strong_wolfe", tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ (weight * present) + torch.where(present, bias, 0.0) + mask
        loss = torch.nn.functional.cross_entropy(logits, y) + penalty * (weight**2).sum()
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    return (weight * present).detach(), torch.where(present, bias, 0.0).detach()


def fit_propensity(
    x: torch.Tensor,
    y: np.ndarray,
    n_class: int,
    *,
    tuning: tuple[torch.Tensor, np.ndarray] | None,
    penalties: tuple[float, ...] = (1e-3, 1e-2, 1e-1),
) -> PropensityModel:
    """Fit on train decision points ``(x, y)``; the penalty with the lowest tuning log loss (the middle one
    without tuning points)."""
    starts = np.bincount(y, minlength=n_class).astype(np.int64)
    present_np = starts > 0
    present = torch.from_numpy(present_np)
    yt = torch.from_numpy(y)
    candidates = penalties if tuning is not None and tuning[1].size else (penalties[len(penalties) // 2],)
    best: tuple[float, torch.Tensor, torch.Tensor, float] | None = None
    for l2 in candidates:
        weight, bias = _fit(x, yt, present, l2)
        score = 0.0
        if len(candidates) > 1 and tuning is not None:
            model = PropensityModel(weight, bias, present_np, starts, l2)
            p = model.predict(tuning[0])[np.arange(tuning[1].size), tuning[1]]
            score = float(-np.log(np.clip(p, 1e-12, 1.0)).mean())
        if best is None or score < best[0]:
            best = (score, weight, bias, l2)
    assert best is not None
    return PropensityModel(best[1], best[2], present_np, starts, best[3])
