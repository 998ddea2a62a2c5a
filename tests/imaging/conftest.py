"""Builders for the imaging tests: tiny NIfTI files and DICOM series, and a tiny cohort whose studies are files.

Test modules get them through the ``img`` fixture (``img.nifti(...)``, ``img.dicom_series(...)``,
``img.cohort(...)``), not ``from conftest import ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from migpt_traj.data.cohort import Cohort
from migpt_traj.imaging.config import ImagingConfig, VolumeTransformConfig

SIDE = 8  # voxels per axis of the test volumes


def write_nifti(path: Path, volume: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``volume`` (float32) as NIfTI with nibabel (identity affine unless given)."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.eye(4) if affine is None else affine), str(path))
    return path


def write_dicom_series(
    folder: Path, volume: np.ndarray, *, spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)
) -> Path:
    """One CT slice file per ``volume[:, :, k]`` (rows x columns = volume axes 0 x 1), int16, axial, with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientID, ds.InstanceNumber = "CT", "1", k + 1
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[0], spacing[1]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = volume.shape[0], volume.shape[1]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].astype(np.int16)).tobytes()
        # Written in reverse order: the reader must sort slices by position, not by file name.
        ds.save_as(folder / f"{volume.shape[2] - k:03d}.dcm", enforce_file_format=True)
    return folder


def lesion_volume(size: float, seed: int) -> np.ndarray:
    """An ``SIDE``^3 volume: uniform noise in [0, 0.2) plus a bright ball of radius ``size`` voxels at the centre."""
    rng = np.random.default_rng(seed)
    grid = np.indices((SIDE, SIDE, SIDE)) - (SIDE - 1) / 2
    ball = (grid**2).sum(axis=0) <= size**2
    return (rng.random((SIDE, SIDE, SIDE)) * 0.2 + ball).astype(np.float32)


def image_cohort(tiny: Any, root: Path, *, n_subjects: int = 30, lag_days: float = 5.0, seed: int = 0) -> Cohort:
    """The shared tiny cohort (labs + ``IMAGE//ct`` studies) with each study saved as an ``.nii`` file.

    The ball radius is ``1 + clip(r + 1.5, 0, 2.5)`` with ``r`` the study's first embedding entry (the latent
    risk plus noise), so the volumes carry the risk signal. Images become available ``lag_days`` after they are
    taken.
    """
    events = tiny.events(n_subjects, seed=seed, images=True, lag_days=lag_days)
    rows = np.flatnonzero((events["code"] == "IMAGE//ct").to_numpy())
    paths = np.full(events.height, None, dtype=object)
    first = events["embedding"].list.first().to_numpy()
    sids = events["subject_id"].to_numpy()
    for k, row in enumerate(rows):
        size = 1.0 + float(np.clip(first[row] + 1.5, 0.0, 2.5))
        paths[row] = str(write_nifti(root / f"s{sids[row]}_{k}.nii", lesion_volume(size, seed=k)))
    events = events.with_columns(image_path=pl.Series(paths.tolist(), dtype=pl.String))
    present = set(events["code"].unique().to_list())
    outcomes = [o for o in ("MEDS_DEATH", "TRANSPLANT") if o in present]
    return Cohort.from_events(events, outcomes=outcomes, splits=tiny.splits(n_subjects))


def small_config(**changes: Any) -> ImagingConfig:
    """A fast autoencoder on ``SIDE``^3 volumes (2 epochs, widths 2 and 4)."""
    base: dict[str, Any] = {
        "encoder": "autoencoder",
        "embedding_dim": 4,
        "widths": (2, 4),
        "epochs": 2,
        "batch_size": 16,
        "threads": 1,
        "transform": VolumeTransformConfig(shape=(SIDE, SIDE, SIDE)),
    }
    return ImagingConfig(**{**base, **changes})


class ImagingBuilders:
    """The builders of this module, as one object handed to tests by the ``img`` fixture."""

    side = SIDE
    nifti = staticmethod(write_nifti)
    dicom_series = staticmethod(write_dicom_series)
    lesion = staticmethod(lesion_volume)
    cohort = staticmethod(image_cohort)
    config = staticmethod(small_config)


@pytest.fixture(scope="session")
def img() -> type[ImagingBuilders]:
    return ImagingBuilders
