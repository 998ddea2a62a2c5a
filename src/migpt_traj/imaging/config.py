"""Typed options of the imaging path: how volumes are read and normalised, and which encoder embeds them.

Both dataclasses are frozen and load from the ``imaging`` section of a YAML config (top level or nested under
``data``) with :meth:`ImagingConfig.from_dict` / :meth:`ImagingConfig.from_yaml`; unknown keys raise a
:class:`~migpt_traj.errors.ConfigError` with a "did you mean" suggestion.

Example:
    >>> from migpt_traj.imaging.config import ImagingConfig
    >>> cfg = ImagingConfig.from_dict({"encoder": "autoencoder", "transform": {"shape": [16, 16, 16]}})
    >>> cfg.encoder, cfg.transform.shape
    ('autoencoder', (16, 16, 16))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from migpt_traj.errors import ConfigError, did_you_mean

__all__ = ["EncoderKind", "ImagingConfig", "MissingImagePolicy", "VolumeTransformConfig"]

EncoderKind = Literal["precomputed", "survival", "autoencoder"]
Network = Literal["densenet", "resnet"]
MissingImagePolicy = Literal["error", "skip"]
Reader = Literal["auto", "nibabel", "pydicom"]
Intensity = Literal["minmax", "range", "zscore", "none"]
ResizeMode = Literal["pad_crop", "resize"]
Interpolation = Literal["bilinear", "nearest"]


def _choice(name: str, value: Any, options: Any) -> None:
    valid = get_args(options)
    if value not in valid:
        raise ConfigError(
            f"Imaging config {name!r} = {value!r} is invalid; use one of {list(valid)}."
            + did_you_mean(str(value), valid)
        )


def _positive_ints(name: str, value: Any, *, length: int | None = None) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"Imaging config {name!r} = {value!r} must be a list of positive integers.") from err
    if not out or any(v < 1 for v in out) or (length is not None and len(out) != length):
        size = f"{length} " if length is not None else ""
        raise ConfigError(f"Imaging config {name!r} = {list(out)} must be {size}positive integers.")
    return out


@dataclass(frozen=True)
class VolumeTransformConfig:
    """The MONAI transform pipeline applied to every volume after reading (in this order).

    Attributes:
        orientation: axis codes to reorient to (MONAI ``Orientation``, e.g. ``"RAS"``); ``None`` keeps the
            stored orientation.
        spacing_mm: voxel spacing (mm) to resample to (MONAI ``Spacing``); ``None`` keeps the stored spacing.
        intensity: ``"minmax"`` rescales each volume to [0, 1] (MONAI ``ScaleIntensity``); ``"range"`` maps
            ``intensity_range`` (e.g. Hounsfield units ``[-1000, 1000]``) to [0, 1] and clips
            (``ScaleIntensityRange``); ``"zscore"`` subtracts each volume's mean and divides by its standard
            deviation (``NormalizeIntensity``); ``"none"`` keeps the stored values.
        intensity_range: ``(low, high)`` input values for ``intensity="range"``.
        shape: final spatial shape in voxels (every encoder sees this shape).
        resize: ``"pad_crop"`` pads or centre-crops to ``shape`` (keeps the voxel size; MONAI
            ``ResizeWithPadOrCrop``), ``"resize"`` interpolates to it (MONAI ``Resize``).
        interpolation: interpolation for ``Spacing`` and ``Resize``.
    """

    orientation: str | None = "RAS"
    spacing_mm: tuple[float, float, float] | None = None
    intensity: Intensity = "minmax"
    intensity_range: tuple[float, float] | None = None
    shape: tuple[int, int, int] = (32, 32, 32)
    resize: ResizeMode = "pad_crop"
    interpolation: Interpolation = "bilinear"

    def __post_init__(self) -> None:
        _choice("transform.intensity", self.intensity, Intensity)
        _choice("transform.resize", self.resize, ResizeMode)
        _choice("transform.interpolation", self.interpolation, Interpolation)
        object.__setattr__(self, "shape", _positive_ints("transform.shape", self.shape, length=3))
        if self.orientation is not None and (
            len(self.orientation) != 3 or {c for c in self.orientation.upper()} - set("LRAPIS")
        ):
            raise ConfigError(
                f"Imaging config 'transform.orientation' = {self.orientation!r} must be three axis codes from "
                f"L/R, A/P, I/S (e.g. 'RAS'), or null to keep the stored orientation."
            )
        if self.spacing_mm is not None:
            spacing = tuple(float(v) for v in self.spacing_mm)
            if len(spacing) != 3 or not all(math.isfinite(v) and v > 0 for v in spacing):
                raise ConfigError(
                    f"Imaging config 'transform.spacing_mm' = {list(spacing)} must be three positive millimetres."
                )
            object.__setattr__(self, "spacing_mm", spacing)
        if self.intensity == "range":
            rng = self.intensity_range
            if rng is None or len(rng) != 2 or not float(rng[0]) < float(rng[1]):
                raise ConfigError(
                    f"Imaging config intensity='range' needs 'transform.intensity_range' = [low, high] with "
                    f"low < high; got {rng!r}."
                )
            object.__setattr__(self, "intensity_range", (float(rng[0]), float(rng[1])))

    def fingerprint(self) -> str:
        """16 hex digits identifying the pipeline (part of every embedding's cache key)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ImagingConfig:
    """Which encoder turns ``IMAGE//<modality>`` studies into embeddings, and how it is trained.

    Encoders (``encoder``):

    * ``"precomputed"``: the ``embedding`` column is used as given; no file is read (today's path).
    * ``"survival"``: a small MONAI 3D network (``network``: DenseNet or ResNet) is *pretrained* on the train
      split's volumes with a piecewise-exponential competing-risk likelihood of the time from each study to the
      first outcome, then frozen; its ``embedding_dim`` outputs (the layer before the survival head) are the
      embedding. Two-stage: the network is not trained jointly with the trajectory transformer.
    * ``"autoencoder"``: a MONAI ``VarAutoEncoder`` trained self-supervised (reconstruction + ``kl_weight`` KL)
      on the train split's volumes only, then frozen; the latent mean is the embedding.

    Attributes:
        encoder: see above.
        network: backbone of the ``"survival"`` encoder.
        embedding_dim: length of the embedding vectors.
        widths: channel widths of the network stages (tiny defaults, for CPU).
        epochs, batch_size, lr, weight_decay: training of the ``"survival"`` and ``"autoencoder"`` encoders.
        n_bins: piecewise-exponential time bins of the survival head (at train event-time quantiles).
        kl_weight: weight of the KL term of the autoencoder (0 = plain autoencoder on the latent mean).
        max_train_volumes: at most this many train studies (a seeded subsample) are held in memory for training.
        seed: seed of initialisation, shuffling and subsampling.
        weights: a ``.safetensors`` file with the encoder network's weights (never pickle). Loaded and frozen
            instead of training, unless ``fine_tune``.
        fine_tune: train starting from ``weights`` instead of using them as they are.
        on_missing_image: ``"error"`` raises :class:`~migpt_traj.errors.ImageReadError` for a missing or
            unreadable file; ``"skip"`` warns once and drops those imaging events (counted in the report).
        reader: ``"auto"`` picks nibabel for ``.nii``/``.nii.gz``/``.mgz`` files and pydicom for a DICOM series
            folder or a ``.dcm`` file.
        batch_size_embed: volumes per forward pass when embedding.
        threads: torch intra-op threads during fit and transform (restored afterwards); ``None`` keeps torch's
            setting. The tiny default networks run fastest on 1 thread when the CPU is shared.
        cache_dir: embedding cache root (``None``: ``$MIGPT_TRAJ_CACHE/images`` or the platform cache).
        use_cache: ``False`` disables the cache (nothing read or written).
        transform: the volume transform pipeline.
    """

    encoder: EncoderKind = "precomputed"
    network: Network = "densenet"
    embedding_dim: int = 16
    widths: tuple[int, ...] = (4, 8, 16)
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    n_bins: int = 6
    kl_weight: float = 1e-3
    max_train_volumes: int = 4096
    seed: int = 0
    weights: str | None = None
    fine_tune: bool = False
    on_missing_image: MissingImagePolicy = "error"
    reader: Reader = "auto"
    batch_size_embed: int = 32
    threads: int | None = None
    cache_dir: str | None = None
    use_cache: bool = True
    transform: VolumeTransformConfig = field(default_factory=VolumeTransformConfig)

    def __post_init__(self) -> None:
        _choice("encoder", self.encoder, EncoderKind)
        _choice("network", self.network, Network)
        _choice("on_missing_image", self.on_missing_image, MissingImagePolicy)
        _choice("reader", self.reader, Reader)
        object.__setattr__(self, "widths", _positive_ints("widths", self.widths))
        for name in ("embedding_dim", "epochs", "batch_size", "n_bins", "max_train_volumes", "batch_size_embed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Imaging config {name!r} = {value!r} is invalid; it must be an integer >= 1.")
        if self.threads is not None and (isinstance(self.threads, bool) or int(self.threads) < 1):
            raise ConfigError(f"Imaging config 'threads' = {self.threads!r} is invalid; use an integer >= 1 or null.")
        for name, ok, valid in (
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("kl_weight", self.kl_weight >= 0, ">= 0"),
        ):
            if not ok or not math.isfinite(getattr(self, name)):
                raise ConfigError(f"Imaging config {name!r} = {getattr(self, name)!r} is invalid; it must be {valid}.")
        if self.encoder == "survival" and self.network == "resnet" and len(self.widths) != 4:
            raise ConfigError(
                f"Imaging config network='resnet' needs 4 'widths' (one per ResNet stage, e.g. [4, 8, 16, 32]); "
                f"got {list(self.widths)}."
            )
        if self.weights is not None and not str(self.weights).endswith(".safetensors"):
            raise ConfigError(
                f"Imaging config 'weights' = {self.weights!r} must be a .safetensors file (pickled torch files "
                f"are never loaded); convert with safetensors.torch.save_file(model.state_dict(), path)."
            )
        if self.fine_tune and self.weights is None:
            raise ConfigError("Imaging config 'fine_tune' = true needs 'weights', the file to start from.")
        if self.encoder == "precomputed" and self.weights is not None:
            raise ConfigError("Imaging config 'weights' needs encoder 'survival' or 'autoencoder', not 'precomputed'.")
        if not isinstance(self.transform, VolumeTransformConfig):
            raise ConfigError(f"Imaging config 'transform' must be a VolumeTransformConfig; got {self.transform!r}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, source: str = "imaging config") -> ImagingConfig:
        """Build from a mapping (the YAML ``imaging`` section); ``transform`` may be a nested mapping."""
        data = dict(data or {})
        transform = data.pop("transform", None)
        names = {f.name for f in dataclasses.fields(cls)} - {"transform"}
        t_names = {f.name for f in dataclasses.fields(VolumeTransformConfig)}
        for key in data:
            if key not in names:
                hint = " (a transform option: put it under 'transform')" if key in t_names else ""
                raise ConfigError(f"Unknown imaging config key {key!r} in {source}{hint}.{did_you_mean(key, names)}")
        if isinstance(transform, dict):
            for key in transform:
                if key not in t_names:
                    raise ConfigError(
                        f"Unknown imaging config key 'transform.{key}' in {source}.{did_you_mean(key, t_names)}"
                    )
            transform = VolumeTransformConfig(**_tuples(transform))
        elif transform is not None and not isinstance(transform, VolumeTransformConfig):
            raise ConfigError(f"Imaging config 'transform' in {source} must be a mapping; got {transform!r}.")
        return cls(**_tuples(data), **({"transform": transform} if transform is not None else {}))

    @classmethod
    def from_yaml(cls, path: str | Path) -> ImagingConfig:
        """The ``imaging`` section of a YAML file (top level or under ``data``); defaults when absent."""
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"Cannot read config file {str(path)!r}: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"Config file {str(path)!r} must hold a mapping, not {type(data).__name__}.")
        section = data.get("imaging", (data.get("data") or {}).get("imaging"))
        return cls.from_dict(section, source=f"{path}: imaging")

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-friendly dict; :meth:`from_dict` inverts it."""
        out = dataclasses.asdict(self)
        out["widths"] = list(self.widths)
        out["transform"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["transform"].items()}
        return out

    def training_fingerprint(self) -> str:
        """16 hex digits over every option that changes a trained encoder (not caching or reading options)."""
        keep = {k: v for k, v in self.to_dict().items() if k not in ("on_missing_image", "cache_dir", "use_cache")}
        keep.pop("batch_size_embed")
        keep.pop("threads")
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
