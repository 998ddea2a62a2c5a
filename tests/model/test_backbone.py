"""Causality of the backbone: no hidden state or readout depends on a token the query cannot see."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from migpt_traj.data.datamodule import BucketSampler, TokenDataset, collate_tokens
from migpt_traj.data.preprocess import Preprocessor
from migpt_traj.data.tensorize import tensorize, training_queries
from migpt_traj.model.backbone import Backbone, SinusoidalDays

VOCAB, IMG, NOTE = 20, 3, 4


def _model(*, train: bool = False, n_layers: int = 2) -> Backbone:
    torch.manual_seed(0)
    bb = Backbone(vocab_size=VOCAB, d_model=16, n_layers=n_layers, n_heads=2, image_dim=IMG, note_dim=NOTE, dropout=0.0)
    return bb.train(train)


def _batch(b: int, length: int, seed: int, lengths: list[int] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    time = torch.sort(torch.rand(b, length, generator=g) * 800, dim=1).values
    batch = {
        "code_id": torch.randint(1, VOCAB, (b, length), generator=g),
        "value": torch.randn(b, length, generator=g),
        "has_value": (torch.rand(b, length, generator=g) < 0.5).float(),
        "modality": torch.randint(1, 8, (b, length), generator=g),
        "time_days": time,
        "age_years": 40 + time / 365.25,
        "avail_days": time,
        "image": torch.randn(b, length, IMG, generator=g),
        "has_image": (torch.rand(b, length, generator=g) < 0.3).float(),
        "note": torch.randn(b, length, NOTE, generator=g),
        "has_note": (torch.rand(b, length, generator=g) < 0.3).float(),
    }
    if lengths is not None:
        for i, n in enumerate(lengths):
            batch["code_id"][i, n:] = 0
    return batch


def _scramble_after(batch: dict[str, torch.Tensor], i: int, seed: int) -> dict[str, torch.Tensor]:
    """A copy with every per-token input at positions > i replaced by different random values."""
    other = _batch(*batch["code_id"].shape, seed=seed)
    out = {k: v.clone() for k, v in batch.items()}
    for k in out:
        out[k][:, i + 1 :] = other[k][:, i + 1 :]
    if i >= 0:  # keep the time axis non-decreasing
        out["time_days"][:, i + 1 :] = out["time_days"][:, i : i + 1] + other["time_days"][:, i + 1 :]
    return out


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-no-dropout"])
def test_hidden_state_ignores_later_tokens(train: bool) -> None:
    bb = _model(train=train)
    batch = _batch(3, 12, seed=1)
    with torch.no_grad():
        h = bb.encode(batch)
        for i in range(11):
            h2 = bb.encode(_scramble_after(batch, i, seed=100 + i))
            torch.testing.assert_close(h2[:, : i + 1], h[:, : i + 1], rtol=0, atol=1e-6)
            assert (h2[:, i + 1 :] - h[:, i + 1 :]).abs().max() > 1e-3  # the change was seen later on


def test_hidden_state_ignores_padding_and_batch_mates() -> None:
    bb = _model()
    batch = _batch(3, 15, seed=2, lengths=[15, 6, 9])
    with torch.no_grad():
        together = bb.encode(batch)
        for i, n in enumerate([15, 6, 9]):
            alone = bb.encode({k: v[i : i + 1, :n] for k, v in batch.items()})
            torch.testing.assert_close(together[i : i + 1, :n], alone, rtol=1e-5, atol=1e-5)


def test_readout_ignores_tokens_beyond_q_visible() -> None:
    bb = _model()
    batch = _batch(2, 10, seed=3)
    queries = {
        "q_sample": torch.tensor([0, 0, 1, 1]),
        "q_visible": torch.tensor([1, 4, 7, 10]),
        "q_days": torch.tensor([0.0, 300.0, 500.0, 900.0]),
        "q_age_years": torch.tensor([40.0, 41.0, float("nan"), 43.0]),
    }
    with torch.no_grad():
        ref = bb({**batch, **queries})
        for q, (s, vis) in enumerate(zip(queries["q_sample"].tolist(), queries["q_visible"].tolist(), strict=True)):
            changed = _scramble_after(batch, vis - 1, seed=7 + q)
            keep = {
                k: torch.where(torch.arange(2).view(-1, *[1] * (v.ndim - 1)) == s, changed[k], v)
                for k, v in batch.items()
            }
            out = bb({**keep, **queries})
            torch.testing.assert_close(out[q], ref[q], rtol=0, atol=1e-6)
        # And the readout does react to the visible tokens.
        changed = _scramble_after(batch, 0, seed=99)
        assert (bb({**changed, **queries}) - ref).abs().max() > 1e-3


def test_every_prefix_readout_equals_encoding_the_truncated_history(tiny: Any) -> None:
    """One pass over the full training sequence gives, at each query, what a sample cut at the query gives."""
    cohort = tiny.cohort(6, images=True, lag_days=30.0, train=1.0, tuning=0.0)
    pre = Preprocessor.fit(cohort)
    subj = cohort.subjects
    rows = []
    for s, (tz, eof) in enumerate(subj.select("time_zero", "end_of_followup").iter_rows()):
        for frac in (0.0, 0.2, 0.5, 0.9):
            rows.append({"sample_index": s, "prediction_time": tz + (eof - tz) * frac})
    queries = pl.DataFrame(rows).with_columns(
        sample_index=pl.col("sample_index").cast(pl.UInt32), duration_days=pl.lit(1.0), cause=pl.lit(0)
    )
    full = tensorize(
        cohort, subj.select("subject_id", pl.col("end_of_followup").alias("cutoff_time")), pre, queries=queries
    )
    cut = tensorize(
        cohort,
        queries.join(subj.with_row_index("sample_index"), on="sample_index").select(
            "subject_id", pl.col("prediction_time").alias("cutoff_time")
        ),
        pre,
    )
    torch.manual_seed(0)
    bb = Backbone(vocab_size=len(pre.codes), d_model=16, n_layers=2, n_heads=2, image_dim=pre.image_dim).eval()

    def readout(table: Any) -> torch.Tensor:
        ds = TokenDataset(table)
        batch = collate_tokens(ds, list(range(table.n_samples)))
        out = torch.empty(table.q_sample.size, 16)
        with torch.no_grad():
            out[batch["q_row"]] = bb(batch)
        return out

    assert (full.q_visible < full.lengths[full.q_sample]).any(), "no query saw only a prefix"
    np.testing.assert_array_equal(full.q_visible, cut.lengths)
    torch.testing.assert_close(readout(full), readout(cut), rtol=1e-5, atol=1e-5)


def test_sinusoidal_days_has_the_stated_periods() -> None:
    enc = SinusoidalDays(4, min_period=1.0, max_period=1000.0)
    days = torch.tensor([0.0, 1.0, 10.0, 100.0, 1000.0])
    feats = enc(days)
    assert feats.shape == (5, 8)
    torch.testing.assert_close(
        feats[:, :4], torch.sin(2 * np.pi * days[:, None] / torch.tensor([1.0, 10, 100, 1000])), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(feats[0, 4:], torch.ones(4))


def test_readout_does_not_depend_on_the_batch_a_sample_is_in(tiny: Any) -> None:
    cohort = tiny.cohort(10, images=True)
    pre = Preprocessor.fit(cohort)
    subj = cohort.subjects
    samples = subj.select("subject_id", pl.col("end_of_followup").alias("cutoff_time"))
    table = tensorize(cohort, samples, pre)
    assert np.unique(table.lengths).size > 3  # different lengths, so batches are padded
    torch.manual_seed(0)
    bb = Backbone(vocab_size=len(pre.codes), d_model=16, n_layers=2, n_heads=2, image_dim=pre.image_dim).eval()
    ds = TokenDataset(table)
    with torch.no_grad():
        whole = collate_tokens(ds, list(range(table.n_samples)))
        ref = torch.empty(table.q_sample.size, 16)
        ref[whole["q_row"]] = bb(whole)
        for s in range(table.n_samples):
            batch = collate_tokens(ds, [s])
            assert batch["code_id"].shape[1] == table.lengths[s] and (batch["code_id"][0] > 0).all()
            torch.testing.assert_close(bb(batch), ref[batch["q_row"]], rtol=1e-5, atol=1e-5)


def test_collate_pads_without_changing_any_value(tiny: Any) -> None:
    cohort = tiny.cohort(8, images=True)
    pre = Preprocessor.fit(cohort)
    samples, queries = training_queries(cohort, split="train", extra_per_subject=1)
    table = tensorize(cohort, samples, pre, queries=queries)
    order = [3, 0, 2]
    batch = collate_tokens(TokenDataset(table), order)
    for b, s in enumerate(order):
        lo, n = table.offsets[s], table.lengths[s]
        for name in ("code_id", "value", "has_value", "modality", "time_days", "age_years", "avail_days"):
            np.testing.assert_array_equal(batch[name][b, :n].numpy(), getattr(table, name)[lo : lo + n], err_msg=name)
        assert (batch["code_id"][b, n:] == 0).all()
        img = table.image_index[lo : lo + n]
        np.testing.assert_array_equal(batch["has_image"][b, :n].numpy(), (img >= 0).astype(np.float32))
        np.testing.assert_array_equal(batch["image"][b, :n][img >= 0].numpy(), table.images[img[img >= 0]])
    rows = batch["q_row"].numpy()
    assert sorted(rows.tolist()) == sorted(np.flatnonzero(np.isin(table.q_sample, order)).tolist())
    np.testing.assert_array_equal(np.asarray(order)[batch["q_sample"].numpy()], table.q_sample[rows])
    for name in ("q_days", "q_age_years", "q_visible", "q_duration", "q_cause"):
        np.testing.assert_array_equal(batch[name].numpy(), getattr(table, name)[rows], err_msg=name)


def test_bucket_sampler_yields_every_sample_once_per_epoch() -> None:
    lengths = np.random.default_rng(0).integers(2, 50, size=37)
    sampler = BucketSampler(lengths, batch_size=5, shuffle=True, seed=1, pool_batches=2)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 8
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(37))
        assert all(len(b) <= 5 for b in epoch)
    assert first != second
    fixed = list(BucketSampler(lengths, batch_size=5, shuffle=False))
    assert [i for b in fixed for i in b] == np.argsort(lengths, kind="stable").tolist()
