"""The MONAI 3D networks behind the trained image encoders, their safetensors weights and their identity.

* ``"survival"``: a MONAI ``DenseNet`` (``init_features = growth_rate = widths[0]``, one dense block of two
  layers per entry of ``widths``) or ``ResNet`` (one basic block per stage, the 4 stage channels ``widths``) whose
  ``embedding_dim`` outputs are the embedding, followed by a linear piecewise-exponential survival head
  (``n_causes x n_bins`` log hazards per day). Only the backbone is needed to embed.
* ``"autoencoder"``: a MONAI ``VarAutoEncoder`` (encoder channels ``widths``, stride 2 each) with an
  ``embedding_dim`` latent; the embedding is the latent mean.

Weights files are safetensors holding the MONAI network's own ``state_dict`` keys (a user's MONAI network of the
same configuration loads as is); the survival head, when saved, sits under the ``survival_head.`` prefix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from migpt_traj.errors import ConfigError
from migpt_traj.imaging.config import ImagingConfig

__all__ = ["HEAD_PREFIX", "EncoderNetwork", "build_network", "load_weights", "state_digest"]

HEAD_PREFIX = "survival_head."


class EncoderNetwork(nn.Module):
    """A MONAI 3D network (``body``) mapping ``(B, 1, *shape)`` volumes to ``(B, embedding_dim)`` embeddings.

    ``head`` (survival encoder only) maps embeddings to ``(B, n_causes, n_bins)`` log hazards per day.
    """

    def __init__(self, body: nn.Module, *, kind: str, head: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.kind = kind
        self.head = head

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of a batch of volumes (the latent mean for the autoencoder)."""
        if self.kind == "autoencoder":
            mu, _ = self.body.encode_forward(x)  # type: ignore[operator]
            return mu
        return self.body(x)

    @torch.no_grad()
    def set_head_bias(self, log_hazard: Any) -> None:
        """Start the survival head at ``(n_causes, n_bins)`` log hazards (its bias), whatever the embedding."""
        assert isinstance(self.head, nn.Sequential)
        linear = self.head[0]
        assert isinstance(linear, nn.Linear) and linear.bias is not None
        linear.bias.copy_(torch.as_tensor(log_hazard, dtype=torch.float32).reshape(-1))

    def weights(self) -> dict[str, torch.Tensor]:
        """Body weights under their MONAI names, head weights under :data:`HEAD_PREFIX` (contiguous CPU)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.body.state_dict().items()}
        if self.head is not None:
            state.update({HEAD_PREFIX + k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()})
        return state


def build_network(config: ImagingConfig, *, n_causes: int = 1) -> EncoderNetwork:
    """A freshly initialised network for ``config`` (initialised from torch's global generator: seed it first)."""
    from monai.networks.nets import DenseNet, ResNet, VarAutoEncoder

    dim, widths = config.embedding_dim, config.widths
    if config.encoder == "autoencoder":
        factor = 2 ** len(widths)
        if any(s % factor or s < 2 * factor for s in config.transform.shape):
            raise ConfigError(
                f"The autoencoder halves the volume {len(widths)} times (one per width in {list(widths)}), so each "
                f"axis of 'transform.shape' {list(config.transform.shape)} must be a multiple of {factor} and at "
                f"least {2 * factor} voxels (its normalisation needs more than one voxel); use fewer widths."
            )
        body: nn.Module = VarAutoEncoder(
            spatial_dims=3,
            in_shape=(1, *config.transform.shape),
            out_channels=1,
            latent_size=dim,
            channels=widths,
            strides=(2,) * len(widths),
            use_sigmoid=config.transform.intensity in ("minmax", "range"),
        )
        return EncoderNetwork(body, kind="autoencoder")
    if config.encoder != "survival":
        raise ConfigError(f"Encoder {config.encoder!r} has no network; use 'survival' or 'autoencoder'.")
    if config.network == "densenet":
        body = DenseNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=dim,
            init_features=widths[0],
            growth_rate=widths[0],
            block_config=(2,) * len(widths),
            bn_size=2,
        )
    else:
        body = ResNet(
            block="basic",
            layers=[1] * len(widths),
            block_inplanes=list(widths),
            spatial_dims=3,
            n_input_channels=1,
            conv1_t_size=3,
            conv1_t_stride=2,
            num_classes=dim,
        )
    head = nn.Linear(dim, n_causes * config.n_bins)
    return EncoderNetwork(body, kind="survival", head=nn.Sequential(head, nn.Unflatten(1, (n_causes, config.n_bins))))


def load_weights(network: EncoderNetwork, path: str | Path) -> dict[str, str]:
    """Load a safetensors weights file into ``network`` (strict on the body; the head only if present).

    Returns:
        The file's string metadata (``{}`` when it has none).

    Raises:
        ConfigError: the file is missing, not safetensors, or its tensors do not fit the network (the first
            missing, unexpected or mis-shaped keys are named).
    """
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Imaging weights file {str(file)!r} does not exist.")
    try:
        with safe_open(str(file), framework="pt") as fh:
            metadata: dict[str, str] = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as err:
        raise ConfigError(f"Imaging weights file {str(file)!r} is not a readable safetensors file: {err}") from err
    body = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    head = {k[len(HEAD_PREFIX) :]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    _load_strict(network.body, body, file, "network")
    if head and network.head is not None:
        _load_strict(network.head, head, file, "survival head")
    return metadata


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], file: Path, what: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]} ({len(missing)} in all)")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]} ({len(unexpected)} in all)")
        if shapes:
            k = shapes[0]
            parts.append(f"shape of {k!r} is {tuple(state[k].shape)}, the {what} needs {tuple(own[k].shape)}")
        raise ConfigError(
            f"Imaging weights file {str(file)!r} does not fit the configured {what}: {'; '.join(parts)}. Check "
            f"'network', 'widths', 'embedding_dim' and 'transform.shape'."
        )
    module.load_state_dict(state)


def state_digest(state: dict[str, torch.Tensor], extra: Any = None) -> str:
    """16 hex digits over tensor names, dtypes, shapes and bytes (plus ``extra``): an encoder's identity."""
    hasher = hashlib.sha256(repr(extra).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        hasher.update(f"\0{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:16]
