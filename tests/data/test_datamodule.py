"""BucketSampler sharding under DDP (disjoint, covering, equal lengths, seeded) and the DataModule's rank wiring."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.fabric.utilities.data import _set_sampler_epoch

from migpt_traj.data.datamodule import BucketSampler, TrajectoryDataModule
from migpt_traj.data.preprocess import Preprocessor
from migpt_traj.data.tensorize import TokenTable, tensorize, training_queries
from migpt_traj.errors import ConfigError


def _shards(lengths: np.ndarray, *, batch_size: int, replicas: int, epoch: int, **kw: Any) -> list[list[list[int]]]:
    out = []
    for rank in range(replicas):
        sampler = BucketSampler(lengths, batch_size=batch_size, num_replicas=replicas, rank=rank, **kw)
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 300),
    replicas=st.integers(1, 4),
    batch_size=st.integers(1, 20),
    pool_batches=st.integers(1, 5),
    shuffle=st.booleans(),
    epoch=st.integers(0, 3),
)
def test_ranks_get_disjoint_covering_equal_shares(
    n: int, replicas: int, batch_size: int, pool_batches: int, shuffle: bool, epoch: int
) -> None:
    lengths = np.random.default_rng(n).integers(1, 60, size=n)
    kw = {"shuffle": shuffle, "seed": 3, "pool_batches": pool_batches}
    shards = _shards(lengths, batch_size=batch_size, replicas=replicas, epoch=epoch, **kw)
    expected_len = len(BucketSampler(lengths, batch_size=batch_size, num_replicas=replicas, rank=0, **kw))
    assert [len(s) for s in shards] == [expected_len] * replicas  # same number of batches on every rank
    assert all(len(b) >= 1 for s in shards for b in s)  # no empty batch (collate needs one sample)
    assert all(len(b) <= batch_size + 1 for s in shards for b in s)
    drawn = sorted(i for s in shards for b in s for i in b)
    if n >= replicas:
        assert drawn == list(range(n))  # disjoint and covering: every sample exactly once per epoch
    else:
        assert sorted(set(drawn)) == list(range(n)) and len(drawn) == replicas * (n > 0)  # repeated only here


def test_one_ddp_step_sees_the_samples_of_one_process_step() -> None:
    lengths = np.random.default_rng(0).integers(1, 80, size=203)
    single = BucketSampler(lengths, batch_size=32, shuffle=True, seed=7, pool_batches=3)
    single.set_epoch(2)
    shards = _shards(lengths, batch_size=16, replicas=2, epoch=2, shuffle=True, seed=7, pool_batches=3)
    steps = [sorted(a + b) for a, b in zip(*shards, strict=True)]
    assert steps == [sorted(b) for b in single]
    # Each rank's share is a contiguous run of the length-sorted global batch (similar lengths, little padding).
    for a, b in zip(*shards, strict=True):
        assert lengths[a].max() <= lengths[b].min()


def test_order_is_seeded_and_follows_set_epoch() -> None:
    lengths = np.random.default_rng(1).integers(1, 50, size=90)
    a = BucketSampler(lengths, batch_size=8, shuffle=True, seed=5, num_replicas=2, rank=1)
    b = BucketSampler(lengths, batch_size=8, shuffle=True, seed=5, num_replicas=2, rank=1)
    a.set_epoch(4)
    b.set_epoch(4)
    first = list(a)
    assert first == list(b)
    assert list(a) != first  # iterating advances the epoch (plain loops without set_epoch)
    a.set_epoch(4)
    assert list(a) == first
    other_seed = BucketSampler(lengths, batch_size=8, shuffle=True, seed=6, num_replicas=2, rank=1)
    other_seed.set_epoch(4)
    assert list(other_seed) != first


def test_lightning_sets_the_epoch_through_batch_sampler_sampler() -> None:
    lengths = np.arange(1, 41)
    module = _module(_table_stub(lengths), world=1, rank=0)
    loader = module.train_dataloader()
    _set_sampler_epoch(loader, 6)  # what Lightning's fit loop calls before every epoch
    assert isinstance(loader.batch_sampler, BucketSampler)
    assert loader.batch_sampler.epoch == 6


def test_invalid_sampler_options() -> None:
    with pytest.raises(ConfigError, match=r"'rank' = 2 is invalid; it must be in \[0, 2\)"):
        BucketSampler(np.ones(4), batch_size=2, shuffle=True, num_replicas=2, rank=2)
    with pytest.raises(ConfigError, match=r"'num_replicas' = 0 is invalid; it must be >= 1"):
        BucketSampler(np.ones(4), batch_size=2, shuffle=True, num_replicas=0)
    with pytest.raises(ConfigError, match=r"'batch_size' = 0 is invalid"):
        BucketSampler(np.ones(4), batch_size=0, shuffle=False)


# ---------------------------------------------------------------------------------------------- the DataModule
class _FakeStrategy:
    """Stands in for DDP's collectives: rank 0's broadcast value is given; ``all=True`` reduction of one rank."""

    def __init__(self, reference: Any) -> None:
        self.reference = reference

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return self.reference if self.reference is not None else obj

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


def _table_stub(lengths: np.ndarray) -> TokenTable:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return SimpleNamespace(  # type: ignore[return-value]
        offsets=offsets, lengths=np.asarray(lengths), n_samples=lengths.size, q_sample=np.zeros(0, dtype=np.int64)
    )


def _module(train: TokenTable, *, world: int, rank: int, tuning: TokenTable | None = None) -> TrajectoryDataModule:
    module = TrajectoryDataModule(train, tuning, batch_size=4, seed=0)
    module.trainer = SimpleNamespace(  # type: ignore[assignment]
        world_size=world, global_rank=rank, strategy=_FakeStrategy(None)
    )
    return module


@pytest.fixture(scope="module")
def tables(tiny: Any) -> tuple[TokenTable, TokenTable]:
    cohort = tiny.cohort(30)
    pre = Preprocessor.fit(cohort)
    out = []
    for split in ("train", "tuning"):
        samples, queries = training_queries(cohort, split=split, extra_per_subject=1, seed=0)
        out.append(tensorize(cohort, samples, pre, queries=queries))
    return out[0], out[1]


def test_train_batches_are_sharded_and_tuning_batches_are_not(tables: tuple[TokenTable, TokenTable]) -> None:
    train, tuning = tables
    loaders = [_module(train, world=2, rank=r, tuning=tuning) for r in (0, 1)]
    samplers = [m.train_dataloader().batch_sampler for m in loaders]
    assert [(s.num_replicas, s.rank) for s in samplers] == [(2, 0), (2, 1)]  # type: ignore[union-attr]
    seen = sorted(i for s in samplers for b in s for i in b)  # type: ignore[union-attr]
    assert seen == list(range(train.n_samples))
    val = [next(iter(m.val_dataloader()))["q_row"].tolist() for m in loaders]  # type: ignore[arg-type]
    assert val[0] == val[1]  # every rank evaluates the same tuning batches
    val_sampler = loaders[0].val_dataloader().batch_sampler  # type: ignore[union-attr]
    assert sum(len(b) for b in val_sampler) == tuning.n_samples  # type: ignore[union-attr, arg-type]


def test_setup_checks_every_rank_tensorized_the_same_data(tables: tuple[TokenTable, TokenTable]) -> None:
    train, tuning = tables
    module = _module(train, world=2, rank=1, tuning=tuning)
    module.setup("fit")  # rank 0's digests are its own: passes
    module.trainer.strategy = _FakeStrategy([123, 456])  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"Rank 1 of 2 tensorized different train/tuning data than rank 0"):
        module.setup("fit")
    single = TrajectoryDataModule(train, tuning)
    single.setup("fit")  # no trainer: nothing to compare
