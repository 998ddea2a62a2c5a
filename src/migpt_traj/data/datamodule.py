"""Batches of token tables: a torch Dataset, a padding collate, length bucketing and a LightningDataModule."""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl_light
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from migpt_traj.data.tensorize import TokenTable

__all__ = ["BucketSampler", "TokenDataset", "TrajectoryDataModule", "collate_tokens"]

_TOKEN_FIELDS = ("code_id", "value", "has_value", "modality", "time_days", "age_years", "avail_days")


class TokenDataset(Dataset[int]):
    """Indexes the samples of a :class:`TokenTable`; items are sample indices, the collate builds tensors."""

    def __init__(self, table: TokenTable) -> None:
        self.table = table
        order = np.argsort(table.q_sample, kind="stable")
        self._q_order = order
        counts = np.bincount(table.q_sample, minlength=table.n_samples)
        self._q_offsets = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return self.table.n_samples

    def __getitem__(self, index: int) -> int:
        return index

    def query_rows(self, sample: int) -> np.ndarray:
        return self._q_order[self._q_offsets[sample] : self._q_offsets[sample + 1]]


def collate_tokens(dataset: TokenDataset, indices: list[int]) -> dict[str, torch.Tensor]:
    """Pad the samples ``indices`` into a batch dict (right padding, code id 0)."""
    t = dataset.table
    idx = np.asarray(indices, dtype=np.int64)
    starts = t.offsets[idx]
    lengths = t.offsets[idx + 1] - starts
    width = int(lengths.max())
    b = idx.size
    # Gather positions: (B, L) into the flat arrays, with a mask for padding.
    cols = np.arange(width)
    valid = cols[None, :] < lengths[:, None]
    flat = np.where(valid, starts[:, None] + cols[None, :], 0)
    out: dict[str, torch.Tensor] = {}
    for name in _TOKEN_FIELDS:
        arr = getattr(t, name)[flat]
        fill = 0 if name != "avail_days" else -np.inf
        arr = np.where(valid, arr, fill)
        out[name] = torch.from_numpy(np.ascontiguousarray(arr))
    out["code_id"] = out["code_id"].long()
    out["modality"] = out["modality"].long()
    img = np.where(valid, t.image_index[flat], -1)
    out["has_image"] = torch.from_numpy((img >= 0).astype(np.float32))
    out["image"] = torch.from_numpy(
        t.images[np.maximum(img, 0)] if t.images.shape[0] else np.zeros((b, width, t.images.shape[1]), dtype=np.float32)
    )
    note = np.where(valid, t.note_index[flat], -1)
    out["has_note"] = torch.from_numpy((note >= 0).astype(np.float32))
    out["note"] = torch.from_numpy(
        t.notes[np.maximum(note, 0)] if t.notes.shape[0] else np.zeros((b, width, t.notes.shape[1]), dtype=np.float32)
    )
    rows = [dataset.query_rows(int(s)) for s in idx]
    q_rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    q_batch = np.repeat(np.arange(b), [r.size for r in rows])
    out["q_sample"] = torch.from_numpy(q_batch.astype(np.int64))
    out["q_row"] = torch.from_numpy(q_rows.astype(np.int64))
    out["q_days"] = torch.from_numpy(t.q_days[q_rows])
    out["q_age_years"] = torch.from_numpy(t.q_age_years[q_rows])
    out["q_visible"] = torch.from_numpy(t.q_visible[q_rows])
    out["q_duration"] = torch.from_numpy(t.q_duration[q_rows])
    out["q_cause"] = torch.from_numpy(t.q_cause[q_rows])
    return out


class BucketSampler(Sampler[list[int]]):
    """Batches of samples of similar length (less padding), in a seeded random order each epoch.

    Samples are shuffled, cut into pools of ``pool_batches`` batches, sorted by length within each pool and cut
    into batches; the batch order is shuffled again. With ``shuffle=False`` batches follow length order.
    """

    def __init__(
        self, lengths: np.ndarray, *, batch_size: int, shuffle: bool, seed: int = 0, pool_batches: int = 50
    ) -> None:
        self.lengths = lengths
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = pool_batches * batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        n = self.lengths.size
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng(self.seed + self.epoch)
        perm = rng.permutation(n)
        batches = []
        for p in range(0, n, self.pool):
            pool = perm[p : p + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size].tolist() for i in range(0, pool.size, self.batch_size)]
        rng.shuffle(batches)
        self.epoch += 1
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return (self.lengths.size + self.batch_size - 1) // self.batch_size


class TrajectoryDataModule(pl_light.LightningDataModule):
    """Serves tensorized train and tuning splits (tensorized once, before the trainer starts)."""

    def __init__(self, train: TokenTable, tuning: TokenTable | None, *, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.train_set = TokenDataset(train)
        self.tuning_set = TokenDataset(tuning) if tuning is not None and tuning.n_samples else None
        self.batch_size = batch_size
        self.seed = seed

    def _loader(self, dataset: TokenDataset, *, shuffle: bool) -> DataLoader[int]:
        sampler = BucketSampler(dataset.table.lengths, batch_size=self.batch_size, shuffle=shuffle, seed=self.seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=lambda ix: collate_tokens(dataset, ix))

    def train_dataloader(self) -> DataLoader[int]:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader[int] | list[DataLoader[int]]:
        if self.tuning_set is None:
            return []
        return self._loader(self.tuning_set, shuffle=False)
