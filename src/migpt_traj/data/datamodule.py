"""Batches of token tables: a torch Dataset, a padding collate, DDP-aware length bucketing and a LightningDataModule."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

import lightning.pytorch as pl_light
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from migpt_traj.data.tensorize import TokenTable
from migpt_traj.errors import ConfigError

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
    """Batches of samples of similar length (less padding), in a seeded random order each epoch; DDP-aware.

    Samples are shuffled (seed ``seed + epoch``), cut into pools of ``pool_batches`` global batches, sorted by length
    within each pool and cut into global batches of ``batch_size * num_replicas`` samples; the batch order is shuffled
    again. With ``shuffle=False`` global batches follow length order. Rank ``rank`` takes its contiguous share
    (``np.array_split``) of every global batch, so all ranks yield the same number of batches, their shares are
    disjoint and together cover every sample once per epoch, and step ``k`` of a ``num_replicas``-process run sees
    exactly the samples of step ``k`` of a one-process run with ``batch_size * num_replicas``. Every rank computes the
    same global order (same seed and epoch), so nothing is communicated. Two edge cases keep the shares non-empty: a
    last global batch with fewer than ``num_replicas`` samples is merged into the previous one (one share is then at
    most one sample larger), and with fewer samples than ranks in total, samples are repeated (the only duplicates).

    The epoch is set by :meth:`set_epoch` (Lightning calls it at the start of every epoch through
    ``batch_sampler.sampler``, which is this object); each full iteration also advances it by one, so plain loops
    that never call ``set_epoch`` still get a new order per epoch.

    Raises:
        ConfigError: ``batch_size`` or ``num_replicas`` < 1, or ``rank`` outside ``[0, num_replicas)``.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        pool_batches: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("pool_batches", pool_batches), ("num_replicas", num_replicas)):
            if value < 1:
                raise ConfigError(f"BucketSampler '{name}' = {value} is invalid; it must be >= 1.")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"BucketSampler 'rank' = {rank} is invalid; it must be in [0, {num_replicas}).")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.global_batch = batch_size * num_replicas
        self.pool = pool_batches * self.global_batch
        self.epoch = 0

    @property
    def sampler(self) -> BucketSampler:
        """This sampler: Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` before every epoch."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        """The batches of all ranks together for the current epoch (does not advance the epoch)."""
        n, gb = self.lengths.size, self.global_batch
        if n == 0:
            return []
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            batches = [order[i : i + gb] for i in range(0, n, gb)]
            rng = None
        else:
            rng = np.random.default_rng(self.seed + self.epoch)
            perm = rng.permutation(n)
            batches = []
            for p in range(0, n, self.pool):
                pool = perm[p : p + self.pool]
                pool = pool[np.argsort(self.lengths[pool], kind="stable")]
                batches += [pool[i : i + gb] for i in range(0, pool.size, gb)]
        # Only the last batch built can be short; keep every rank's share non-empty (class docs).
        if len(batches) > 1 and batches[-1].size < self.num_replicas:
            last = batches.pop()
            batches[-1] = np.concatenate([batches[-1], last])
        if batches[-1].size < self.num_replicas:
            batches[-1] = np.resize(batches[-1], self.num_replicas)
        if rng is not None:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        self.epoch += 1
        return iter([np.array_split(b, self.num_replicas)[self.rank].tolist() for b in batches])

    def __len__(self) -> int:
        n, gb = self.lengths.size, self.global_batch
        count = -(-n // gb)
        return count - 1 if count > 1 and 0 < n % gb < self.num_replicas else count


def _fingerprint(table: TokenTable) -> int:
    """A 56-bit digest of the integer and label arrays of a table (identical tensorizing gives identical digests).

    Embedding floats (images, notes) are left out: they may differ in the last bits between machines.
    """
    digest = hashlib.sha256()
    for name in ("offsets", "code_id", "modality", "value", "time_days", "q_sample", "q_visible", "q_cause"):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(getattr(table, name)).tobytes())
    return int.from_bytes(digest.digest()[:7], "little")


class TrajectoryDataModule(pl_light.LightningDataModule):
    """Serves tensorized train and tuning splits (tensorized once per process, before the trainer starts).

    Under DDP (``world_size > 1``) the train batches are sharded by a :class:`BucketSampler` with the trainer's
    rank and world size: ``batch_size`` is per process (the global batch is ``batch_size * world_size``), every rank
    gets a disjoint share and the same number of batches, seeded by ``seed`` and the epoch. The tuning split is *not*
    sharded: every rank evaluates all of it in the same batches, so ``val_loss`` is the same on every rank and equals
    the one-process value, and early stopping and the best epoch are decided identically without any collective
    (the tuning split is small and forward-only). Lightning's own sampler injection must be off
    (``Trainer(use_distributed_sampler=False)``; :meth:`TrajectoryModel.fit` does this).

    With Lightning's ``ddp`` launcher, ``torchrun`` or ``srun`` every rank runs the calling script, so each rank
    tensorizes the cohort itself; tensorizing is deterministic (seeded queries, train-split statistics), and
    :meth:`setup` checks it: each rank's digest of its train and tuning tables is compared with rank 0's and all
    ranks raise :class:`~migpt_traj.errors.ConfigError` together if any differs.
    """

    def __init__(self, train: TokenTable, tuning: TokenTable | None, *, batch_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.train_set = TokenDataset(train)
        self.tuning_set = TokenDataset(tuning) if tuning is not None and tuning.n_samples else None
        self.batch_size = batch_size
        self.seed = seed

    def _replicas(self) -> tuple[int, int]:
        """``(world_size, global_rank)`` of the attached trainer; ``(1, 0)`` when used without one."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def setup(self, stage: str) -> None:
        world, rank = self._replicas()
        if world == 1 or self.trainer is None:
            return
        strategy = self.trainer.strategy
        tables = [self.train_set.table] + ([self.tuning_set.table] if self.tuning_set is not None else [])
        mine = [_fingerprint(t) for t in tables]
        reference = strategy.broadcast(mine, src=0)
        same = strategy.reduce_boolean_decision(mine == reference, all=True)
        if not same:
            raise ConfigError(
                f"Rank {rank} of {world} tensorized different train/tuning data than rank 0 (digests {mine} vs "
                f"{reference}); every rank must read the same cohort with the same config and seed."
            )

    def _loader(self, dataset: TokenDataset, *, shuffle: bool, num_replicas: int = 1, rank: int = 0) -> DataLoader[int]:
        sampler = BucketSampler(
            dataset.table.lengths,
            batch_size=self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
        )
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=functools.partial(collate_tokens, dataset))

    def train_dataloader(self) -> DataLoader[int]:
        world, rank = self._replicas()
        return self._loader(self.train_set, shuffle=True, num_replicas=world, rank=rank)

    def val_dataloader(self) -> DataLoader[int] | list[DataLoader[int]]:
        if self.tuning_set is None:
            return []
        return self._loader(self.tuning_set, shuffle=False)
