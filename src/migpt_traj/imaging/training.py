"""Training of the image encoders on the train split's volumes (stage one of a two-stage model).

* :func:`fit_survival`: supervised pretraining of a 3D network plus a linear survival head by the exact
  piecewise-exponential competing-risk likelihood (:func:`migpt_traj.model.survival.negative_log_likelihood`) of
  the time from each study (its acquisition ``time``) to the first outcome, censored at the end of follow-up.
  Bins start at train event-time quantiles; the head's bias starts at the pooled train hazard of each cause in
  each bin. The likelihood needs no other subject in the batch (unlike Cox), so small batches are fine.
* :func:`fit_autoencoder`: self-supervised training of a variational autoencoder (mean squared reconstruction
  error plus ``kl_weight`` times the KL divergence per latent dimension).

Both are deterministic for a given seed on a given machine: initialisation and shuffling draw from a forked
torch generator (the caller's global RNG state is restored afterwards), so nothing here changes global state.
The trained network is then frozen; the trajectory transformer sees only its embeddings (no joint end-to-end
training).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from migpt_traj.imaging.config import ImagingConfig
from migpt_traj.imaging.networks import EncoderNetwork
from migpt_traj.model.survival import bin_exposure, negative_log_likelihood

__all__ = ["TrainingHistory", "embed_batches", "fit_autoencoder", "fit_survival", "survival_bins", "torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (``None``: unchanged), restoring the count afterwards."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TrainingHistory:
    """Epoch-mean training loss (per volume) of an encoder; ``n_volumes`` studies were used."""

    loss: tuple[float, ...]
    n_volumes: int


def survival_bins(
    duration: np.ndarray, cause: np.ndarray, *, n_bins: int, n_causes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bin starts (days, ``edges[0] = 0``) at event-time quantiles, and ``(n_causes, J)`` initial log hazards.

    The initial log hazard of cause ``k`` in bin ``j`` is ``log((events_kj + 0.5) / exposure_j)``, the pooled
    (Kaplan-Meier-free) rate: a sane starting point so the first epochs learn ranking, not scale.
    """
    events = duration[cause > 0]
    if events.size == 0:
        edges = np.array([0.0])
    else:
        inner = np.quantile(events, np.arange(1, n_bins) / n_bins) if n_bins > 1 else np.empty(0)
        edges = np.unique(np.concatenate([[0.0], inner[inner > 0]]))
    exposure = bin_exposure(torch.as_tensor(duration, dtype=torch.float64), torch.as_tensor(edges)).sum(0).numpy()
    j = np.clip(np.searchsorted(edges, duration, side="right") - 1, 0, edges.size - 1)
    counts = np.zeros((n_causes, edges.size))
    np.add.at(counts, (cause[cause > 0] - 1, j[cause > 0]), 1.0)
    return edges, np.log((counts + 0.5) / np.maximum(exposure, 1e-9))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _train(
    network: EncoderNetwork,
    volumes: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    config: ImagingConfig,
    generator: torch.Generator,
) -> TrainingHistory:
    params = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[float] = []
    network.train()
    for _ in range(config.epochs):
        total = 0.0
        for idx in _batches(volumes.shape[0], config.batch_size, generator):
            if idx.numel() < 2 and volumes.shape[0] > 1:
                continue  # a batch of one breaks batch normalisation; its volume is seen in the other epochs
            loss = loss_fn(idx)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            optimiser.step()
            total += float(loss.detach()) * idx.numel()
        history.append(total / max(volumes.shape[0], 1))
    network.eval()
    network.requires_grad_(False)
    return TrainingHistory(loss=tuple(history), n_volumes=int(volumes.shape[0]))


def fit_survival(
    network: EncoderNetwork,
    volumes: torch.Tensor,
    duration: np.ndarray,
    cause: np.ndarray,
    edges: np.ndarray,
    config: ImagingConfig,
    generator: torch.Generator,
) -> TrainingHistory:
    """Train ``network`` (body + head) in place on ``volumes`` ``(N, 1, *shape)`` with targets per study.

    Args:
        network: a ``"survival"`` :class:`EncoderNetwork` whose head outputs ``(B, K, len(edges))``.
        volumes: transformed train volumes.
        duration: ``(N,)`` days from each study to its first outcome or censoring (> 0).
        cause: ``(N,)`` 0 = censored, ``k`` = the k-th outcome.
        edges: bin starts in days.
        config: epochs, batch size, learning rate, weight decay.
        generator: shuffling generator.
    """
    assert network.head is not None
    t_edges = torch.as_tensor(edges, dtype=torch.float32)
    t_dur = torch.as_tensor(duration, dtype=torch.float32)
    t_cause = torch.as_tensor(cause, dtype=torch.int64)
    head = network.head

    def loss(idx: torch.Tensor) -> torch.Tensor:
        log_hazard = head(network.embed(volumes[idx]))
        return negative_log_likelihood(log_hazard, t_edges, t_dur[idx], t_cause[idx]).mean()

    return _train(network, volumes, loss, config, generator)


def fit_autoencoder(
    network: EncoderNetwork, volumes: torch.Tensor, config: ImagingConfig, generator: torch.Generator
) -> TrainingHistory:
    """Train an ``"autoencoder"`` :class:`EncoderNetwork` in place: reconstruction MSE + ``kl_weight`` · KL."""
    body = network.body

    def loss(idx: torch.Tensor) -> torch.Tensor:
        x = volumes[idx]
        mu, logvar = body.encode_forward(x)  # type: ignore[operator]
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        z = mu + noise * torch.exp(0.5 * logvar)
        recon = body.decode_forward(z, body.use_sigmoid)  # type: ignore[operator]
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        return torch.mean((recon - x) ** 2) + config.kl_weight * kl

    return _train(network, volumes, loss, config, generator)


@torch.inference_mode()
def embed_batches(network: EncoderNetwork, volumes: np.ndarray) -> np.ndarray:
    """``(N, embedding_dim)`` float32 embeddings of ``(N, 1, *shape)`` volumes with the frozen network."""
    network.eval()
    out = network.embed(torch.as_tensor(volumes, dtype=torch.float32))
    return out.detach().cpu().numpy().astype(np.float32)
