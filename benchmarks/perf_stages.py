"""The stages :mod:`perf` measures, each run in its own process so that its peak memory is its own.

* ``tensorize_stage``: shard by shard over a MEDS root written by ``stream_synthetic``: load + validate, then the
  training workload (``training_queries`` + ``tensorize``, every history prefix of every train subject), then the
  pandas reference on the first shard's first samples, in the same process.
* ``model_stage``: fit the default model for one epoch (``configs/synthetic.yaml``), a timed training epoch with
  the model's FLOPs counted, dense matmul FLOP/s, and inference latency / throughput.
* ``notes_stage``: the frozen note encoder, cold and cached.
"""

from __future__ import annotations

import gc
import hashlib
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

_OUTCOMES = ("MEDS_DEATH", "TRANSPLANT")  # make_synthetic's

__all__ = ["matmul_gflops", "model_stage", "notes_stage", "peak_rss_mib", "tensorize_stage"]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Clock:
    """Wall and CPU seconds of a block (CPU = this process, all threads)."""

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def stub_note_embedder(dim: int = 8) -> Callable[[Sequence[str]], np.ndarray]:
    """A deterministic stand-in for the note encoder (its cost is measured in ``notes_stage``)."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little") for t in texts]
        return np.asarray([np.random.default_rng(s).standard_normal(dim) for s in seeds], dtype=np.float32)

    return embed


def tensorize_stage(root: Path, *, pandas_samples: int) -> dict[str, Any]:
    from perf_reference import pandas_events, tensorize_pandas

    from migpt_traj.data.cohort import Cohort
    from migpt_traj.data.preprocess import Preprocessor
    from migpt_traj.data.tensorize import tensorize, training_queries

    splits = pl.read_parquet(root / "metadata" / "subject_splits.parquet")
    embed = stub_note_embedder()
    totals = {k: 0.0 for k in ("load_s", "queries_s", "queries_cpu_s", "tensorize_s", "tensorize_cpu_s")}
    counts = {"events": 0, "input_events": 0, "samples": 0, "queries": 0, "tokens": 0}
    shards = sorted((root / "data").glob("*.parquet"))
    pre = None
    first: dict[str, Any] = {}
    for shard in shards:
        with _Clock() as load:
            events = pl.read_parquet(shard)
            ids = events["subject_id"].unique()
            cohort = Cohort.from_events(
                events, outcomes=_OUTCOMES, splits=splits.filter(pl.col("subject_id").is_in(ids.implode()))
            )
        del events
        totals["load_s"] += load.wall
        if pre is None:
            with _Clock() as fit:
                pre = Preprocessor.fit(cohort)  # first shard's train split (every shard is a random sample)
        with _Clock() as qc:
            samples, queries = training_queries(cohort, split="train")
        with _Clock() as tc:
            table = tensorize(cohort, samples, pre, queries=queries, note_embedder=embed, note_dim=8)
        train_ids = samples["subject_id"].implode()
        counts["events"] += cohort.events.height
        counts["input_events"] += cohort.events.filter(pl.col("subject_id").is_in(train_ids)).height
        counts["samples"] += table.n_samples
        counts["queries"] += int(table.q_sample.size)
        counts["tokens"] += int(table.offsets[-1])
        totals["queries_s"] += qc.wall
        totals["queries_cpu_s"] += qc.cpu
        totals["tensorize_s"] += tc.wall
        totals["tensorize_cpu_s"] += tc.cpu
        if not first:
            first = {"cohort": cohort, "samples": samples, "queries": queries}
        del table
        gc.collect()
    peak_library = peak_rss_mib()

    # The pandas reference on the first shard's first samples, next to the library on the same samples.
    cohort, samples, queries = first["cohort"], first["samples"], first["queries"]
    sub = samples.head(pandas_samples)
    sub_q = queries.filter(pl.col("sample_index") < sub.height)
    sub_events = cohort.events.filter(pl.col("subject_id").is_in(sub["subject_id"].implode())).height
    small = cohort.subset(sub["subject_id"].to_list())
    pev = pandas_events(small)
    with _Clock() as lib:
        tensorize(cohort, sub, pre, queries=sub_q, note_embedder=embed, note_dim=8)
    with _Clock() as lib_small:
        tensorize(small, sub, pre, queries=sub_q, note_embedder=embed, note_dim=8)
    with _Clock() as ref:
        tensorize_pandas(small, pev, sub, pre, queries=sub_q, note_embedder=embed)
    return {
        "shards": len(shards),
        **counts,
        **totals,
        "preprocessor_fit_s": fit.wall,
        "input_events_per_s": counts["input_events"] / totals["tensorize_s"],
        "input_events_per_cpu_s": counts["input_events"] / totals["tensorize_cpu_s"],
        "queries_plus_tensorize_events_per_s": counts["input_events"] / (totals["tensorize_s"] + totals["queries_s"]),
        "peak_rss_mib_library": peak_library,
        "peak_rss_mib_with_reference": peak_rss_mib(),
        "pandas": {
            "samples": sub.height,
            "input_events": sub_events,
            "pandas_s": ref.wall,
            "library_s_on_shard": lib.wall,
            "library_s_on_subset_cohort": lib_small.wall,
            "pandas_events_per_s": sub_events / ref.wall,
            "speedup_same_samples": ref.wall / lib_small.wall,
            "speedup_vs_library_full_rate": (counts["input_events"] / totals["tensorize_s"]) / (sub_events / ref.wall),
        },
    }


def matmul_gflops(m: int, k: int, n: int, *, seconds: float = 1.0) -> float:
    """Dense float32 ``(m, k) @ (k, n)`` throughput in GFLOP/s (2mkn per product), best of repeated runs."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000
    return {"p50_ms": float(np.percentile(arr, 50)), "p95_ms": float(np.percentile(arr, 95)), "n": int(arr.size)}


