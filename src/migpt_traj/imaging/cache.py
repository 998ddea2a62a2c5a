"""On-disk caches of the imaging path: file content hashes, embeddings and fitted encoders.

Layout under the cache root (every part is optional and the whole folder is safe to delete at any time; a
missing or damaged file is a cache miss, never an error)::

    hashes.parquet                      stat signature -> SHA-256 of the content (a memo, see below)
    embeddings/<namespace>/*.npz        shards: keys (S64 hex SHA-256 of the volume's content), vectors (float32)
    embeddings/<namespace>/identity.json what the namespace means (encoder, weights hash, transform)
    encoders/<key>.safetensors          fitted encoder weights (+ JSON metadata in the safetensors header)

An embedding's key is the SHA-256 of the study's *content* (a file's bytes; for a DICOM folder, every file's
relative name, size and bytes in sorted order), looked up in the namespace ``<encoder identity>-<transform
fingerprint>``, where the identity hashes the encoder's weights. So a changed file, other weights or another
transform all miss; a renamed or copied file hits. The content hash itself is memoised by the file's stat
signature (resolved path, size, modification time in ns, inode): an unchanged file is not even re-hashed. Every
write goes to a temporary name first and is renamed into place, so readers never see half a file; concurrent
writers at worst lose a memo entry or write the same shard twice. ``.npz`` files are read with
``allow_pickle=False``; encoder weights are safetensors, never pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migpt_traj.errors import MigptTrajWarning

__all__ = ["EmbeddingStore", "HashIndex", "atomic_write", "content_hash", "default_image_cache_dir"]

_KEY_DTYPE = np.dtype("S64")
_CHUNK = 1 << 20


def default_image_cache_dir() -> Path:
    """``$MIGPT_TRAJ_CACHE/images`` if set, else the platform cache dir + ``migpt_traj/images`` (created lazily).

    The same root as the note cache (:func:`migpt_traj.encoders.notes.default_cache_dir`), beside it.
    """
    from migpt_traj.encoders.notes import default_cache_dir

    return default_cache_dir().parent / "images"


def atomic_write(target: Path, write: Callable[[Any], Any]) -> None:
    """Write ``target`` through ``write(binary file)`` into a temporary file, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _files(path: Path) -> list[Path]:
    """The files making up a study: the file itself, or every file below a folder (sorted, hidden ones skipped)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [path]


def _signature(path: Path) -> str:
    """Resolved path, size, mtime (ns) and inode of the study's files: changes whenever their content may have."""
    parts = [str(path.resolve())]
    for file in _files(path):
        st = file.stat()
        parts.append(f"{file.relative_to(path) if file != path else ''}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}")
    return "\n".join(parts)


