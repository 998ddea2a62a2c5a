"""Volumes through the trajectory model: fit embeds train-split studies with the configured encoder, predict reuses
it, and save/load carries the encoder (safetensors) so predictions are identical after loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import migpt_traj as mt


@pytest.mark.slow
def test_fit_predict_save_load_with_an_autoencoder(img: Any, tiny: Any, tmp_path: Path) -> None:
    cohort = img.cohort(tiny, tmp_path / "vol", n_subjects=40)
    config = mt.TrajectoryConfig(
        d_model=16, n_layers=1, n_heads=2, max_epochs=2, progress=False, use_notes=False, imaging=img.config()
    )
    model = mt.TrajectoryModel(config).fit(cohort)
    assert model.history["imaging"]["image_embedded"] > 0
    assert model.preprocessor is not None and model.preprocessor.image_dim == 4  # the encoder's, not the column's
    risk = model.predict_risk(cohort, landmarks=[30.0], horizons=[200.0], split="held_out")
    assert risk.height > 0 and risk["risk"].is_between(0, 1).all()
    model.save(tmp_path / "run")
    assert (tmp_path / "run" / "image_encoder.safetensors").is_file()
    again = mt.TrajectoryModel.load(tmp_path / "run").predict_risk(
        cohort, landmarks=[30.0], horizons=[200.0], split="held_out"
    )
    np.testing.assert_allclose(again["risk"].to_numpy(), risk["risk"].to_numpy(), rtol=0, atol=1e-6)


def test_config_round_trips_the_imaging_section(img: Any) -> None:
    config = mt.TrajectoryConfig(imaging=img.config())
    back = mt.TrajectoryConfig.from_dict(config.to_dict())
    assert back == config
    assert mt.TrajectoryConfig.from_dict({"imaging": {"encoder": "survival"}}).imaging.encoder == "survival"
