"""Piecewise-exponential competing-risk mathematics against closed forms and independent numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from migpt_traj.model.survival import (
    bin_exposure,
    cumulative_incidence,
    negative_log_likelihood,
    survival_function,
)

torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------------------------------- references
def _ref_cum_hazard(hazard: np.ndarray, edges: np.ndarray, t: float) -> float:
    """Total cumulative hazard ``H(t)`` of one subject, by walking the bins (``hazard`` is ``(K, J)``)."""
    total = hazard.sum(axis=0)
    out = 0.0
    for j, start in enumerate(edges):
        stop = edges[j + 1] if j + 1 < edges.size else math.inf
        out += total[j] * max(0.0, min(t, stop) - start)
    return out


def _ref_bin(edges: np.ndarray, t: float) -> int:
    return max(j for j, start in enumerate(edges) if start <= t)


def _ref_cif_quad(hazard: np.ndarray, edges: np.ndarray, t: float) -> np.ndarray:
    """``CIF_k(t) = ∫_0^t h_k(u) S(u) du`` by numerical quadrature, bin by bin (independent of the closed form)."""
    out = np.zeros(hazard.shape[0])
    for j, start in enumerate(edges):
        stop = min(edges[j + 1] if j + 1 < edges.size else math.inf, t)
        if stop <= start:
            break
        for k in range(hazard.shape[0]):
            out[k] += quad(
                lambda u, k=k, j=j: hazard[k, j] * math.exp(-_ref_cum_hazard(hazard, edges, u)), start, stop
            )[0]
    return out


def _t(x: object) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize(
    "edges",
    [pytest.param([0.0], id="one-bin"), pytest.param([0.0, 3.0, 10.0, 50.0], id="equal-hazard-in-four-bins")],
)
def test_constant_hazard_matches_exponential_closed_form(edges: list[float]) -> None:
    rates = np.array([[0.02, 0.005, 0.013], [0.3, 0.01, 0.0001]])  # (N, K)
    edges_t = torch.tensor(edges)
    log_h = torch.log(torch.tensor(rates, dtype=torch.float32)).unsqueeze(-1).expand(-1, -1, len(edges)).contiguous()
    tau = torch.tensor([0.0, 0.37, 2.9, 3.0, 7.5, 10.0, 49.99, 123.4, 1000.0])  # arbitrary, not only edges
    cif = cumulative_incidence(log_h, edges_t, tau).double().numpy()
    surv = survival_function(log_h, edges_t, tau).double().numpy()
    lam = rates.sum(axis=1, keepdims=True)  # (N, 1)
    t = tau.double().numpy()[None, :]
    expected_s = np.exp(-lam * t)
    expected_cif = (rates / lam)[:, :, None] * (1.0 - np.exp(-lam * t))[:, None, :]
    np.testing.assert_allclose(surv, expected_s, atol=1e-6, rtol=0)
    np.testing.assert_allclose(cif, expected_cif, atol=1e-6, rtol=0)


def test_two_bin_case_hand_computed() -> None:
    # Bin 0 = [0, 2): hazards 0.1 (cause 1), 0.2 (cause 2); bin 1 = [2, inf): 0.3 and 0.05 per day.
    log_h = torch.log(torch.tensor([[[0.1, 0.3], [0.2, 0.05]]]))
    edges = torch.tensor([0.0, 2.0])
    tau = torch.tensor([1.0, 5.0])
    # tau = 1: only bin 0, total 0.3.
    s1 = math.exp(-0.3)
    cif1_at1 = (0.1 / 0.3) * (1 - math.exp(-0.3))
    cif2_at1 = (0.2 / 0.3) * (1 - math.exp(-0.3))
    # tau = 5: 2 days at 0.3 then 3 days at 0.35: H = 0.6 + 1.05 = 1.65.
    s5 = math.exp(-1.65)
    cif1_at5 = (0.1 / 0.3) * (1 - math.exp(-0.6)) + math.exp(-0.6) * (0.3 / 0.35) * (1 - math.exp(-1.05))
    cif2_at5 = (0.2 / 0.3) * (1 - math.exp(-0.6)) + math.exp(-0.6) * (0.05 / 0.35) * (1 - math.exp(-1.05))
    np.testing.assert_allclose(survival_function(log_h, edges, tau)[0].numpy(), [s1, s5], atol=1e-6)
    np.testing.assert_allclose(
        cumulative_incidence(log_h, edges, tau)[0].numpy(), [[cif1_at1, cif1_at5], [cif2_at1, cif2_at5]], atol=1e-6
    )
    # The same numbers with a hand NLL: event of cause 1 at day 5 (bin 1), censored at day 1.
    nll = negative_log_likelihood(
        log_h.expand(2, -1, -1), edges, torch.tensor([5.0, 1.0]), torch.tensor([1, 0])
    ).numpy()
    np.testing.assert_allclose(nll, [1.65 - math.log(0.3), 0.3], atol=1e-6)


def test_bin_exposure_splits_time_over_bins_and_last_bin_is_open() -> None:
    edges = torch.tensor([0.0, 2.0, 5.0])
    got = bin_exposure(torch.tensor([0.0, 1.5, 2.0, 4.0, 5.0, 100.0]), edges).numpy()
    expected = [[0, 0, 0], [1.5, 0, 0], [2, 0, 0], [2, 2, 0], [2, 3, 0], [2, 3, 95]]
    np.testing.assert_allclose(got, expected)


def test_horizon_far_beyond_last_edge() -> None:
    rates = np.array([[[0.01, 0.02], [0.002, 0.004]]])  # (1, K=2, J=2), edges [0, 10]
    edges = torch.tensor([0.0, 10.0])
    tau = 5000.0
    log_h = torch.log(torch.tensor(rates, dtype=torch.float32))
    cif = cumulative_incidence(log_h, edges, torch.tensor([tau])).double().numpy()[0, :, 0]
    surv = survival_function(log_h, edges, torch.tensor([tau])).item()
    # S(10) = exp(-0.12); afterwards exponential with rate 0.024 (share 5/6 vs 1/6).
    s10 = math.exp(-0.12)
    tail = 1 - math.exp(-0.024 * (tau - 10))
    expected = [
        (0.01 / 0.012) * (1 - s10) + s10 * (0.02 / 0.024) * tail,
        (0.002 / 0.012) * (1 - s10) + s10 * (0.004 / 0.024) * tail,
    ]
    np.testing.assert_allclose(cif, expected, atol=1e-6)
    assert surv == pytest.approx(s10 * (1 - tail), abs=1e-7)
    assert np.all(np.isfinite(cif))


# ---------------------------------------------------------------------------------------------- properties
@st.composite
def _models(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_causes = draw(st.integers(1, 3))
    n_bins = draw(st.integers(1, 5))
    widths = draw(st.lists(st.floats(0.05, 400.0), min_size=n_bins - 1, max_size=n_bins - 1))
    edges = np.concatenate([[0.0], np.cumsum(widths)]) if widths else np.array([0.0])
    log_h = np.asarray(
        draw(st.lists(st.floats(-12.0, 1.0), min_size=n_causes * n_bins, max_size=n_causes * n_bins))
    ).reshape(1, n_causes, n_bins)
    horizons = np.sort(np.asarray(draw(st.lists(st.floats(0.0, 3000.0), min_size=1, max_size=6))))
    return log_h, edges, horizons


@settings(max_examples=60, deadline=None)
@given(_models())
def test_cif_is_a_monotone_probability_and_sums_with_survival_to_one(
    model: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    log_h, edges, horizons = model
    lh, ed, tau = (torch.tensor(a, dtype=torch.float32) for a in model)
    cif = cumulative_incidence(lh, ed, tau).double().numpy()[0]  # (K, H)
    surv = survival_function(lh, ed, tau).double().numpy()[0]  # (H,)
    assert np.all(cif >= 0) and np.all(cif <= 1)
    assert np.all(np.diff(cif, axis=1) >= -1e-6), "CIF decreased with the horizon"
    assert np.all(np.diff(surv) <= 1e-6), "survival increased with the horizon"
    np.testing.assert_allclose(surv + cif.sum(axis=0), 1.0, atol=1e-5)
    expected_s = np.exp(-np.array([_ref_cum_hazard(np.exp(log_h[0]), edges, t) for t in horizons]))
    np.testing.assert_allclose(surv, expected_s, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(_models())
def test_cif_equals_the_integral_of_the_cause_specific_density(
    model: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    log_h, edges, horizons = model
    got = cumulative_incidence(_t(log_h), _t(edges), _t(horizons)).numpy()[0]  # float64 path
    for i, t in enumerate(horizons):
        np.testing.assert_allclose(got[:, i], _ref_cif_quad(np.exp(log_h[0]), edges, float(t)), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(_models(), st.data())
def test_nll_is_minus_log_density_or_minus_log_survival(
    model: tuple[np.ndarray, np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    log_h, edges, _ = model
    n_causes = log_h.shape[1]
    n = 6
    durations = np.asarray(data.draw(st.lists(st.floats(1e-3, 3000.0), min_size=n, max_size=n)))
    causes = np.asarray(data.draw(st.lists(st.integers(0, n_causes), min_size=n, max_size=n)))
    lh = np.repeat(log_h, n, axis=0)
    got = negative_log_likelihood(_t(lh), _t(edges), _t(durations), torch.as_tensor(causes)).numpy()
    hazard = np.exp(log_h[0])
    expected = []
    for t, c in zip(durations, causes, strict=True):
        log_s = -_ref_cum_hazard(hazard, edges, float(t))
        expected.append(-log_s if c == 0 else -(np.log(hazard[c - 1, _ref_bin(edges, float(t))]) + log_s))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------- likelihood
@pytest.mark.parametrize(
    ("causes", "durations"),
    [
        pytest.param([0, 0, 0, 0], [1.0, 30.0, 400.0, 5000.0], id="no-events"),
        pytest.param([2], [12.0], id="batch-of-one-event"),
        pytest.param([0], [12.0], id="batch-of-one-censored"),
    ],
)
def test_nll_and_gradients_are_finite_without_events_and_for_one_sample(
    causes: list[int], durations: list[float]
) -> None:
    torch.manual_seed(0)
    log_h = (torch.randn(len(causes), 2, 3) - 5.0).requires_grad_(True)
    nll = negative_log_likelihood(
        log_h, torch.tensor([0.0, 10.0, 100.0]), torch.tensor(durations), torch.tensor(causes)
    )
    loss = nll.mean()
    loss.backward()
    assert torch.isfinite(nll).all() and (nll > 0).all()
    assert log_h.grad is not None and torch.isfinite(log_h.grad).all()
    assert log_h.grad.abs().sum() > 0, "no gradient reached the log hazards"


def test_gradients_finite_at_extreme_log_hazards() -> None:
    log_h = torch.tensor([[[-40.0, 8.0], [-40.0, -40.0]]], requires_grad=True)
    edges = torch.tensor([0.0, 5.0])
    out = (
        negative_log_likelihood(log_h, edges, torch.tensor([50.0]), torch.tensor([1])).sum()
        + cumulative_incidence(log_h, edges, torch.tensor([1.0, 500.0])).sum()
        + survival_function(log_h, edges, torch.tensor([500.0])).sum()
    )
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(log_h.grad).all()  # type: ignore[arg-type]


def _simulate_competing_exponential(
    rates: np.ndarray, n: int, seed: int, censor_max: float
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latent = rng.exponential(1.0 / rates, size=(n, rates.size))
    first = latent.min(axis=1)
    cause = latent.argmin(axis=1) + 1
    censor = rng.uniform(0.0, censor_max, size=n)
    observed = np.minimum(first, censor)
    return observed, np.where(first <= censor, cause, 0)


def test_mle_of_constant_hazards_is_events_over_exposure() -> None:
    durations, causes = _simulate_competing_exponential(np.array([0.01, 0.004]), n=3000, seed=1, censor_max=200.0)
    expected = np.array([(causes == k).sum() for k in (1, 2)]) / durations.sum()  # closed-form MLE
    free = torch.zeros(1, 2, 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([free], lr=1.0, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)
    d, c, edges = _t(durations), torch.as_tensor(causes), _t([0.0])

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = negative_log_likelihood(free.expand(d.numel(), -1, -1), edges, d, c).mean()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    np.testing.assert_allclose(free.detach().exp().numpy().ravel(), expected, rtol=1e-6)
    # Sanity of the simulation: the closed form is near the truth.
    np.testing.assert_allclose(expected, [0.01, 0.004], rtol=0.15)


def test_mle_per_bin_is_events_over_exposure_in_that_bin() -> None:
    durations, causes = _simulate_competing_exponential(np.array([0.02, 0.01]), n=2000, seed=2, censor_max=150.0)
    edges = np.array([0.0, 20.0, 60.0])
    exposure = np.stack([np.clip(durations - e, 0, w) for e, w in zip(edges, [20.0, 40.0, np.inf], strict=True)], 1)
    j = np.searchsorted(edges, durations, side="right") - 1
    expected = np.array([[((causes == k) & (j == b)).sum() / exposure[:, b].sum() for b in range(3)] for k in (1, 2)])
    free = torch.zeros(1, 2, 3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([free], lr=1.0, max_iter=300, tolerance_grad=1e-12, tolerance_change=1e-14)
    d, c = _t(durations), torch.as_tensor(causes)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = negative_log_likelihood(free.expand(d.numel(), -1, -1), _t(edges), d, c).mean()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    np.testing.assert_allclose(free.detach().exp().numpy()[0], expected, rtol=1e-6)
