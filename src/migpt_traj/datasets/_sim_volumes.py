"""Optional 3D volumes for the synthetic imaging studies (MONAI test images saved as NIfTI with nibabel).

Each ``IMAGE//ct`` study gets a 32^3 volume with one spherical lesion whose radius (voxels) grows with the
latent state at the study time: radius = clip(round(5 + 1.5 (z1 + z2)), 2, 14), plus uniform background noise.
Volumes are written one by one (MONAI's generator is per image), so this is meant for small cohorts.

The lesion radius is a function of the true state (z1 + z2) only, the same state the ``embedding`` column's
16-d simulator embedding is drawn from (``b + W (z1, z2) + noise``). :func:`study_lesions` gives, per imaging
study, the exact radius and the noise-free latent components, so that a benchmark can put an image encoder next
to the truth: the events' ``embedding`` is the true-state image embedding (with the simulator's noise), and
``radius`` is exactly what a volume shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from migpt_traj.datasets._sim_model import realized_z1, z_image
from migpt_traj.datasets._sim_params import DAYS_PER_YEAR, SimulatorParams

__all__ = ["VOLUME_SIZE", "lesion_radius", "study_lesions", "write_volumes"]

VOLUME_SIZE = 32
_DAY_US = 86_400_000_000


def lesion_radius(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """Lesion radius in voxels for latent severity z1 and imaging component z2."""
    return np.clip(np.round(5.0 + 1.5 * (z1 + z2)), 2, VOLUME_SIZE // 2 - 2).astype(np.int64)


def study_lesions(events: pl.DataFrame, latent: pl.DataFrame, params: SimulatorParams) -> pl.DataFrame:
    """Per imaging study of ``events`` (rows with ``params.image_code``, in event order): the truth behind its volume.

    Args:
        events: simulator events (or any subset keeping the imaging rows' ``subject_id`` and ``time``).
        latent: the latent table (``SyntheticTruth.subjects``).
        params: the simulator parameters (``SyntheticTruth.params``).

    Returns:
        ``subject_id, time, z_severity, z_image, radius``: latent severity z1 and imaging component z2 at the
        study time on the subject's own path, and the lesion radius in voxels drawn into the volume.
    """
    lat = {c: latent[c].to_numpy() for c in latent.columns}
    rows = events.filter(pl.col("code") == params.image_code).select("subject_id", "time")
    ids = rows["subject_id"].to_numpy()
    pos = np.searchsorted(lat["subject_id"], ids)
    time_us = rows["time"].cast(pl.Int64).to_numpy()
    u = (time_us - lat["entry_us"][pos]) / _DAY_US / DAYS_PER_YEAR
    z1, z2 = realized_z1(lat, params, pos, u), z_image(lat, pos, u)
    return rows.with_columns(
        z_severity=pl.Series(z1, dtype=pl.Float64),
        z_image=pl.Series(z2, dtype=pl.Float64),
        radius=pl.Series(lesion_radius(z1, z2), dtype=pl.Int64),
    )


def write_volumes(
    events: pl.DataFrame, latent: pl.DataFrame, params: SimulatorParams, volume_dir: Path, *, seed: int
) -> pl.DataFrame:
    """Write one NIfTI volume per imaging row of ``events`` and return the events with ``image_path``."""
    try:
        import nibabel as nib
        from monai.data.synthetic import create_test_image_3d
    except ImportError as err:  # pragma: no cover - both are project dependencies
        raise ImportError("volumes=True needs monai and nibabel: pip install monai nibabel") from err

    volume_dir.mkdir(parents=True, exist_ok=True)
    is_image = (events["code"] == params.image_code).to_numpy()
    lesions = study_lesions(events, latent, params)
    ids = lesions["subject_id"].to_numpy()
    time_us = lesions["time"].cast(pl.Int64).to_numpy()
    radius = lesions["radius"].to_numpy()
    paths: list[str] = []
    for k in range(ids.size):  # per-image work: MONAI draws one volume at a time
        state = np.random.RandomState(np.random.SeedSequence([seed, int(ids[k]), int(time_us[k])]).generate_state(1))
        image, _ = create_test_image_3d(
            VOLUME_SIZE,
            VOLUME_SIZE,
            VOLUME_SIZE,
            num_objs=1,
            rad_min=int(radius[k]),
            rad_max=int(radius[k]) + 1,
            noise_max=0.2,
            num_seg_classes=1,
            random_state=state,
        )
        path = volume_dir / f"{int(ids[k])}_{int(time_us[k])}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.eye(4)), str(path))
        paths.append(str(path.resolve()))
    column = np.full(events.height, None, dtype=object)
    column[np.flatnonzero(is_image)] = paths
    return events.with_columns(image_path=pl.Series(column.tolist(), dtype=pl.String))
