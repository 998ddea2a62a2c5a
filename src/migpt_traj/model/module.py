"""The LightningModule: backbone + competing-risk piecewise-exponential hazard head, trained by exact likelihood."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl_light
import numpy as np
import torch
from torch import nn

from migpt_traj.model.backbone import Backbone
from migpt_traj.model.survival import cumulative_incidence, negative_log_likelihood
from migpt_traj.model.wide import fit_wide, raw_wide_features, wide_moments, wide_width

__all__ = ["HazardHead", "TrajectoryModule", "bin_edges", "initial_log_hazard"]


def bin_edges(durations: np.ndarray, causes: np.ndarray, *, n_bins: int) -> np.ndarray:
    """Bin starts at quantiles of the train event times (days after the prediction time); ``edges[0] = 0``."""
    event_times = durations[causes > 0]
    if event_times.size < n_bins:
        event_times = durations
    qs = np.quantile(event_times, np.linspace(0, 1, n_bins + 1)[1:-1])
    edges = np.unique(np.concatenate([[0.0], qs[qs > 0]]))
    return edges.astype(np.float32)


def initial_log_hazard(durations: np.ndarray, causes: np.ndarray, edges: np.ndarray, n_causes: int) -> np.ndarray:
    """Empirical piecewise-constant log hazards (events / exposure per bin and cause) to initialise the head."""
    ed = torch.from_numpy(edges.astype(np.float64))
    from migpt_traj.model.survival import bin_exposure

    exposure = bin_exposure(torch.from_numpy(durations.astype(np.float64)), ed).sum(0).numpy()
    j = np.clip(np.searchsorted(edges, durations, side="right") - 1, 0, edges.size - 1)
    out = np.zeros((n_causes, edges.size))
    for k in range(1, n_causes + 1):
        events = np.bincount(j[causes == k], minlength=edges.size)
        out[k - 1] = np.log((events + 0.5) / np.maximum(exposure, 1e-6))
    return out.astype(np.float32)


def ranking_loss(
    log_hazard: torch.Tensor,
    edges: torch.Tensor,
    duration: torch.Tensor,
    cause: torch.Tensor,
    sample: torch.Tensor,
    *,
    sigma: float,
) -> torch.Tensor:
    """Dynamic-DeepHit's cause-specific ranking term, on the cumulative incidence from the hazards.

    For every acceptable pair (query ``i`` has cause ``k`` at ``T_i``, query ``j`` of another sequence is still
    event-free after ``T_i``), penalise ``exp(-(CIF_k,i(T_i) - CIF_k,j(T_i)) / sigma)``; averaged over pairs (0 when
    the batch has none). It sharpens discrimination; the likelihood keeps the risks calibrated.
    """
    events = (cause > 0).nonzero().squeeze(1)
    if events.numel() == 0:
        return log_hazard.sum() * 0.0
    cif = cumulative_incidence(log_hazard, edges, duration[events])  # (Q, K, E)
    k = cause[events] - 1
    cols = torch.arange(events.numel(), device=cif.device)
    f = cif[:, k, cols]  # (Q, E): CIF of event e's cause at event e's time, for every query
    own = f[events, cols]  # (E,)
    acceptable = (duration.unsqueeze(1) > duration[events].unsqueeze(0)) & (
        sample.unsqueeze(1) != sample[events].unsqueeze(0)
    )
    if not bool(acceptable.any()):
        return log_hazard.sum() * 0.0
    penalty = torch.exp(-(own.unsqueeze(0) - f) / sigma)
    return penalty[acceptable].mean()


class HazardHead(nn.Module):
    """State ``(Q, d)`` → log hazards ``(Q, K, J)``; a per-(cause, bin) bias holds the baseline hazard."""

    def __init__(self, d_model: int, n_causes: int, n_bins: int, *, rank: int = 8) -> None:
        super().__init__()
        self.n_causes = n_causes
        self.n_bins = n_bins
        # Low-rank state × bin factorisation (MOTOR): per-cause time profiles from a few shared components.
        self.proj = nn.Linear(d_model, n_causes * rank)
        self.bin_factors = nn.Parameter(torch.randn(n_causes, rank, n_bins) * 0.1)
        self.bias = nn.Parameter(torch.zeros(n_causes, n_bins))
        self.shift = nn.Linear(d_model, n_causes)
        # The deep terms start at exactly zero, so training starts from the fitted wide model (stage 1).
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)
        self.rank = rank

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        z = self.proj(state).view(-1, self.n_causes, self.rank)
        profile = torch.einsum("qkr,krj->qkj", z, self.bin_factors)
        return self.bias + self.shift(state).unsqueeze(-1) + profile


class TrajectoryModule(pl_light.LightningModule):
    """Backbone + hazard head. Loss: mean exact censored negative log-likelihood over labelled queries."""

    edges: torch.Tensor
    wide_mean: torch.Tensor
    wide_std: torch.Tensor

    def __init__(
        self,
        *,
        vocab_size: int,
        n_causes: int,
        edges: list[float],
        init_log_hazard: list[list[float]] | None = None,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        image_dim: int = 0,
        note_dim: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        rank_weight: float = 0.0,
        rank_sigma: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = Backbone(
            vocab_size=vocab_size,
            d_model=d_model,
            n_layers=n_layers,
            n_heads=n_heads,
            dropout=dropout,
            image_dim=image_dim,
            note_dim=note_dim,
        )
        self.head = HazardHead(d_model, n_causes, len(edges))
        # Wide path: a proportional (Cox-like) term in landmark-Cox features (model/wide.py), fitted to
        # convergence before minibatch training; the transformer adds what it cannot express.
        n_wide = wide_width(vocab_size, image_dim, note_dim)
        self.image_dim, self.note_dim = image_dim, note_dim
        self.wide = nn.Linear(n_wide, n_causes, bias=False)
        nn.init.zeros_(self.wide.weight)
        self.register_buffer("wide_mean", torch.zeros(n_wide))
        self.register_buffer("wide_std", torch.ones(n_wide))
        self.vocab_size = vocab_size
        self.register_buffer("edges", torch.tensor(edges, dtype=torch.float32))
        if init_log_hazard is not None:
            with torch.no_grad():
                self.head.bias.copy_(torch.tensor(init_log_hazard, dtype=torch.float32))
        self.lr = lr
        self.weight_decay = weight_decay
        self.rank_weight = rank_weight
        self.rank_sigma = rank_sigma

    def wide_input(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Standardised wide features ``(Q, 2V + 2)``; unknown age sits at the train mean (0)."""
        x = (
            raw_wide_features(batch, self.vocab_size, image_dim=self.image_dim, note_dim=self.note_dim) - self.wide_mean
        ) / self.wide_std
        return torch.nan_to_num(x, nan=0.0)

    @torch.no_grad()
    def _wide_rows(
        self, batches: Iterable[dict[str, torch.Tensor]], *, keep: float, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs, ds, cs = [], [], []
        for batch in batches:
            rows = (batch["q_cause"] >= 0) & (torch.rand(batch["q_cause"].shape, generator=generator) < keep)
            xs.append(raw_wide_features(batch, self.vocab_size, image_dim=self.image_dim, note_dim=self.note_dim)[rows])
            ds.append(batch["q_duration"][rows])
            cs.append(batch["q_cause"][rows])
        return torch.cat(xs), torch.cat(ds), torch.cat(cs)

    def fit_wide(
        self,
        train: Iterable[dict[str, torch.Tensor]],
        tuning: Iterable[dict[str, torch.Tensor]] | None,
        *,
        n_queries: int,
        seed: int = 0,
        max_values: int = 50_000_000,
    ) -> float:
        """Stage 1: standardise the wide features on the train queries and fit the wide weights and baseline
        hazards to convergence (ridge penalty chosen on the tuning queries); the deep terms stay at zero.

        Args:
            train, tuning: batches of the two splits (every labelled query is used, or a seeded random share
                so that at most ``max_values`` feature values are held in memory).
            n_queries: number of labelled train queries (sets that share).

        Returns:
            The chosen ridge penalty.
        """
        keep = min(1.0, max_values / max(1, n_queries * self.wide.in_features))
        gen = torch.Generator().manual_seed(seed)
        x, d, c = self._wide_rows(train, keep=keep, generator=gen)
        mean, std = wide_moments(x)
        self.wide_mean.copy_(mean)
        self.wide_std.copy_(std)

        def scaled(
            rows: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return (torch.nan_to_num((rows[0] - mean) / std, nan=0.0), rows[1], rows[2])

        held = scaled(self._wide_rows(tuning, keep=keep, generator=gen)) if tuning is not None else None
        weight, bias, penalty = fit_wide(
            scaled((x, d, c)),
            held,
            bias=self.head.bias.detach(),
            edges=self.edges,
        )
        with torch.no_grad():
            self.wide.weight.copy_(weight.T)
            self.head.bias.copy_(bias)
        return penalty

    def log_hazard(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(Q, K, J)`` log hazards per day at every query of the batch."""
        wide = self.wide(self.wide_input(batch))  # (Q, K)
        return self.head(self.backbone(batch)) + wide.unsqueeze(-1)

    def cif(self, batch: dict[str, torch.Tensor], horizons: torch.Tensor) -> torch.Tensor:
        """``(Q, K, H)`` cumulative incidence at ``horizons`` days after each query's prediction time."""
        return cumulative_incidence(self.log_hazard(batch), self.edges, horizons)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        labelled = batch["q_cause"] >= 0
        lh = self.log_hazard(batch)[labelled]
        duration = batch["q_duration"][labelled]
        cause = batch["q_cause"][labelled]
        nll = negative_log_likelihood(lh, self.edges, duration, cause)
        n = int(labelled.sum())
        if n == 0:  # an empty batch contributes a zero that still carries the graph
            return lh.sum() * 0.0, 0
        loss = nll.sum() / n
        if self.rank_weight > 0:
            loss = loss + self.rank_weight * ranking_loss(
                lh, self.edges, duration, cause, batch["q_sample"][labelled], sigma=self.rank_sigma
            )
        return loss, n

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=max(n, 1), on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, n = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True, batch_size=max(n, 1), on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self) -> Any:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.named_parameters():
            # The wide weights keep the ridge penalty chosen in stage 1, not a second (decoupled) one.
            (no_decay if p.ndim < 2 or "bias" in name or "norm" in name or name.startswith("wide.") else decay).append(
                p
            )
        return torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
