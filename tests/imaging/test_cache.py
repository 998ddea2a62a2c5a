"""Tests for migpt_traj.imaging.cache: content hashes, the stat memo and the embedding shards."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from migpt_traj.errors import MigptTrajWarning
from migpt_traj.imaging.cache import EmbeddingStore, HashIndex, content_hash


def test_a_file_hash_is_the_sha256_of_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.nii"
    path.write_bytes(b"\x00volume bytes" * 1000)
    assert content_hash(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(FileNotFoundError, match="no such file"):
        content_hash(tmp_path / "absent.nii")


def test_a_folder_hash_changes_with_any_file_name_or_content(tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.mkdir()
    for k in range(3):
        (series / f"{k}.dcm").write_bytes(bytes([k]) * 10)
    base = content_hash(series)
    copy = tmp_path / "copy"
    shutil.copytree(series, copy)
    assert content_hash(copy) == base  # the content, not the location, is the key
    (copy / "1.dcm").write_bytes(b"\x09" * 10)
    assert content_hash(copy) != base
    (copy / "1.dcm").write_bytes(b"\x01" * 10)
    (copy / "1.dcm").rename(copy / "9.dcm")
    assert content_hash(copy) != base


def test_the_memo_skips_unchanged_files_and_notices_changes(tmp_path: Path) -> None:
    path = tmp_path / "v.nii"
    path.write_bytes(b"one")
    first = HashIndex(tmp_path / "cache")
    assert first.digest(path) == hashlib.sha256(b"one").hexdigest() and first.hashed == 1
    first.save()
    again = HashIndex(tmp_path / "cache")  # a new process: the memo is read from disk
    assert again.digest(path) == hashlib.sha256(b"one").hexdigest() and again.hashed == 0
    path.write_bytes(b"two, longer")
    assert again.digest(path) == hashlib.sha256(b"two, longer").hexdigest() and again.hashed == 1
    # Same size, new modification time: noticed too.
    path.write_bytes(b"TWO, LONGER")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert again.digest(path) == hashlib.sha256(b"TWO, LONGER").hexdigest()


def test_embedding_shards_round_trip_and_are_safe_to_damage_or_delete(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "cache", "enc-x", 3, {"what": "test"})
    keys = [hashlib.sha256(bytes([k])).hexdigest() for k in range(5)]
    vectors = np.arange(15, dtype=np.float32).reshape(5, 3)
    store.store(keys[:3], vectors[:3])
    store.store(keys[3:], vectors[3:])
    found, got = store.lookup([keys[4], "f" * 64, keys[0]])
    assert found.tolist() == [True, False, True]
    np.testing.assert_array_equal(got[[0, 2]], vectors[[4, 0]])
    shard = sorted((tmp_path / "cache" / "embeddings" / "enc-x").glob("*.npz"))[0]
    shard.write_bytes(b"damaged")
    found, _ = store.lookup(keys)
    assert found.tolist() == [False, False, False, True, True]
    other_dim = EmbeddingStore(tmp_path / "cache", "enc-x", 4, {})
    assert not other_dim.lookup(keys)[0].any()
    shutil.rmtree(tmp_path / "cache")
    assert not store.lookup(keys)[0].any()
    assert not EmbeddingStore(None, "enc-x", 3, {}).lookup(keys)[0].any()


def test_an_unwritable_cache_warns_and_carries_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    store = EmbeddingStore(blocker, "enc", 2, {})
    with pytest.warns(MigptTrajWarning, match="Could not write the image-embedding cache"):
        store.store(["a" * 64], np.ones((1, 2), dtype=np.float32))
