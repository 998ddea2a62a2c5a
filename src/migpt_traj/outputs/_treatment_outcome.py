"""The outcome model of the treatment suggestions: the fitted model's representation, its linear stage refitted on
"no further start" follow-up, and subject-bootstrap replicates of that refit.

The fitted :class:`~migpt_traj.model.module.TrajectoryModule` gives, at every query, the standardised wide features
``x`` (last values, windowed means, a seen-flag per code — so per treatment started —, embeddings, age) and the
deep part of the log hazard (transformer head minus its baseline). Here the deep part is held fixed as an offset
and the linear stage (weights on ``x`` and per-bin baselines) is refitted by penalised maximum likelihood, the same
piecewise-exponential likelihood as stage 1 of the fit (:func:`migpt_traj.model.wide.fit_wide`), on train queries
whose follow-up is cut at the next treatment start. Replicates draw multinomial subject counts (all queries of a
subject move together) and refit from the full-data solution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from migpt_traj.data.datamodule import TokenDataset, collate_tokens
from migpt_traj.data.tensorize import TokenTable
from migpt_traj.model.module import TrajectoryModule
from migpt_traj.model.survival import cumulative_incidence, negative_log_likelihood

__all__ = ["LinearStage", "QueryFeatures", "bootstrap_stages", "fit_linear_stage", "query_features", "risks"]


@dataclass(frozen=True)
class QueryFeatures:
    """Per query of a token table: standardised wide features ``x (Q, F)`` and the deep offset ``(Q, K, J)``."""

    x: torch.Tensor
    offset: torch.Tensor


@dataclass(frozen=True)
class LinearStage:
    """Weights ``(F, K)`` and baseline log hazards ``(K, J)`` of one refit (per-day hazards, bins ``edges``)."""

    weight: torch.Tensor
    bias: torch.Tensor


def _batches(table: TokenTable, batch_size: int = 256) -> Iterator[dict[str, torch.Tensor]]:
    dataset = TokenDataset(table)
    order = np.argsort(table.lengths, kind="stable")
    for i in range(0, order.size, batch_size):
        yield collate_tokens(dataset, order[i : i + batch_size].tolist())


@torch.no_grad()  # not inference_mode: the features enter autograd-tracked refits
def query_features(module: TrajectoryModule, table: TokenTable, *, deep: bool = True) -> QueryFeatures:
    """Wide features and deep offsets of every query of ``table`` (eval mode, no gradients; zero offsets and no
    transformer pass when ``deep`` is False)."""
    module.eval()
    n_q = table.q_sample.size
    n_k, n_j = module.head.bias.shape
    x = torch.zeros(n_q, module.wide.in_features)
    offset = torch.zeros(n_q, n_k, n_j)
    for batch in _batches(table):
        rows = batch["q_row"]
        x[rows] = module.wide_input(batch)
        if deep:
            offset[rows] = module.head(module.backbone(batch)) - module.head.bias
    return QueryFeatures(x=x, offset=offset)


def _log_hazard(features: QueryFeatures, stage: LinearStage) -> torch.Tensor:
    return stage.bias + (features.x @ stage.weight).unsqueeze(-1) + features.offset


def fit_linear_stage(
    features: QueryFeatures,
    duration: torch.Tensor,
    cause: torch.Tensor,
    *,
    edges: torch.Tensor,
    start: LinearStage,
    penalty: float,
    weights: torch.Tensor | None = None,
    steps: int = 3,
) -> LinearStage:
    """Penalised (ridge on the weights, per-query mean scale) weighted maximum likelihood, L-BFGS from ``start``.

    Args:
        features: the labelled queries' features.
        duration, cause: labels (days; 0 censored, k = outcome k).
        edges: bin starts (days).
        start: initial weights and baselines.
        penalty: ridge penalty (the one the fit chose in stage 1).
        weights: per-query weights (bootstrap counts); None = 1.
        steps: L-BFGS restarts of up to 100 iterations each.
    """
    w = torch.ones_like(duration) if weights is None else weights
    total = w.sum().clamp(min=1.0)
    weight = start.weight.detach().clone().contiguous().requires_grad_(True)
    bias = start.bias.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=100, line_search_fn="strong_wolfe", tolerance_change=1e-10)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        nll = negative_log_likelihood(_log_hazard(features, LinearStage(weight, bias)), edges, duration, cause)
        loss = (w * nll).sum() / total + penalty * (weight**2).sum()
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return LinearStage(weight=weight.detach(), bias=bias.detach())


def bootstrap_stages(
    features: QueryFeatures,
    duration: torch.Tensor,
    cause: torch.Tensor,
    subject: np.ndarray,
    *,
    edges: torch.Tensor,
    full: LinearStage,
    penalty: float,
    n_replicates: int,
    seed: int,
) -> list[LinearStage]:
    """Refits on subject-level bootstrap resamples (multinomial counts over the distinct subjects)."""
    ids, inverse = np.unique(subject, return_inverse=True)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_replicates):
        counts = rng.multinomial(ids.size, np.full(ids.size, 1.0 / ids.size))
        w = torch.from_numpy(counts[inverse].astype(np.float32))
        out.append(
            fit_linear_stage(features, duration, cause, edges=edges, start=full, penalty=penalty, weights=w, steps=2)
        )
    return out


@torch.inference_mode()
def risks(
    features: QueryFeatures, stages: list[LinearStage], *, edges: torch.Tensor, horizon: float, cause: int
) -> np.ndarray:
    """``(Q, len(stages))`` cumulative incidence of outcome index ``cause`` (0-based) within ``horizon`` days."""
    tau = torch.tensor([horizon], dtype=torch.float32)
    cols = [cumulative_incidence(_log_hazard(features, s), edges, tau)[:, cause, 0] for s in stages]
    return torch.stack(cols, dim=1).numpy().astype(np.float64)
