"""Reading imaging studies from disk with MONAI's readers and the configured MONAI transform pipeline.

NIfTI (``.nii``, ``.nii.gz``, ``.mgz``) is read with MONAI's ``NibabelReader``; a DICOM series (a folder of
``.dcm`` slices, or one ``.dcm`` file) with MONAI's ``PydicomReader`` (slices ordered by position, LPS to RAS).
The readers are used directly rather than through ``LoadImage``, which instantiates every registered reader on
each construction (and tries them all, printing tracebacks, when a file is bad). The transform pipeline
(:func:`build_transform`) is ``Orientation`` → ``Spacing`` → intensity scaling → ``ResizeWithPadOrCrop`` or
``Resize``, each step present only when configured. MONAI is imported on first use.

Example:
    >>> from migpt_traj.imaging.reading import VolumeReader  # doctest: +SKIP
    >>> VolumeReader().read("study.nii.gz").shape  # doctest: +SKIP
    (1, 32, 32, 32)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from migpt_traj.imaging.config import Reader, VolumeTransformConfig

__all__ = ["VolumeReader", "build_transform", "is_dicom_path", "reader_kind"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh", ".img", ".hdr")
_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


def is_dicom_path(path: Path) -> bool:
    """A folder (a DICOM series) or a file ending in ``.dcm`` / ``.dicom``."""
    return path.is_dir() or path.name.lower().endswith((".dcm", ".dicom"))


def reader_kind(path: Path, reader: Reader = "auto") -> Reader:
    """``"nibabel"`` or ``"pydicom"`` for ``path`` (``reader="auto"`` decides by suffix and folder-ness)."""
    if reader != "auto":
        return reader
    return "pydicom" if is_dicom_path(path) else "nibabel"


def build_transform(config: VolumeTransformConfig) -> Callable[[Any], Any]:
    """The MONAI ``Compose`` of the configured steps, applied to a channel-first ``MetaTensor``."""
    from monai.transforms import (
        Compose,
        NormalizeIntensity,
        Orientation,
        Resize,
        ResizeWithPadOrCrop,
        ScaleIntensity,
        ScaleIntensityRange,
        Spacing,
    )

    steps: list[Any] = []
    if config.orientation is not None:
        steps.append(Orientation(axcodes=config.orientation.upper(), labels=_AXIS_LABELS))
    if config.spacing_mm is not None:
        steps.append(Spacing(pixdim=config.spacing_mm, mode=config.interpolation))
    if config.intensity == "minmax":
        steps.append(ScaleIntensity(minv=0.0, maxv=1.0))
    elif config.intensity == "range":
        assert config.intensity_range is not None
        low, high = config.intensity_range
        steps.append(ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    elif config.intensity == "zscore":
        steps.append(NormalizeIntensity(nonzero=False, channel_wise=True))
    if config.resize == "pad_crop":
        steps.append(ResizeWithPadOrCrop(spatial_size=config.shape))
    else:
        mode = "trilinear" if config.interpolation == "bilinear" else "nearest"
        steps.append(Resize(spatial_size=config.shape, mode=mode))
    return Compose(steps)


@dataclass
class VolumeReader:
    """Reads one study into a ``(1, *shape)`` float32 array: MONAI reader, channel first, transforms.

    Attributes:
        transform: the pipeline options.
        reader: which MONAI reader (``"auto"``: by path, see :func:`reader_kind`).
        reads: number of volumes read so far by this object (the cache tests count on it).

    Raises (from :meth:`read`):
        FileNotFoundError: the path does not exist.
        ValueError: the reader or a transform failed, whatever the underlying library raised (its type and
            message are kept in the text); the embedder turns it into an
            :class:`~migpt_traj.errors.ImageReadError` naming the study.
    """

    transform: VolumeTransformConfig
    reader: Reader = "auto"
    reads: int = 0

    def __post_init__(self) -> None:
        self._pipeline: Callable[[Any], Any] | None = None
        self._readers: dict[str, Any] = {}

    def _reader(self, kind: str) -> Any:
        if kind not in self._readers:
            if kind == "pydicom":
                from monai.data import PydicomReader

                self._readers[kind] = PydicomReader()
            else:
                from monai.data import NibabelReader

                self._readers[kind] = NibabelReader()
        return self._readers[kind]

    def read(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The transformed volume at ``path``, shape ``(1, *transform.shape)``, float32, finite."""
        from monai.data import MetaTensor
        from monai.transforms import EnsureChannelFirst

        file = Path(path)
        if not file.exists():
            raise FileNotFoundError(f"no such file or folder: {str(file)!r}")
        kind = reader_kind(file, self.reader)
        if kind == "nibabel" and not file.name.lower().endswith(_NIFTI_SUFFIXES):
            raise ValueError(f"not a NIfTI file (expected one of {list(_NIFTI_SUFFIXES)})")
        reader = self._reader(kind)
        self.reads += 1
        try:
            image = reader.read(str(file))
            data, meta = reader.get_data(image)
            tensor = EnsureChannelFirst()(MetaTensor(np.asarray(data, dtype=np.float32), meta=meta))
            if self._pipeline is None:
                self._pipeline = build_transform(self.transform)
            out = np.asarray(self._pipeline(tensor).detach().cpu().numpy(), dtype=np.float32)
        except MemoryError:
            raise
        except Exception as err:  # nibabel, pydicom and MONAI raise many unrelated types for a bad file
            raise ValueError(f"{type(err).__name__}: {err}") from err
        if out.shape[0] != 1:
            raise ValueError(f"expected a single-channel volume, got {out.shape[0]} channels")
        if not np.isfinite(out).all():
            raise ValueError("the volume holds non-finite values after the transforms")
        return out
