"""Tests for migpt_traj.imaging.training and .networks: survival bins, determinism, scoped thread count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from migpt_traj.errors import ConfigError
from migpt_traj.imaging.networks import build_network, load_weights, state_digest
from migpt_traj.imaging.training import survival_bins, torch_threads


def test_survival_bins_match_a_direct_count_of_events_over_exposure() -> None:
    rng = np.random.default_rng(0)
    duration = rng.exponential(500.0, 400)
    cause = rng.choice([0, 1, 2], size=400, p=[0.5, 0.3, 0.2])
    edges, init = survival_bins(duration, cause, n_bins=4, n_causes=2)
    events = duration[cause > 0]
    np.testing.assert_allclose(edges, [0.0, *np.quantile(events, [0.25, 0.5, 0.75])])
    upper = np.r_[edges[1:], np.inf]
    for j in range(edges.size):  # independent loop: days at risk inside bin j, events of each cause in it
        exposure = np.clip(np.minimum(duration, upper[j]) - edges[j], 0.0, None).sum()
        inside = (duration >= edges[j]) & (duration < upper[j])
        for k in (1, 2):
            assert init[k - 1, j] == pytest.approx(np.log(((cause == k) & inside).sum() + 0.5) - np.log(exposure))


def test_survival_bins_without_events_have_one_bin() -> None:
    edges, init = survival_bins(np.array([10.0, 20.0]), np.array([0, 0]), n_bins=5, n_causes=1)
    assert edges.tolist() == [0.0] and init.shape == (1, 1)


def test_the_thread_count_is_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_networks_map_volumes_to_embeddings_and_weights_are_checked(img: Any, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    config = img.config(encoder="survival", network="densenet", widths=(4, 4))
    torch.manual_seed(0)
    net = build_network(config, n_causes=2)
    x = torch.rand(3, 1, img.side, img.side, img.side)
    net.eval()
    assert net.embed(x).shape == (3, 4)
    assert net.head is not None and net.head(net.embed(x)).shape == (3, 2, config.n_bins)
    path = tmp_path / "w.safetensors"
    save_file(net.weights(), str(path))
    torch.manual_seed(1)
    other = build_network(config, n_causes=2)
    assert state_digest(other.weights()) != state_digest(net.weights())
    load_weights(other, path)
    assert state_digest(other.weights()) == state_digest(net.weights())
    body_only = {k: v for k, v in net.weights().items() if not k.startswith("survival_head.")}
    save_file(dict(list(body_only.items())[1:]), str(path))
    with pytest.raises(ConfigError, match=r"does not fit the configured network: missing \["):
        load_weights(other, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_weights(other, tmp_path / "absent.safetensors")


def test_the_autoencoder_needs_a_shape_it_can_halve(img: Any) -> None:
    assert build_network(img.config(widths=(2, 4))).embed(torch.rand(2, 1, 8, 8, 8)).shape == (2, 4)
    with pytest.raises(ConfigError, match=r"must be a multiple of 8 and at least 16 voxels"):
        build_network(img.config(widths=(2, 4, 8)))
