"""Piecewise-exponential competing-risk survival mathematics (pure torch, differentiable).

Time ``tau`` is measured in days from the prediction time, so conditioning on being event-free at the prediction
time is built in. The time axis is cut at edges ``0 = e_0 < e_1 < ... < e_{J-1}``; bin ``j`` is
``[e_j, e_{j+1})`` and the last bin is open-ended. Within bin ``j`` cause ``k`` has constant hazard ``h_kj``
(per day), the total hazard is ``h_j = sum_k h_kj``, and with ``d_j(tau)`` the time spent in bin ``j`` before
``tau``:

* cumulative hazard ``H(tau) = sum_j h_j d_j(tau)``, overall survival ``S(tau) = exp(-H(tau))``;
* cumulative incidence of cause ``k`` (exact, not a bin-edge approximation)::

      CIF_k(tau) = sum_j (h_kj / h_j) * S(e_j) * (1 - exp(-h_j d_j(tau)))

  which is non-decreasing in ``tau`` and satisfies ``S(tau) + sum_k CIF_k(tau) = 1``;
* the exact censored log-likelihood of an observation ``(T, cause)`` (``cause = 0`` censored)::

      log L = -H(T) + [cause > 0] * log h_{cause, bin(T)}

  It needs no other subject in the batch (unlike Cox partial likelihood), so it is finite and meaningful for
  batches with no events and for batch size 1.
"""

from __future__ import annotations

import torch

__all__ = [
    "bin_exposure",
    "cumulative_incidence",
    "negative_log_likelihood",
    "survival_function",
]

_TINY = 1e-12


def bin_exposure(tau: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Days spent in each bin before ``tau``.

    Args:
        tau: ``(...)`` non-negative durations in days.
        edges: ``(J,)`` increasing bin starts, ``edges[0] == 0``; the last bin is open-ended.

    Returns:
        ``(..., J)`` exposure ``d_j(tau) = clamp(tau - e_j, 0, e_{j+1} - e_j)``.
    """
    widths = torch.cat([edges[1:] - edges[:-1], edges.new_tensor([float("inf")])])
    return torch.minimum((tau.unsqueeze(-1) - edges).clamp(min=0.0), widths)


def _bin_index(tau: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Index ``j`` of the bin holding ``tau`` (``e_j <= tau < e_{j+1}``); tau = 0 falls in bin 0."""
    return (torch.searchsorted(edges, tau.contiguous(), right=True) - 1).clamp(min=0)


def negative_log_likelihood(
    log_hazard: torch.Tensor, edges: torch.Tensor, duration: torch.Tensor, cause: torch.Tensor
) -> torch.Tensor:
    """Per-observation negative log-likelihood of the piecewise-exponential competing-risk model.

    Args:
        log_hazard: ``(N, K, J)`` log hazards per day for K causes and J bins.
        edges: ``(J,)`` bin starts in days.
        duration: ``(N,)`` days from prediction time to the event or censoring (> 0).
        cause: ``(N,)`` integers, 0 = censored, ``k`` in 1..K = cause k.

    Returns:
        ``(N,)`` negative log-likelihood.
    """
    hazard = log_hazard.exp()  # (N, K, J)
    exposure = bin_exposure(duration, edges)  # (N, J)
    cum_hazard = (hazard.sum(dim=1) * exposure).sum(dim=-1)  # (N,)
    j = _bin_index(duration, edges)  # (N,)
    k = (cause - 1).clamp(min=0)
    picked = log_hazard.gather(1, k.view(-1, 1, 1).expand(-1, 1, log_hazard.shape[-1])).squeeze(1)
    log_h_event = picked.gather(1, j.view(-1, 1)).squeeze(1)
    return cum_hazard - torch.where(cause > 0, log_h_event, torch.zeros_like(log_h_event))


def survival_function(log_hazard: torch.Tensor, edges: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Overall event-free probability ``S(tau)`` (no cause has occurred by ``tau`` days).

    Args:
        log_hazard: ``(N, K, J)``.
        edges: ``(J,)``.
        tau: ``(H,)`` horizons in days (any value >= 0, not only bin edges).

    Returns:
        ``(N, H)``.
    """
    total = log_hazard.exp().sum(dim=1)  # (N, J)
    exposure = bin_exposure(tau, edges)  # (H, J)
    return torch.exp(-(total @ exposure.T))


def cumulative_incidence(log_hazard: torch.Tensor, edges: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Cause-specific cumulative incidence ``CIF_k(tau)`` in closed form (see module docstring).

    Args:
        log_hazard: ``(N, K, J)``.
        edges: ``(J,)``.
        tau: ``(H,)`` horizons in days.

    Returns:
        ``(N, K, H)``: probability that cause ``k`` happens first, within ``tau`` days. Non-decreasing in
        ``tau``; ``survival_function + CIF.sum(1) == 1``.
    """
    hazard = log_hazard.exp()  # (N, K, J)
    total = hazard.sum(dim=1)  # (N, J)
    widths = torch.cat([edges[1:] - edges[:-1], edges.new_tensor([float("inf")])])
    # Survival at the start of each bin: exp(-cumulative hazard of all earlier, fully traversed bins).
    full = total[:, :-1] * widths[:-1]
    s_start = torch.exp(-torch.cat([total.new_zeros(total.shape[0], 1), full.cumsum(dim=-1)], dim=-1))  # (N, J)
    exposure = bin_exposure(tau, edges)  # (H, J)
    # Probability of leaving bin j (by any cause) before tau, given alive at the bin start.
    leave = -torch.expm1(-total.unsqueeze(1) * exposure.unsqueeze(0))  # (N, H, J)
    share = hazard / total.clamp(min=_TINY).unsqueeze(1)  # (N, K, J)
    mass = s_start.unsqueeze(1) * leave  # (N, H, J)
    return torch.einsum("nkj,nhj->nkh", share, mass)
