"""Typed configuration shared by the API, the CLI and tuning (YAML files in ``configs/``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from migpt_traj.errors import ConfigError, did_you_mean
from migpt_traj.imaging.config import ImagingConfig

__all__ = ["Accelerator", "Strategy", "TrajectoryConfig", "bundled_config_path"]

Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]
# Launchers that keep rank 0 in the calling process (Lightning's ``ddp`` subprocess launcher, torchrun, SLURM), so
# the best-epoch weights and the history stay with the returned model. The spawn/fork launchers (``ddp_spawn``,
# ``ddp_fork``, ``ddp_notebook``) train in child processes and hand back only the last weights: not offered.
# FSDP is not offered: Lightning runs it on GPUs only, it is untested here, and the best-epoch callback would need a
# gathered full state dict; at this model size DDP is the faster choice anyway (docs/scaling.md).
Strategy = Literal["auto", "ddp", "ddp_find_unused_parameters_true"]
_SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")
_SHARDING = ("fsdp", "fsdp_cpu_offload", "deepspeed")


@dataclass(frozen=True)
class TrajectoryConfig:
    """Everything that defines a model and its training. Durations in days.

    Model: ``d_model``, ``n_layers``, ``n_heads``, ``dropout``, ``n_bins`` (piecewise-exponential time bins at
    train event-time quantiles), ``max_len`` (tokens per sequence, start token included).
    Training: ``max_epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``rank_weight`` and ``rank_sigma``
    (Dynamic-DeepHit's ranking term added to the likelihood; 0 = likelihood only), ``patience`` (early stopping on the
    tuning split's loss), ``seed``, ``deterministic``, ``extra_queries_per_subject`` (random prediction times per
    train subject besides every event time), ``progress`` (``True``: Lightning's bar and migpt_traj's bars where
    someone is watching, see :mod:`migpt_traj._progress`; ``False``: quiet).
    Scale (Lightning Trainer arguments, see ``docs/scaling.md``): ``accelerator`` (``"cpu"``, ``"gpu"``, ...),
    ``devices`` (processes per node, one per device), ``num_nodes``, ``strategy`` (``"auto"``: one process, or
    ``"ddp"`` when ``devices * num_nodes > 1``; ``"ddp"``, ``"ddp_find_unused_parameters_true"``).
    ``batch_size`` is per process: the global batch is ``batch_size * devices * num_nodes``.
    Data: ``min_code_count`` (rarer train codes map to unknown), ``use_notes``, ``use_images``, ``note_model``
    (``"all-MiniLM-L6-v2"``, shipped offline, or a local Hugging Face model directory), ``note_cache_dir``.
    ``horizons_days``: the default horizons reported by the CLI.
    Imaging: ``imaging`` (:class:`migpt_traj.imaging.ImagingConfig`, the YAML ``imaging`` section): how
    ``IMAGE//`` events with an ``image_path`` become embeddings (encoder, MONAI transforms, cache, missing files).
    Forecasts (``model.forecast``): ``forecast_weight`` (weight of the auxiliary loss on observed future values,
    trained jointly with the survival likelihood; 0: the forecast head keeps its closed-form stage-1 linear fit),
    ``forecast_horizon_days`` (future values up to this many days after a prediction time are training targets),
    ``forecast_targets_per_query`` (future values sampled per prediction time and training step).
    """

    # model
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    n_bins: int = 12
    max_len: int = 512
    # training
    max_epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    rank_weight: float = 0.0
    rank_sigma: float = 0.1
    patience: int = 5
    seed: int = 0
    deterministic: bool = True
    extra_queries_per_subject: int = 2
    accelerator: Accelerator = "cpu"
    devices: int = 1
    num_nodes: int = 1
    strategy: Strategy = "auto"
    progress: bool = True
    # data
    min_code_count: int = 1
    use_notes: bool = True
    use_images: bool = True
    note_model: str = "all-MiniLM-L6-v2"
    note_cache_dir: str | None = None
    horizons_days: tuple[float, ...] = field(default=(365.25, 1095.75, 1826.25))
    outcomes: tuple[str, ...] | None = None
    imaging: ImagingConfig = field(default_factory=ImagingConfig)
    # forecasts
    forecast_weight: float = 0.2
    forecast_horizon_days: float = 1095.75
    forecast_targets_per_query: int = 8

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            (
                "d_model",
                self.d_model > 0 and self.d_model % self.n_heads == 0,
                "a positive multiple of n_heads",
            ),
            ("n_layers", self.n_layers >= 1, ">= 1"),
            ("n_heads", self.n_heads >= 1, ">= 1"),
            ("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)"),
            ("n_bins", self.n_bins >= 1, ">= 1"),
            ("max_len", self.max_len >= 2, ">= 2"),
            ("max_epochs", self.max_epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("rank_weight", self.rank_weight >= 0, ">= 0"),
            ("rank_sigma", self.rank_sigma > 0, "> 0"),
            ("patience", self.patience >= 1, ">= 1"),
            ("extra_queries_per_subject", self.extra_queries_per_subject >= 0, ">= 0"),
            ("min_code_count", self.min_code_count >= 1, ">= 1"),
            ("devices", _is_int(self.devices) and self.devices >= 1, "an integer >= 1"),
            ("num_nodes", _is_int(self.num_nodes) and self.num_nodes >= 1, "an integer >= 1"),
            ("forecast_weight", self.forecast_weight >= 0, ">= 0"),
            ("forecast_horizon_days", self.forecast_horizon_days > 0, "> 0 days"),
            ("forecast_targets_per_query", self.forecast_targets_per_query >= 1, ">= 1"),
        ]
        for name, ok, valid in checks:
            if not ok:
                raise ConfigError(f"Config '{name}' = {getattr(self, name)!r} is invalid; it must be {valid}.")
        self._check_scale()
        if any(h <= 0 for h in self.horizons_days):
            raise ConfigError(f"Config 'horizons_days' must be positive days; got {list(self.horizons_days)}.")

    def _check_scale(self) -> None:
        for name, choices in (("accelerator", get_args(Accelerator)), ("strategy", get_args(Strategy))):
            value = getattr(self, name)
            if value not in choices:
                why = ""
                if name == "strategy" and value in _SPAWNING:
                    why = (
                        " Spawn/fork launchers train in child processes and return only the last weights (no best"
                        " epoch, no history); use 'ddp' from a script (Lightning starts the other ranks) or"
                        " torchrun/srun."
                    )
                elif name == "strategy" and str(value).startswith(_SHARDING):
                    why = (
                        " Sharded training is not offered yet: a replica of this model fits on any device, so"
                        " 'ddp' is faster (see docs/scaling.md, 'FSDP')."
                    )
                raise ConfigError(
                    f"Config '{name}' = {value!r} is not supported; use one of {list(choices)}.{why}"
                    + ("" if why else did_you_mean(str(value), choices))
                )

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrajectoryConfig:
        """Build from a (possibly nested by section) mapping; unknown keys raise with a suggestion."""
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict) and key in ("model", "train", "training", "data"):
                flat.update(value)
            else:
                flat[key] = value
        names = {f.name for f in dataclasses.fields(cls)}
        for key in flat:
            if key not in names:
                raise ConfigError(f"Unknown config key {key!r} in {source}.{did_you_mean(key, names)}")
        for key in ("horizons_days", "outcomes"):
            if flat.get(key) is not None:
                flat[key] = tuple(flat[key])
        if isinstance(flat.get("imaging"), dict):
            flat["imaging"] = ImagingConfig.from_dict(flat["imaging"], source=f"{source}: imaging")
        try:
            return cls(**flat)
        except TypeError as err:
            raise ConfigError(f"Invalid config in {source}: {err}") from err

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrajectoryConfig:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"Cannot read config file {str(path)!r}: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"Config file {str(path)!r} must hold a mapping, not {type(data).__name__}.")
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> TrajectoryConfig:
        return self.from_dict({**self.to_dict(), **changes}, source="overrides")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["horizons_days"] = list(self.horizons_days)
        out["outcomes"] = list(self.outcomes) if self.outcomes is not None else None
        out["imaging"] = self.imaging.to_dict()
        return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def bundled_config_path(name: Literal["pbc2", "synthetic", "ddp_2gpu", "slurm_2x4gpu"]) -> Path:
    """Path of a YAML config shipped with the package (the same files as the repository's ``configs/``)."""
    from importlib.resources import files

    path = Path(str(files("migpt_traj") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise ConfigError(
            f"No bundled config {name!r}; valid names are 'pbc2', 'synthetic', 'ddp_2gpu' and 'slurm_2x4gpu'."
        )
    return path
