"""Imaging studies from files (NIfTI, DICOM series) to time-stamped embeddings, through MONAI.

``IMAGE//<modality>`` events with an ``image_path`` are read with MONAI's readers, normalised by a configured
MONAI transform pipeline and embedded by a selectable encoder (precomputed, survival-pretrained 3D network,
self-supervised 3D autoencoder) fitted on train subjects only; embeddings are cached on disk by content hash.
The result is the ``embedding`` column the trajectory model already reads.

Names are loaded on first use, so ``from migpt_traj.imaging import ImagingConfig`` (what a config needs) imports
neither torch nor MONAI; MONAI itself is imported only when a network is built or a volume is read.

Example:
    >>> from migpt_traj.imaging import ImagingConfig
    >>> ImagingConfig().encoder
    'precomputed'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migpt_traj.imaging.cache import default_image_cache_dir
    from migpt_traj.imaging.config import ImagingConfig, VolumeTransformConfig
    from migpt_traj.imaging.embed import ENCODER_VERSION, ImageEmbedder, embed_images
    from migpt_traj.imaging.reading import VolumeReader
    from migpt_traj.imaging.report import ImagingReport

__all__ = [
    "ENCODER_VERSION",
    "ImageEmbedder",
    "ImagingConfig",
    "ImagingReport",
    "VolumeReader",
    "VolumeTransformConfig",
    "default_image_cache_dir",
    "embed_images",
]

_LAZY = {
    "ENCODER_VERSION": "migpt_traj.imaging.embed",
    "ImageEmbedder": "migpt_traj.imaging.embed",
    "embed_images": "migpt_traj.imaging.embed",
    "ImagingConfig": "migpt_traj.imaging.config",
    "VolumeTransformConfig": "migpt_traj.imaging.config",
    "ImagingReport": "migpt_traj.imaging.report",
    "VolumeReader": "migpt_traj.imaging.reading",
    "default_image_cache_dir": "migpt_traj.imaging.cache",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'migpt_traj.imaging' has no attribute {name!r}")
