"""Continuous-time forecast decoder: the value of a measurement (or an image-embedding dimension) ``delta`` days
after a prediction time, as a Gaussian on the preprocessor's normalised scale.

A *channel* is one forecast target: every numeric measurement code of the train vocabulary (its normal score, see
:mod:`migpt_traj.data.preprocess`), then every dimension of the standardised image embedding. At a query (prediction
time ``t``), each channel is summarised from the tokens visible at ``t`` only (the backbone's as-of rule): seen at
all, last value, ``log(1 + years since it)``, an exponentially weighted mean (time constant one year: a smooth
window mean), the all-time mean, the least-squares slope per year and ``log(1 + count)``.

Two paths, as for the hazards (model/wide.py):

* **linear** (stage 1, fitted to convergence in closed form): per channel, a ridge regression of the future value on
  the channel's summary, its products with ``delta`` (years) and the as-of weighted means of every other channel
  and age (penalty per channel chosen on the tuning split); the scale is a per-(channel, horizon bin, seen-before)
  residual standard deviation of the train rows (degrees-of-freedom corrected). Last value carried forward and the
  patient's linear trend (on the normalised scale) are special cases of this regression.
* **deep** (stage 2, trained jointly with the survival head, :meth:`TrajectoryModule._loss`): an MLP of the
  backbone state at ``t``, a channel embedding, sinusoidal features of ``delta`` and the channel summary adds to the
  mean and the log scale. Its last layer starts at zero, so training starts from the linear forecast.

Training targets are the observed values *after* ``t`` of the same training sequence (tokens past ``q_visible``
with event time in ``(t, t + horizon]``): they are only ever targets, never inputs, so the forecast at ``t`` still
depends on what was available at ``t`` alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from migpt_traj.model.backbone import SinusoidalDays

__all__ = ["N_SCALE_BINS", "ChannelSummary", "ForecastHead", "ForecastTargets", "channel_summary", "future_targets"]

DAYS_PER_YEAR = 365.25
SCALE_EDGES_DAYS = (30.0, 91.3125, 182.625, 365.25, 730.5)  # horizon bins of the scale: <1m, <3m, <6m, <1y, <2y, more
N_SCALE_BINS = 2 * (len(SCALE_EDGES_DAYS) + 1)  # x (never seen, seen before)
N_SIMPLE = 13
_EW_TAU_YEARS = 1.0
_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
_SCALE_PRIOR_ROWS = 10.0


@dataclass
class ChannelSummary:
    """As-of summary of every channel at every query, each ``(Q, C)`` float32 (0 where never seen)."""

    has: torch.Tensor
    last: torch.Tensor
    since: torch.Tensor  # log(1 + years since the last value)
    ew_mean: torch.Tensor
    mean: torch.Tensor
    slope: torch.Tensor  # per year, clipped to ±3
    log_count: torch.Tensor
    age: torch.Tensor  # (Q,) (age - 55) / 10, 0 unknown

    def simple(self, q: torch.Tensor, ch: torch.Tensor, years: torch.Tensor) -> torch.Tensor:
        """``(N, N_SIMPLE)`` per-pair features of channel ``ch`` at query ``q``, ``years`` ahead."""
        has, last, since = self.has[q, ch], self.last[q, ch], self.since[q, ch]
        ewm, mean, slope = self.ew_mean[q, ch], self.mean[q, ch], self.slope[q, ch]
        one = torch.ones_like(years)
        cols = [one, years, has, last, last * years, ewm, ewm * years, mean, slope * years, since, since * years]
        return torch.stack([*cols, self.log_count[q, ch], has * years], dim=1)

    def context(self, q: torch.Tensor) -> torch.Tensor:
        """``(N, 2C + 1)`` query-level features: weighted means and seen flags of every channel, age."""
        return torch.cat([self.ew_mean[q], self.has[q], self.age[q].unsqueeze(1)], dim=1)

    def design(self, q: torch.Tensor, ch: torch.Tensor, years: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.simple(q, ch, years), self.context(q)], dim=1)


@dataclass
class ForecastTargets:
    """Observed future values: query ``q``, channel ``ch``, ``delta`` days after the query, value ``y`` (normalised)
    and a weight (1 per measurement; ``1 / image_dim`` per image dimension, so each study counts once)."""

    q: torch.Tensor
    ch: torch.Tensor
    delta: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor


def _observations(
    batch: dict[str, torch.Tensor], channel_of_code: torch.Tensor, n_lab: int, image_dim: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token and channel: observed mask ``(B, L, C)`` and value ``(B, L, C)`` (normalised)."""
    code = batch["code_id"]
    timed = torch.isfinite(batch["avail_days"])
    lab = channel_of_code[code]  # (B, L), -1 = not a forecast channel
    lab_obs = (lab >= 0) & (batch["has_value"] > 0) & timed
    parts_m = [nn.functional.one_hot(lab.clamp(min=0), max(n_lab, 1))[..., :n_lab].bool() & lab_obs.unsqueeze(-1)]
    parts_x = [batch["value"].unsqueeze(-1).expand(*code.shape, n_lab)]
    if image_dim:
        img_obs = (batch["has_image"] > 0) & timed
        parts_m.append(img_obs.unsqueeze(-1).expand(*code.shape, image_dim))
        parts_x.append(batch["image"][..., :image_dim])
    return torch.cat(parts_m, dim=-1), torch.cat(parts_x, dim=-1)