def model_stage(n_subjects: int, *, latency_calls: int) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import migpt_traj as mt
    from migpt_traj.config import bundled_config_path
    from migpt_traj.data.datamodule import BucketSampler, TokenDataset, collate_tokens
    from migpt_traj.data.tensorize import tensorize, training_queries
    from migpt_traj.encoders.notes import NoteEncoder, NoteEncoderConfig

    tmp = Path(tempfile.mkdtemp(prefix="perf_model_"))
    cohort = mt.datasets.make_synthetic(n_subjects, seed=0)
    cfg_path = bundled_config_path("synthetic")
    model = mt.TrajectoryModel.from_config(cfg_path, max_epochs=1, progress=False, note_cache_dir=str(tmp))
    with _Clock() as fit:
        model.fit(cohort)
    module, pre = model.module, model.preprocessor
    assert module is not None and pre is not None
    encoder = NoteEncoder(NoteEncoderConfig(model=model.config.note_model, cache_dir=str(tmp)))
    samples, queries = training_queries(cohort, split="train", extra_per_subject=model.config.extra_queries_per_subject)
    table = tensorize(
        cohort, samples, pre, queries=queries, max_len=model.config.max_len, note_embedder=encoder, note_dim=encoder.dim
    )
    data = TokenDataset(table)
    batches = list(BucketSampler(table.lengths, batch_size=model.config.batch_size, shuffle=True, seed=0))
    optimiser = module.configure_optimizers()
    module.train()
    step_times, step_tokens = [], []
    with _Clock() as epoch:
        for idx in batches:
            t = time.perf_counter()
            batch = collate_tokens(data, idx)
            loss, _ = module._loss(batch)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimiser.step()
            step_times.append(time.perf_counter() - t)
            step_tokens.append(int(table.lengths[idx].sum()))
    flops = 0
    for idx in batches:  # counted in a second pass: the counter slows what it counts
        batch = collate_tokens(data, idx)
        with FlopCounterMode(display=False) as counter:
            module._loss(batch)[0].backward()
        flops += counter.get_total_flops()
    module.zero_grad()
    widest = int(max(table.lengths[idx].max() * len(idx) for idx in batches))
    d = model.config.d_model
    gflops = {
        "square_1024": matmul_gflops(1024, 1024, 1024),
        f"model_mlp_{widest}x{d}x{4 * d}": matmul_gflops(widest, d, 4 * d),
    }
    achieved = flops / epoch.wall / 1e9
    training = {
        "train_subjects": table.n_samples,
        "batches": len(batches),
        "batch_size": model.config.batch_size,
        "d_model": d,
        "n_layers": model.config.n_layers,
        "parameters": sum(p.numel() for p in module.parameters()),
        "epoch_s": epoch.wall,
        "samples_per_s": table.n_samples / epoch.wall,
        "events_per_s": int(table.offsets[-1]) / epoch.wall,
        "queries_per_s": int(table.q_sample.size) / epoch.wall,
        "flops_per_epoch": flops,
        "achieved_gflops": achieved,
        "matmul_gflops": gflops,
        "share_of_square_matmul": achieved / gflops["square_1024"],
        "share_of_model_shaped_matmul": achieved / gflops[f"model_mlp_{widest}x{d}x{4 * d}"],
        "step_seconds": step_times,
        "step_tokens": step_tokens,
        "fit_one_epoch_s": fit.wall,
        "torch_threads": torch.get_num_threads(),
    }

    # Inference. Single patient: the public call on a one-subject cohort, and the raw module on one sample.
    module.eval()
    held = cohort.subject_ids("held_out")
    singles = [cohort.subset([s]) for s in held[: latency_calls + 3]]
    horizons = list(model.config.horizons_days)
    api_times: list[float] = []
    for i, one in enumerate(singles):
        t = time.perf_counter()
        model.predict_risk(one, landmarks=[0.0], horizons=horizons)
        if i >= 3:  # warm-up calls not counted
            api_times.append(time.perf_counter() - t)
    one_table = tensorize(cohort, samples.head(1), pre, note_embedder=encoder, note_dim=encoder.dim)
    one_batch = collate_tokens(TokenDataset(one_table), [0])
    raw_times: list[float] = []
    with torch.inference_mode():
        for i in range(latency_calls + 3):
            t = time.perf_counter()
            module.log_hazard(one_batch)
            if i >= 3:
                raw_times.append(time.perf_counter() - t)
    big_times = []
    for s in held[:10]:
        t = time.perf_counter()
        model.predict_risk(
            cohort,
            prediction_times=pl.DataFrame({"subject_id": [s]}).join(
                cohort.subjects.select("subject_id", pl.col("time_zero").alias("prediction_time")), on="subject_id"
            ),
            horizons=horizons,
        )
        big_times.append(time.perf_counter() - t)
    batch = {}
    for frac in (0.25, 0.5, 1.0):
        ids = held[: max(1, int(len(held) * frac))]
        part = cohort.subset(ids)
        with _Clock() as inf:
            risk = model.predict_risk(part, landmarks=[0.0, 365.25], horizons=horizons)
        n_pred = risk.select("subject_id", "prediction_time").unique().height
        n_ev = part.events.height
        batch[str(frac)] = {
            "predictions": n_pred,
            "events": n_ev,
            "s": inf.wall,
            "predictions_per_s": n_pred / inf.wall,
        }
    inference = {
        "single_api_predict_risk_one_subject_cohort": _percentiles(api_times),
        "single_api_predict_risk_in_full_cohort": _percentiles(big_times),
        "single_raw_module_forward": _percentiles(raw_times),
        "batch_api_predict_risk": batch,
        "batch_api_predictions_per_s": batch["1.0"]["predictions_per_s"],
        "cohort_subjects": n_subjects,
    }
    return {"training": training, "inference": inference, "peak_rss_mib": peak_rss_mib()}


