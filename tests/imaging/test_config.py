"""Tests for migpt_traj.imaging.config: typed imaging options from YAML, with errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from migpt_traj.errors import ConfigError
from migpt_traj.imaging.config import ImagingConfig, VolumeTransformConfig


def test_defaults_are_the_precomputed_no_op() -> None:
    cfg = ImagingConfig()
    assert cfg.encoder == "precomputed" and cfg.on_missing_image == "error"
    assert cfg.transform == VolumeTransformConfig()


def test_from_dict_round_trips_through_to_dict() -> None:
    cfg = ImagingConfig.from_dict(
        {
            "encoder": "survival",
            "network": "resnet",
            "widths": [4, 8, 16, 32],
            "transform": {
                "spacing_mm": [1, 1, 2],
                "shape": [16, 16, 8],
                "intensity": "range",
                "intensity_range": [-1000, 1000],
            },
        }
    )
    assert cfg.widths == (4, 8, 16, 32) and cfg.transform.spacing_mm == (1.0, 1.0, 2.0)
    assert cfg.transform.intensity_range == (-1000.0, 1000.0)
    assert ImagingConfig.from_dict(cfg.to_dict()) == cfg


def test_yaml_section_is_found_at_top_level_or_under_data(tmp_path: Path) -> None:
    top = tmp_path / "top.yaml"
    top.write_text("model: {d_model: 32}\nimaging:\n  encoder: autoencoder\n  on_missing_image: skip\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("data:\n  use_images: true\n  imaging:\n    encoder: survival\n")
    assert ImagingConfig.from_yaml(top).on_missing_image == "skip"
    assert ImagingConfig.from_yaml(nested).encoder == "survival"
    none = tmp_path / "none.yaml"
    none.write_text("model: {d_model: 32}\n")
    assert ImagingConfig.from_yaml(none) == ImagingConfig()


def test_fingerprints_change_with_what_changes_the_result() -> None:
    base = ImagingConfig(encoder="autoencoder")
    assert (
        base.training_fingerprint()
        == ImagingConfig(encoder="autoencoder", on_missing_image="skip").training_fingerprint()
    )
    assert base.training_fingerprint() != ImagingConfig(encoder="autoencoder", epochs=3).training_fingerprint()
    assert VolumeTransformConfig().fingerprint() != VolumeTransformConfig(shape=(16, 16, 16)).fingerprint()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            {"encoder": "autoencodr"}, r"'encoder' = 'autoencodr' is invalid.*Did you mean 'autoencoder'", id="enc"
        ),
        pytest.param({"on_missing_image": "ignore"}, r"use one of \['error', 'skip'\]", id="missing"),
        pytest.param({"epoch": 3}, r"Unknown imaging config key 'epoch'.*Did you mean 'epochs'", id="unknown"),
        pytest.param({"shape": [8, 8, 8]}, r"'shape'.*a transform option: put it under 'transform'", id="misplaced"),
        pytest.param(
            {"transform": {"spacing": [1, 1, 1]}}, r"'transform.spacing'.*Did you mean 'spacing_mm'", id="tkey"
        ),
        pytest.param({"transform": {"shape": [8, 8]}}, r"'transform.shape' = \[8, 8\] must be 3 positive", id="shape"),
        pytest.param({"transform": {"orientation": "XYZ"}}, r"three axis codes", id="orient"),
        pytest.param({"transform": {"intensity": "range"}}, r"needs 'transform.intensity_range'", id="range"),
        pytest.param({"epochs": 0}, r"'epochs' = 0 is invalid; it must be an integer >= 1", id="epochs"),
        pytest.param({"lr": -1.0}, r"'lr' = -1.0 is invalid; it must be > 0", id="lr"),
        pytest.param({"encoder": "survival", "weights": "w.pt"}, r"must be a .safetensors file", id="pickle"),
        pytest.param({"encoder": "survival", "fine_tune": True}, r"'fine_tune' = true needs 'weights'", id="fine"),
        pytest.param({"weights": "w.safetensors"}, r"needs encoder 'survival' or 'autoencoder'", id="precomp"),
        pytest.param({"encoder": "survival", "network": "resnet"}, r"needs 4 'widths'", id="resnet"),
    ],
)
def test_invalid_options_raise_config_errors_naming_them(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ImagingConfig.from_dict(data)


def test_unreadable_yaml_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read config file"):
        ImagingConfig.from_yaml(tmp_path / "absent.yaml")


def test_the_config_imports_neither_torch_nor_monai() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from migpt_traj.imaging import ImagingConfig; "
        "print('torch' in sys.modules, 'monai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]