def channel_summary(
    batch: dict[str, torch.Tensor], channel_of_code: torch.Tensor, n_lab: int, image_dim: int
) -> ChannelSummary:
    """Summaries of every channel from the tokens visible at each query (prefix sums, float64 inside).

    Args:
        channel_of_code: ``(V,)`` channel of each code id (``-1``: not forecast); channels ``0 .. n_lab - 1``.
        n_lab: number of measurement channels; image dimensions follow them.
    """
    observed, x = _observations(batch, channel_of_code, n_lab, image_dim)
    m = observed.double()
    x = x.double() * m
    t = (batch["time_days"].double() / DAYS_PER_YEAR).unsqueeze(-1)  # (B, L, 1)
    t_max = torch.where(m > 0, t, -math.inf).amax(dim=(1, 2), keepdim=True).clamp(min=0.0)
    w = torch.exp((t - t_max) / _EW_TAU_YEARS) * m
    sums = torch.stack([m, x, m * t, m * t * t, x * t, w, w * x], dim=0).cumsum(dim=2)
    qs, at = batch["q_sample"], (batch["q_visible"] - 1).clamp(min=0)
    n, s1, st, stt, stx, sw, swx = sums[:, qs, at]  # each (Q, C)
    pos = torch.arange(m.shape[1], device=m.device).view(1, -1, 1)
    last_pos = torch.where(observed, pos, -1).cummax(dim=1).values[qs, at]  # (Q, C)
    has = last_pos >= 0
    cols = torch.arange(m.shape[2], device=m.device).unsqueeze(0)
    last = x[qs.unsqueeze(1), last_pos.clamp(min=0), cols]
    last_time = batch["time_days"][qs.unsqueeze(1), last_pos.clamp(min=0)].double()
    since = ((batch["q_days"].double().unsqueeze(1) - last_time) / DAYS_PER_YEAR).clamp(min=0.0)
    count = n.clamp(min=1.0)
    var_t = stt / count - (st / count) ** 2
    slope = torch.where(
        (n >= 2) & (var_t > (30.0 / DAYS_PER_YEAR) ** 2),
        (stx / count - st * s1 / count**2) / var_t.clamp(min=1e-9),
        0.0,
    ).clamp(-3.0, 3.0)
    age = batch["q_age_years"].double()
    zero = torch.zeros_like(last)
    return ChannelSummary(
        has=has.float(),
        last=torch.where(has, last, zero).float(),
        since=torch.where(has, torch.log1p(since), zero).float(),
        ew_mean=torch.where(has, swx / sw.clamp(min=1e-300), zero).float(),
        mean=torch.where(has, s1 / count, zero).float(),
        slope=slope.float(),
        log_count=torch.log1p(n).float(),
        age=torch.where(torch.isfinite(age), (age - 55.0) / 10.0, 0.0).float(),
    )