def notes_stage(sizes: Sequence[int]) -> dict[str, Any]:
    import migpt_traj as mt
    from migpt_traj.encoders.notes import NoteEncoder, NoteEncoderConfig

    base = mt.datasets.make_synthetic(200, seed=0).events.filter(pl.col("text_value").is_not_null())
    templates = base["text_value"].unique().sort().to_list()
    tmp = Path(tempfile.mkdtemp(prefix="perf_notes_"))
    enc = NoteEncoder(NoteEncoderConfig(cache_dir=str(tmp)))
    with _Clock() as load:
        enc.encode(["warm-up note, not cached twice"])
    rows = []
    offset = 0
    for n in sizes:
        texts = [f"{templates[i % len(templates)]} Visit {offset + i}." for i in range(n)]  # all distinct
        offset += n
        with _Clock() as cold:
            enc.encode(texts)
        with _Clock() as warm:
            enc.encode(texts)
        fresh = NoteEncoder(NoteEncoderConfig(cache_dir=str(tmp)))
        with _Clock() as fresh_warm:
            fresh.encode(texts)
        rows.append(
            {
                "texts": n,
                "cold_s": cold.wall,
                "cold_texts_per_s": n / cold.wall,
                "cached_s": warm.wall,
                "cached_texts_per_s": n / warm.wall,
                "cached_new_encoder_texts_per_s": n / fresh_warm.wall,
            }
        )
    return {"model_load_plus_one_text_s": load.wall, "sizes": rows, "peak_rss_mib": peak_rss_mib()}
