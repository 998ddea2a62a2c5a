"""Tests for migpt_traj.datasets._sim_volumes: the simulator's volumes show the lesion the truth says.

Independent references: the number of lattice points inside a ball of the stated radius (what MONAI's
``create_test_image_3d`` draws), and the simulator parameters' embedding map for the 16-d "true" embedding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from migpt_traj.datasets import make_synthetic
from migpt_traj.datasets._sim_volumes import VOLUME_SIZE, study_lesions


def _lattice_points(radius: int) -> int:
    r = np.arange(-radius, radius + 1)
    x, y, z = np.meshgrid(r, r, r, indexing="ij")
    return int((x**2 + y**2 + z**2 <= radius**2).sum())


@pytest.mark.slow  # writes ~100 NIfTI volumes (a few seconds once MONAI is imported)
def test_each_volume_holds_a_ball_of_the_true_radius(tmp_path: Path) -> None:
    import nibabel as nib

    syn = make_synthetic(30, seed=5, volumes=True, volume_dir=tmp_path / "vol")
    lesions = study_lesions(syn.events, syn.truth.subjects, syn.truth.params)
    images = syn.events.filter(pl.col("code") == syn.truth.params.image_code)
    assert lesions.select("subject_id", "time").equals(images.select("subject_id", "time"))
    sizes = [int((nib.load(p).get_fdata() > 0.5).sum()) for p in images["image_path"].to_list()]
    assert sizes == [_lattice_points(r) for r in lesions["radius"].to_list()]
    assert nib.load(images["image_path"][0]).shape == (VOLUME_SIZE,) * 3
    # The lesion grows with the true state: radius = clip(round(5 + 1.5 (z1 + z2)), 2, 14).
    state = lesions["z_severity"] + lesions["z_image"]
    expected = np.clip(np.round(5 + 1.5 * state.to_numpy()), 2, VOLUME_SIZE // 2 - 2)
    np.testing.assert_array_equal(lesions["radius"].to_numpy(), expected)
    latent = syn.truth.latent(images["subject_id"], images["time"])
    np.testing.assert_allclose(lesions["z_severity"].to_numpy(), latent["z_severity"].to_numpy())


def test_the_events_embedding_is_the_true_state_embedding_plus_noise() -> None:
    syn = make_synthetic(300, seed=2)
    params = syn.truth.params
    lesions = study_lesions(syn.events, syn.truth.subjects, params)
    emb = np.asarray(syn.events.filter(pl.col("code") == params.image_code)["embedding"].to_list())
    loading, offset = params.embedding_map()
    z = lesions.select("z_severity", "z_image").to_numpy()
    residual = emb - (z @ loading.T + offset)
    assert abs(residual.mean()) < 0.02
    assert residual.std() == pytest.approx(params.embedding_noise_sd, rel=0.03)
