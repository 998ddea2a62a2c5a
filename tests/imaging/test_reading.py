"""Tests for migpt_traj.imaging.reading: MONAI readers (NIfTI, DICOM series) and the transform pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from migpt_traj.imaging.config import VolumeTransformConfig
from migpt_traj.imaging.reading import VolumeReader, reader_kind

RAW = VolumeTransformConfig(orientation=None, intensity="none", shape=(6, 5, 4))


def _volume(shape: tuple[int, int, int] = (6, 5, 4)) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def test_nifti_round_trip_is_exact(img: Any, tmp_path: Path) -> None:
    vol = _volume()
    path = img.nifti(tmp_path / "v.nii.gz", vol)
    out = VolumeReader(RAW).read(path)
    assert out.shape == (1, 6, 5, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], vol)


def test_dicom_series_round_trip_orders_slices_by_position(img: Any, tmp_path: Path) -> None:
    vol = _volume((6, 5, 4))  # rows x columns x slices
    folder = img.dicom_series(tmp_path / "series", vol)
    assert reader_kind(folder) == "pydicom"
    out = VolumeReader(VolumeTransformConfig(orientation=None, intensity="none", shape=(5, 6, 4))).read(folder)
    # MONAI indexes DICOM voxels (column, row, slice); the slices were written in reverse file-name order.
    np.testing.assert_array_equal(out[0], vol.transpose(1, 0, 2))


def test_dicom_reoriented_to_ras_flips_the_lps_in_plane_axes(img: Any, tmp_path: Path) -> None:
    vol = _volume((6, 5, 4))
    folder = img.dicom_series(tmp_path / "series", vol)
    out = VolumeReader(VolumeTransformConfig(orientation="RAS", intensity="none", shape=(5, 6, 4))).read(folder)
    # Orientation (1,0,0,0,1,0) in DICOM's LPS space: +column = left, +row = posterior; RAS reverses both.
    np.testing.assert_array_equal(out[0], vol.transpose(1, 0, 2)[::-1, ::-1, :])


def test_nifti_orientation_follows_the_affine(img: Any, tmp_path: Path) -> None:
    vol = _volume()
    path = img.nifti(tmp_path / "flip.nii", vol, affine=np.diag([-1.0, 1.0, 1.0, 1.0]))  # first axis runs R->L
    out = VolumeReader(VolumeTransformConfig(orientation="RAS", intensity="none", shape=(6, 5, 4))).read(path)
    np.testing.assert_array_equal(out[0], vol[::-1])


@pytest.mark.parametrize(
    ("transform", "check"),
    [
        pytest.param(
            VolumeTransformConfig(orientation=None, intensity="minmax", shape=(6, 5, 4)),
            lambda out, vol: np.testing.assert_allclose(out, (vol - vol.min()) / (vol.max() - vol.min()), atol=1e-6),
            id="minmax",
        ),
        pytest.param(
            VolumeTransformConfig(orientation=None, intensity="range", intensity_range=(10.0, 50.0), shape=(6, 5, 4)),
            lambda out, vol: np.testing.assert_allclose(out, np.clip((vol - 10.0) / 40.0, 0, 1), atol=1e-6),
            id="range-clipped",
        ),
        pytest.param(
            VolumeTransformConfig(orientation=None, intensity="zscore", shape=(6, 5, 4)),
            lambda out, vol: np.testing.assert_allclose(out, (vol - vol.mean()) / vol.std(), atol=1e-5),
            id="zscore",
        ),
        pytest.param(
            VolumeTransformConfig(orientation=None, intensity="none", shape=(8, 5, 2)),
            # pad (zeros, centred) along axis 0, centre-crop along axis 2
            lambda out, vol: np.testing.assert_array_equal(out, np.pad(vol, ((1, 1), (0, 0), (0, 0)))[:, :, 1:3]),
            id="pad-crop",
        ),
    ],
)
def test_transforms_match_their_closed_form(
    img: Any, tmp_path: Path, transform: VolumeTransformConfig, check: Any
) -> None:
    vol = _volume()
    out = VolumeReader(transform).read(img.nifti(tmp_path / "v.nii", vol))
    assert out.shape == (1, *transform.shape)
    check(out[0], vol)


def test_spacing_and_resize_give_the_configured_shape(img: Any, tmp_path: Path) -> None:
    vol = np.ones((4, 4, 4), dtype=np.float32)
    path = img.nifti(tmp_path / "aniso.nii", vol, affine=np.diag([1.0, 1.0, 2.0, 1.0]))  # 2 mm slices
    spaced = VolumeReader(
        VolumeTransformConfig(orientation=None, spacing_mm=(1.0, 1.0, 1.0), intensity="none", shape=(4, 4, 10))
    ).read(path)
    # 4 slices of 2 mm span 7 one-millimetre voxel centres; pad_crop puts them in the middle of 10.
    assert int((spaced[0, 1, 1] > 0.5).sum()) == 7
    resized = VolumeReader(VolumeTransformConfig(intensity="none", shape=(3, 3, 3), resize="resize")).read(path)
    assert resized.shape == (1, 3, 3, 3) and np.allclose(resized, 1.0)


def test_a_missing_or_unreadable_file_raises(img: Any, tmp_path: Path) -> None:
    reader = VolumeReader(RAW)
    with pytest.raises(FileNotFoundError, match="no such file"):
        reader.read(tmp_path / "nope.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a volume")
    with pytest.raises(ValueError, match=r"ImageFileError: .*not a gzip file"):
        reader.read(bad)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a NIfTI file"):
        reader.read(text)
    assert reader.reads == 1  # only the corrupt NIfTI got as far as the MONAI reader
