"""Time-aware multimodal transformer over a patient's events.

* Token embedding: a code embedding plus, for measurements, the normalised value along a learned per-code
  direction; a modality embedding; continuous-time encodings on the real day scale (sinusoidal features of days
  since time zero, of age, and of the gap since the previous token); projected image embeddings; projected note
  embeddings.
* Causal self-attention over the availability order, so the hidden state after token ``i`` depends only on what
  was known when token ``i`` became available (one pass gives the state after every event).
* Readout at a prediction time ``t``: a query built from ``t`` (days since time zero, age, time since the last
  visible event) cross-attends over the visible tokens only, with a learned per-head decay in
  ``log(1 + days before t)`` so that recency on the real time scale shapes attention; it is combined with the
  hidden state after the last visible token.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Backbone", "CausalBlock", "SinusoidalDays"]


class SinusoidalDays(nn.Module):
    """Sinusoidal features of a duration in days, periods geometric from ``min_period`` to ``max_period``."""

    omega: torch.Tensor

    def __init__(self, n_freq: int = 16, *, min_period: float = 1.0, max_period: float = 20_000.0) -> None:
        super().__init__()
        periods = torch.logspace(math.log10(min_period), math.log10(max_period), n_freq)
        self.register_buffer("omega", 2 * math.pi / periods, persistent=False)
        self.dim = 2 * n_freq

    def forward(self, days: torch.Tensor) -> torch.Tensor:
        arg = days.unsqueeze(-1) * self.omega
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class CausalBlock(nn.Module):
    """Pre-norm transformer block with causal self-attention (no attention dropout) and a GELU MLP."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.mlp(self.norm2(x)))


class Backbone(nn.Module):
    """Embeds tokens, runs causal attention, and reads out the state at prediction times.

    Args:
        vocab_size: number of code ids.
        d_model: hidden size.
        n_layers, n_heads, dropout: transformer shape.
        image_dim: length of image embeddings (0 = none).
        note_dim: length of note embeddings (0 = none).
        n_modalities: number of modality ids (0 = padding).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        image_dim: int = 0,
        note_dim: int = 0,
        n_modalities: int = 8,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.n_heads = n_heads
        self.code = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.value_dir = nn.Embedding(vocab_size, d_model, padding_idx=0)
        nn.init.normal_(self.value_dir.weight, std=0.1)
        self.modality = nn.Embedding(n_modalities, d_model, padding_idx=0)
        # Periods from a week to ~55 years for times and gaps, from a year to 100 years for age: shorter periods
        # would fingerprint subjects by their exact visit dates and invite memorisation.
        self.days = SinusoidalDays(12, min_period=7.0, max_period=20_000.0)
        self.age_days = SinusoidalDays(6, min_period=365.25, max_period=36_525.0)
        self.time_proj = nn.Linear(self.days.dim, d_model)
        self.age_proj = nn.Linear(self.age_days.dim + 1, d_model)
        self.gap_proj = nn.Linear(self.days.dim, d_model)
        self.image_proj = nn.Linear(image_dim, d_model) if image_dim > 0 else None
        self.note_proj = nn.Linear(note_dim, d_model) if note_dim > 0 else None
        self.embed_norm = nn.LayerNorm(d_model)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(CausalBlock(d_model, n_heads, dropout) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model)
        # Readout.
        self.query_proj = nn.Sequential(
            nn.Linear(2 * self.days.dim + self.age_days.dim + 1, d_model), nn.GELU(), nn.Linear(d_model, d_model)
        )
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.decay = nn.Parameter(torch.linspace(-2.0, 1.0, n_heads))
        self.out = nn.Sequential(nn.LayerNorm(3 * d_model), nn.Linear(3 * d_model, d_model), nn.GELU())

    # ------------------------------------------------------------------ encoder
    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        code = batch["code_id"]
        x = self.code(code) + batch["value"].unsqueeze(-1) * self.value_dir(code) + self.modality(batch["modality"])
        time = batch["time_days"]
        x = x + self.time_proj(self.days(time))
        age = batch["age_years"]
        known = torch.isfinite(age)
        age_feat = torch.cat(
            [self.age_days(torch.where(known, age, 0.0) * 365.25), known.float().unsqueeze(-1)], dim=-1
        )
        x = x + self.age_proj(age_feat)
        gap = torch.diff(time, dim=1, prepend=time[:, :1]).clamp(min=0.0)
        x = x + self.gap_proj(self.days(gap))
        if self.image_proj is not None and "image" in batch:
            x = x + self.image_proj(batch["image"]) * batch["has_image"].unsqueeze(-1)
        if self.note_proj is not None and "note" in batch:
            x = x + self.note_proj(batch["note"]) * batch["has_note"].unsqueeze(-1)
        return self.embed_drop(self.embed_norm(x))

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Hidden states ``(B, L, d)``; position ``i`` depends only on tokens ``<= i`` (causal)."""
        # Right padding + causal attention: a real token only ever sees earlier real tokens, so no padding mask
        # is needed (padded positions are never read), and the fused causal attention kernel applies.
        h = self.embed(batch)
        for block in self.blocks:
            h = block(h)
        return self.final_norm(h)

    # ------------------------------------------------------------------ readout
    def readout(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """State at each query ``(Q, d)`` from the hidden states of the tokens visible at that query."""
        qs = batch["q_sample"]
        visible = batch["q_visible"]
        n_q = qs.shape[0]
        _, length, d = hidden.shape
        pos = torch.arange(length, device=hidden.device)
        mask = pos.unsqueeze(0) < visible.unsqueeze(1)  # (Q, L)
        q_days = batch["q_days"]
        token_time = batch["time_days"][qs]
        last_time = token_time.gather(1, (visible - 1).unsqueeze(1)).squeeze(1)
        age = batch["q_age_years"]
        known = torch.isfinite(age)
        feats = torch.cat(
            [
                self.days(q_days),
                self.age_days(torch.where(known, age, 0.0) * 365.25),
                self.days((q_days - last_time).clamp(min=0.0)),
                known.float().unsqueeze(-1),
            ],
            dim=-1,
        )
        query = self.query_proj(feats)  # (Q, d)
        heads = self.n_heads
        hd = d // heads
        qv = self.q(query).view(n_q, heads, hd)
        # Project once per sample, then gather per query (queries outnumber samples).
        kv = self.k(hidden).view(-1, length, heads, hd)
        vv = self.v(hidden).view(-1, length, heads, hd)
        logits = torch.einsum("qhd,qlhd->qhl", qv, kv[qs]) / math.sqrt(hd)
        before = torch.log1p((q_days.unsqueeze(1) - token_time).clamp(min=0.0))  # (Q, L)
        logits = logits - nn.functional.softplus(self.decay).view(1, heads, 1) * before.unsqueeze(1)
        logits = logits.masked_fill(~mask.unsqueeze(1), float("-inf"))
        attn = logits.softmax(dim=-1)
        pooled = torch.einsum("qhl,qlhd->qhd", attn, vv[qs]).reshape(n_q, d)
        last = hidden[qs, visible - 1]
        return self.out(torch.cat([pooled, last, query], dim=-1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.readout(self.encode(batch), batch)