def future_targets(
    batch: dict[str, torch.Tensor],
    channel_of_code: torch.Tensor,
    n_lab: int,
    image_dim: int,
    *,
    horizon_days: float,
    per_query: int | None,
    generator: torch.Generator | None = None,
) -> ForecastTargets:
    """Observed values after each query of the batch, within ``(t, t + horizon_days]`` (event time).

    Only tokens past the query's visible prefix can qualify (their availability is after ``t``); a late-read study
    taken at or before ``t`` is neither input nor target. ``per_query`` keeps that many target tokens per query
    (uniformly at random; all when None).
    """
    qs = batch["q_sample"]
    length = batch["code_id"].shape[1]
    pos = torch.arange(length, device=qs.device).unsqueeze(0)
    delta = batch["time_days"][qs] - batch["q_days"].unsqueeze(1)  # (Q, L)
    future = (pos >= batch["q_visible"].unsqueeze(1)) & (delta > 0) & (delta <= horizon_days)
    future &= torch.isfinite(batch["avail_days"][qs])
    lab = channel_of_code[batch["code_id"][qs]]
    is_lab = future & (lab >= 0) & (batch["has_value"][qs] > 0)
    is_img = future & (batch["has_image"][qs] > 0) if image_dim else torch.zeros_like(future)
    keep = is_lab | is_img
    if per_query is not None:
        score = torch.rand(keep.shape, generator=generator, device=keep.device)
        score = torch.where(keep, score, -1.0)
        k = min(per_query, length)
        top = score.topk(k, dim=1)
        chosen = torch.zeros_like(keep).scatter(1, top.indices, top.values >= 0)
        keep &= chosen
    q_l, p_l = (keep & is_lab).nonzero(as_tuple=True)
    s_l = qs[q_l]
    parts = [(q_l, lab[q_l, p_l], delta[q_l, p_l], batch["value"][s_l, p_l], torch.ones(q_l.numel(), device=qs.device))]
    if image_dim:
        q_i, p_i = (keep & is_img & ~is_lab).nonzero(as_tuple=True)
        dims = torch.arange(image_dim, device=qs.device)
        rep = q_i.repeat_interleave(image_dim)
        parts.append(
            (
                rep,
                (n_lab + dims).repeat(q_i.numel()),
                delta[q_i, p_i].repeat_interleave(image_dim),
                batch["image"][qs[q_i], p_i, :image_dim].reshape(-1),
                torch.full((rep.numel(),), 1.0 / image_dim, device=qs.device),
            )
        )
    q, ch, d, y, w = (torch.cat(cols) for cols in zip(*parts, strict=True))
    return ForecastTargets(q=q, ch=ch.long(), delta=d.float(), y=y.float(), weight=w)