def content_hash(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a study's content: a file's bytes, or a folder's files (relative names, sizes, bytes).

    Raises:
        FileNotFoundError: the path does not exist.
        OSError: a file cannot be read.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no such file or folder: {str(root)!r}")
    hasher = hashlib.sha256()
    is_dir = root.is_dir()
    for file in _files(root):
        if is_dir:
            hasher.update(f"\0{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                hasher.update(chunk)
    return hasher.hexdigest()


class HashIndex:
    """Memo ``stat signature -> content hash`` kept in ``<root>/hashes.parquet`` (or in memory only).

    Args:
        root: cache root, or ``None`` for an in-memory memo.
    """

    def __init__(self, root: Path | None) -> None:
        self.path = root / "hashes.parquet" if root is not None else None
        self._memo: dict[str, str] = {}
        self._new: dict[str, str] = {}
        self.hashed = 0  # studies whose bytes were hashed (memo misses)
        if self.path is not None and self.path.is_file():
            with contextlib.suppress(OSError, pl.exceptions.PolarsError):
                frame = pl.read_parquet(self.path)
                self._memo = dict(zip(frame["signature"].to_list(), frame["digest"].to_list(), strict=True))

    def digest(self, path: str | os.PathLike[str]) -> str:
        """Content hash of ``path`` (memoised by its stat signature). Raises as :func:`content_hash`."""
        file = Path(path)
        if not file.exists():
            raise FileNotFoundError(f"no such file or folder: {str(file)!r}")
        signature = _signature(file)
        found = self._memo.get(signature)
        if found is None:
            found = content_hash(file)
            self.hashed += 1
            self._memo[signature] = found
            self._new[signature] = found
        return found

    def save(self) -> None:
        """Merge new entries into the memo file (re-read first, so parallel writers rarely lose entries)."""
        if self.path is None or not self._new:
            return
        merged = dict(self._new)
        if self.path.is_file():
            with contextlib.suppress(OSError, pl.exceptions.PolarsError):
                old = pl.read_parquet(self.path)
                merged = {**dict(zip(old["signature"].to_list(), old["digest"].to_list(), strict=True)), **merged}
        frame = pl.DataFrame({"signature": list(merged), "digest": list(merged.values())})
        try:
            atomic_write(self.path, frame.write_parquet)
            self._new = {}
        except OSError as err:
            _warn_unwritable(self.path.parent, err)


class EmbeddingStore:
    """Embedding shards of one namespace (encoder identity + transform), keyed by content hash.

    Args:
        root: cache root, or ``None`` to disable (nothing read or written).
        namespace: folder name, ``<encoder identity>-<transform fingerprint>``.
        dim: embedding length (shards of another length are ignored).
        manifest: written once as ``identity.json``, for people inspecting the folder.
    """

    def __init__(self, root: Path | None, namespace: str, dim: int, manifest: dict[str, Any]) -> None:
        self.path = root / "embeddings" / namespace if root is not None else None
        self.dim, self.manifest = dim, manifest

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(found mask, vectors)`` for ``keys``; rows of missing keys are zeros."""
        wanted = np.array(list(keys), dtype=_KEY_DTYPE)
        vectors = np.zeros((wanted.size, self.dim), dtype=np.float32)
        found = np.zeros(wanted.size, dtype=bool)
        if self.path is None or not self.path.is_dir() or wanted.size == 0:
            return found, vectors
        for shard in sorted(self.path.glob("*.npz")):
            todo = np.flatnonzero(~found)
            if todo.size == 0:
                break
            try:
                with np.load(shard, allow_pickle=False) as npz:
                    shard_keys, shard_vectors = npz["keys"], npz["vectors"]
            except (OSError, ValueError, KeyError, EOFError):  # deleted or damaged: a miss
                continue
            if shard_keys.dtype != _KEY_DTYPE or shard_vectors.shape != (shard_keys.size, self.dim):
                continue
            if shard_keys.size == 0:
                continue
            pos = np.minimum(np.searchsorted(shard_keys, wanted[todo]), shard_keys.size - 1)
            hit = shard_keys[pos] == wanted[todo]
            vectors[todo[hit]] = shard_vectors[pos[hit]]
            found[todo[hit]] = True
        return found, vectors

    def store(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Append one shard (sorted unique keys); an unwritable cache warns and is skipped."""
        if self.path is None or len(keys) == 0:
            return
        uniq, first = np.unique(np.array(list(keys), dtype=_KEY_DTYPE), return_index=True)
        vecs = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32)[first])
        stem = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        try:
            atomic_write(self.path / f"{stem}.npz", lambda fh: np.savez(fh, keys=uniq, vectors=vecs))
            manifest = self.path / "identity.json"
            if not manifest.exists():
                text = json.dumps(self.manifest, indent=1, sort_keys=True).encode()
                atomic_write(manifest, lambda fh: fh.write(text))
        except OSError as err:
            _warn_unwritable(self.path, err)


def _warn_unwritable(path: Path, err: OSError) -> None:
    warnings.warn(
        f"Could not write the image-embedding cache under {str(path)!r} ({err}); the results were computed but "
        "not cached.",
        MigptTrajWarning,
        stacklevel=3,
    )
