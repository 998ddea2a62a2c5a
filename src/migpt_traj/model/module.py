"""The LightningModule: backbone + competing-risk piecewise-exponential hazard head, trained by exact likelihood,
with an optional forecast decoder (model/forecast_head.py) trained jointly through an auxiliary loss on the observed
future values."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl_light
import numpy as np
import torch
from torch import nn

from migpt_traj.model.backbone import Backbone
from migpt_traj.model.forecast_head import (
    N_SCALE_BINS,
    ForecastHead,
    _Moments,
    channel_summary,
    future_targets,
    scale_bin,
)
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
    """Backbone + hazard head (+ forecast head). Loss: mean exact censored negative log-likelihood over labelled
    queries, plus ``forecast_weight`` times the mean Gaussian negative log-likelihood of observed future values
    (normalised scale) when a forecast head is trained.

    Forecast arguments: ``forecast_code_ids`` (code ids of the numeric measurements to forecast; ``None``: no forecast
    head), ``forecast_weight`` (weight of the auxiliary loss; 0: the head keeps its stage-1 linear fit),
    ``forecast_horizon_days`` (targets up to this many days after a query), ``forecast_targets_per_query`` (future
    values sampled per query and training step).
    """

    edges: torch.Tensor
    wide_mean: torch.Tensor
    wide_std: torch.Tensor
    channel_of_code: torch.Tensor

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
        forecast_code_ids: list[int] | None = None,
        forecast_weight: float = 0.0,
        forecast_horizon_days: float = 1095.75,
        forecast_targets_per_query: int = 8,
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
        # Forecast channels: the measurement codes, then the image embedding dimensions.
        lab_ids = list(forecast_code_ids or [])
        channel_of_code = torch.full((vocab_size,), -1, dtype=torch.long)
        channel_of_code[torch.tensor(lab_ids, dtype=torch.long)] = torch.arange(len(lab_ids))
        self.register_buffer("channel_of_code", channel_of_code, persistent=False)
        self.n_lab_channels = len(lab_ids)
        self.forecast_weight = forecast_weight
        self.forecast_horizon_days = forecast_horizon_days
        self.forecast_targets_per_query = forecast_targets_per_query
        n_channels = len(lab_ids) + image_dim
        self.forecast_head = (
            ForecastHead(d_model, n_channels) if forecast_code_ids is not None and n_channels > 0 else None
        )
        if self.forecast_head is not None and forecast_weight == 0:
            self.forecast_head.requires_grad_(False)  # not trained: no unused parameters under DDP

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
        return self._hazard_from_state(batch, self.backbone(batch))

    def _hazard_from_state(self, batch: dict[str, torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        wide = self.wide(self.wide_input(batch))  # (Q, K)
        return self.head(state) + wide.unsqueeze(-1)

    # ------------------------------------------------------------------ forecasts
    def _require_forecast_head(self) -> ForecastHead:
        if self.forecast_head is None:
            from migpt_traj.errors import ModelStateError

            raise ModelStateError("This module has no forecast head (built without forecast_code_ids).")
        return self.forecast_head

    def _forecast_nll(self, batch: dict[str, torch.Tensor], state: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Weighted mean Gaussian NLL of the observed future values after every query, and their total weight.

        Training samples ``forecast_targets_per_query`` values per query; evaluation uses them all (deterministic).
        """
        head = self._require_forecast_head()
        summary = channel_summary(batch, self.channel_of_code, self.n_lab_channels, self.image_dim)
        per_query = self.forecast_targets_per_query if self.training else None
        t = future_targets(
            batch,
            self.channel_of_code,
            self.n_lab_channels,
            self.image_dim,
            horizon_days=self.forecast_horizon_days,
            per_query=per_query,
        )
        mu, log_sigma = head(state, summary, t.q, t.ch, t.delta)
        nll = log_sigma + 0.5 * ((t.y - mu) * torch.exp(-log_sigma)) ** 2 + 0.5 * math.log(2 * math.pi)
        total = float(t.weight.sum())
        return (nll * t.weight).sum() / max(total, 1e-9), total

    @torch.no_grad()
    def fit_forecast(
        self,
        train: Iterable[dict[str, torch.Tensor]],
        tuning: Iterable[dict[str, torch.Tensor]] | None,
        *,
        seed: int = 0,
        per_query: int = 64,
    ) -> dict[str, Any]:
        """Stage 1 of the forecast head: closed-form per-channel ridge fit of the linear path (penalty and residual
        scale from the tuning split), from at most ``per_query`` seeded future values per query.

        Returns:
            ``{"penalties": [...], "train_rows": n, "tuning_rows": n}`` (rows weighted, an image study counts once).
        """
        if self.forecast_head is None:
            return {"penalties": [], "train_rows": 0.0, "tuning_rows": 0.0}
        head = self.forecast_head
        gen = torch.Generator().manual_seed(seed)

        def moments(batches: Iterable[dict[str, torch.Tensor]]) -> _Moments:
            acc = _Moments(head.n_channels, head.n_features)
            for batch in batches:
                summary = channel_summary(batch, self.channel_of_code, self.n_lab_channels, self.image_dim)
                t = future_targets(
                    batch,
                    self.channel_of_code,
                    self.n_lab_channels,
                    self.image_dim,
                    horizon_days=self.forecast_horizon_days,
                    per_query=per_query,
                    generator=gen,
                )
                x = summary.design(t.q, t.ch, t.delta / 365.25)
                cell = t.ch * N_SCALE_BINS + scale_bin(t.delta, summary.has[t.q, t.ch])
                acc.add(x, t.y, cell, t.weight)
            return acc

        train_m = moments(train)
        tuning_m = moments(tuning) if tuning is not None else None
        penalties = head.fit_linear(train_m, tuning_m)
        return {
            "penalties": penalties,
            "train_rows": float(train_m.n.sum()),
            "tuning_rows": float(tuning_m.n.sum()) if tuning_m is not None else 0.0,
        }

    def forecast(
        self, batch: dict[str, torch.Tensor], q: torch.Tensor, channel: torch.Tensor, delta_days: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log standard deviation ``(N,)`` (normalised scale) of ``channel[i]`` ``delta_days[i]`` days after
        query ``q[i]`` of the batch (as of that query's prediction time)."""
        head = self._require_forecast_head()
        state = self.backbone(batch)
        summary = channel_summary(batch, self.channel_of_code, self.n_lab_channels, self.image_dim)
        dev = state.device
        return head(state, summary, q.to(dev), channel.to(dev), delta_days.to(dev, torch.float32))

    def cif(self, batch: dict[str, torch.Tensor], horizons: torch.Tensor) -> torch.Tensor:
        """``(Q, K, H)`` cumulative incidence at ``horizons`` days after each query's prediction time."""
        return cumulative_incidence(self.log_hazard(batch), self.edges, horizons)

    def _loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        loss, n, _ = self._loss_parts(batch)
        return loss, n

    def _loss_parts(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, int, tuple[torch.Tensor, float] | None]:
        """Joint loss, labelled query count, and the forecast NLL with its pair weight (None when not trained)."""
        labelled = batch["q_cause"] >= 0
        state = self.backbone(batch)
        lh = self._hazard_from_state(batch, state)[labelled]
        duration = batch["q_duration"][labelled]
        cause = batch["q_cause"][labelled]
        nll = negative_log_likelihood(lh, self.edges, duration, cause)
        n = int(labelled.sum())
        forecast = None
        if self.forecast_head is not None and self.forecast_weight > 0:
            forecast = self._forecast_nll(batch, state)
        if n == 0:  # an empty batch contributes a zero that still carries the graph
            zero = lh.sum() * 0.0
            return (zero + forecast[0] * 0.0 if forecast is not None else zero), 0, forecast
        loss = nll.sum() / n
        if self.rank_weight > 0:
            loss = loss + self.rank_weight * ranking_loss(
                lh, self.edges, duration, cause, batch["q_sample"][labelled], sigma=self.rank_sigma
            )
        if forecast is not None:
            loss = loss + self.forecast_weight * forecast[0]
        return loss, n, forecast

    def _log_parts(self, stage: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss, n, forecast = self._loss_parts(batch)
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=max(n, 1), on_epoch=True, on_step=False)
        if forecast is not None and forecast[1] > 0:
            size = max(round(forecast[1]), 1)
            self.log(f"{stage}_forecast_loss", forecast[0], batch_size=size, on_epoch=True, on_step=False)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._log_parts("train", batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._log_parts("val", batch)

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