def scale_bin(delta_days: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
    """Index of the (horizon bin, seen-before) cell of each pair."""
    edges = torch.tensor(SCALE_EDGES_DAYS, device=delta_days.device, dtype=delta_days.dtype)
    return torch.bucketize(delta_days, edges, right=True) + (len(SCALE_EDGES_DAYS) + 1) * (has > 0).long()


class ForecastHead(nn.Module):
    """Linear ridge forecast (buffers, stage 1) + a zero-initialised MLP residual on the backbone state (stage 2)."""

    coef: torch.Tensor
    log_scale: torch.Tensor
    n_train: torch.Tensor

    def __init__(self, d_model: int, n_channels: int, *, hidden: int = 64, channel_dim: int = 16) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.n_features = N_SIMPLE + 2 * n_channels + 1
        coef = torch.zeros(n_channels, self.n_features)
        coef[:, 3] = 1.0  # before stage 1: last value carried forward, unit scale
        self.register_buffer("coef", coef)
        self.register_buffer("log_scale", torch.zeros(n_channels, N_SCALE_BINS))
        self.register_buffer("n_train", torch.zeros(n_channels))  # stage-1 train rows per channel
        self.channel = nn.Embedding(n_channels, channel_dim)
        self.delta = SinusoidalDays(8, min_period=30.0, max_period=4000.0)
        self.mlp = nn.Sequential(
            nn.Linear(d_model + channel_dim + self.delta.dim + N_SIMPLE, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, 2),
        )
        last = self.mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def linear(
        self, summary: ChannelSummary, q: torch.Tensor, ch: torch.Tensor, delta: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage-1 mean and log scale of each pair."""
        x = summary.design(q, ch, delta / DAYS_PER_YEAR)
        mu = (x * self.coef[ch]).sum(dim=1)
        return mu, self.log_scale[ch, scale_bin(delta, summary.has[q, ch])]

    def forward(
        self,
        state: torch.Tensor,
        summary: ChannelSummary,
        q: torch.Tensor,
        ch: torch.Tensor,
        delta: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log standard deviation (normalised scale) of channel ``ch`` at query ``q``, ``delta`` days on."""
        mu, log_sigma = self.linear(summary, q, ch, delta)
        simple = summary.simple(q, ch, delta / DAYS_PER_YEAR)
        h = torch.cat([state[q], self.channel(ch), self.delta(delta), simple], dim=1)
        residual = self.mlp(h)
        return mu + residual[:, 0], (log_sigma + residual[:, 1]).clamp(-7.0, 4.0)

    # ------------------------------------------------------------------ stage 1
    def fit_linear(self, train: _Moments, tuning: _Moments | None) -> list[float]:
        """Closed-form per-channel ridge fit from accumulated moments; penalty per channel on the tuning split.

        Returns:
            The chosen penalty of each channel (NaN where the channel has no train rows: it keeps carrying the last
            value forward with unit scale).
        """
        c, nb, f = self.n_channels, N_SCALE_BINS, self.n_features
        xtx, xty, _, n = (a.view(c, nb, *a.shape[1:]).sum(1) for a in train.tensors())
        penalty_mask = torch.ones(f, dtype=torch.float64)
        penalty_mask[0] = 0.0
        chosen: list[float] = []
        coef = self.coef.double().clone()
        n_tune = tuning.n.view(c, nb).sum(1) if tuning is not None else torch.zeros(c, dtype=torch.float64)
        for k in range(c):
            if train.rows.view(c, nb)[k].sum() <= f:
                chosen.append(float("nan"))
                continue
            best: tuple[float, torch.Tensor, float] | None = None
            for lam in _PENALTIES if n_tune[k] > 0 else (1e-2,):
                reg = torch.diag(penalty_mask * lam * float(n[k]))
                beta = torch.linalg.solve(xtx[k] + reg + 1e-9 * torch.eye(f, dtype=torch.float64), xty[k])
                if tuning is None or n_tune[k] == 0:
                    best = (0.0, beta, lam)
                    break
                sse = tuning.sse(beta, k)
                if best is None or sse < best[0]:
                    best = (sse, beta, lam)
            assert best is not None
            coef[k] = best[1]
            chosen.append(best[2])
        # Residual variance per (channel, bin) on the train rows, with the degrees-of-freedom correction of a
        # least-squares fit (the tuning split only chooses penalties, as for the wide survival path).
        rows = train.rows.view(c, nb).sum(1)
        df = torch.where(rows > f, rows / (rows - f).clamp(min=1.0), 1.0).unsqueeze(1)
        var = _binned_variance(train, coef, c) * df
        with torch.no_grad():
            self.coef.copy_(coef.float())
            self.log_scale.copy_((0.5 * torch.log(var.clamp(min=1e-4))).float())
            self.n_train.copy_(n.float())
        return chosen


class _Moments:
    """Streaming least-squares moments per (channel, scale bin) cell: ``X'X``, ``X'y``, ``y'y`` and row counts."""

    def __init__(self, n_channels: int, n_features: int) -> None:
        g = n_channels * N_SCALE_BINS
        self.xtx = torch.zeros(g, n_features, n_features, dtype=torch.float64)
        self.xty = torch.zeros(g, n_features, dtype=torch.float64)
        self.yty = torch.zeros(g, dtype=torch.float64)
        self.n = torch.zeros(g, dtype=torch.float64)  # weighted rows
        self.rows = torch.zeros(g, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor, cell: torch.Tensor, weight: torch.Tensor) -> None:
        x, y, w = x.double().cpu(), y.double().cpu(), weight.double().cpu()
        cell = cell.cpu()
        order = torch.argsort(cell, stable=True)
        x, y, w, cell = x[order], y[order], w[order], cell[order]
        cells, counts = torch.unique_consecutive(cell, return_counts=True)
        for g, xs, ys, ws in zip(
            cells.tolist(), x.split(counts.tolist()), y.split(counts.tolist()), w.split(counts.tolist()), strict=True
        ):
            xw = xs * ws.unsqueeze(1)
            self.xtx[g] += xw.T @ xs
            self.xty[g] += xw.T @ ys
            self.yty[g] += (ws * ys * ys).sum()
            self.n[g] += ws.sum()
            self.rows[g] += ws.numel()

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.xtx, self.xty, self.yty, self.n

    def sse(self, beta: torch.Tensor, channel: int) -> float:
        """Residual sum of squares of channel ``channel`` under coefficients ``beta`` (all its cells)."""
        cells = slice(channel * N_SCALE_BINS, (channel + 1) * N_SCALE_BINS)
        xtx, xty, yty = self.xtx[cells].sum(0), self.xty[cells].sum(0), self.yty[cells].sum()
        return float(yty - 2 * beta @ xty + beta @ xtx @ beta)


def _binned_sse(moments: _Moments, coef: torch.Tensor, n_channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    beta = coef.repeat_interleave(N_SCALE_BINS, dim=0)  # (G, F)
    sse = moments.yty - 2 * (beta * moments.xty).sum(1) + torch.einsum("gf,gfh,gh->g", beta, moments.xtx, beta)
    return sse.clamp(min=0.0).view(n_channels, N_SCALE_BINS), moments.n.view(n_channels, N_SCALE_BINS)


def _binned_variance(moments: _Moments, coef: torch.Tensor, n_channels: int) -> torch.Tensor:
    """Per-(channel, bin) residual variance, shrunk to the channel's pooled one (unit where nothing was seen)."""
    sse, n = _binned_sse(moments, coef, n_channels)
    pooled = torch.where(n.sum(1) > 0, sse.sum(1) / n.sum(1).clamp(min=1e-9), 1.0).unsqueeze(1)
    return (sse + _SCALE_PRIOR_ROWS * pooled) / (n + _SCALE_PRIOR_ROWS)
