"""As-of tensorizing: samples ``(subject, cutoff time)`` → ragged token arrays, plus survival queries.

The as-of rule is applied here, once, for every modality: a sample with cutoff ``c`` holds the subject's static rows
and every event whose ``available_time`` (else ``time``) is ``<= c``. Outcome codes, end of follow-up and birth
never become tokens (birth enters as age). Tokens are ordered by availability (static rows first), then event
time, then input order, and a start token opens every sequence, so a subject with no visible event still has a
defined representation. When more than ``max_len`` tokens are visible the oldest timed ones are dropped (the start
token and static rows are always kept).

A *query* is a prediction time inside a sample at or before its cutoff. ``n_visible`` counts the leading tokens
available at the query time; because the backbone is causal over the availability order, reading the hidden states
of those tokens equals encoding the history truncated at the query (Dynamic-DeepHit's every-prefix training at the
cost of one pass). Everything is vectorised polars/numpy; no per-subject Python loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from migpt_traj.data.cohort import DAY_US, Cohort
from migpt_traj.data.preprocess import START_ID, UNK_ID, Preprocessor
from migpt_traj.data.schema import MODALITY_IDS

__all__ = ["TokenTable", "tensorize", "training_queries"]

START_MODALITY = 7
_DAYS_PER_YEAR = 365.25

NoteEmbedder = Callable[[Sequence[str]], np.ndarray]


@dataclass
class TokenTable:
    """Ragged token arrays for ``S`` samples and ``Q`` queries.

    Token arrays have length ``offsets[-1]``; sample ``s`` owns ``offsets[s]:offsets[s+1]``. Times are days.
    ``image_index`` / ``note_index`` point into ``images`` / ``notes`` (-1 = none).
    """

    offsets: np.ndarray  # (S+1,) int64
    code_id: np.ndarray  # int32
    value: np.ndarray  # float32, 0 where no value
    has_value: np.ndarray  # float32 0/1
    modality: np.ndarray  # int64
    time_days: np.ndarray  # float32, event time since time zero (0 for static/start)
    age_years: np.ndarray  # float32, NaN unknown
    avail_days: np.ndarray  # float32, availability since time zero (-inf for static/start)
    image_index: np.ndarray  # int64
    note_index: np.ndarray  # int64
    images: np.ndarray  # (n_img, d_img) float32
    notes: np.ndarray  # (n_note, d_note) float32
    samples: pl.DataFrame  # sample_index, subject_id, cutoff_time, time_zero, birth_time, n_tokens
    q_sample: np.ndarray  # (Q,) int64
    q_days: np.ndarray  # (Q,) float32 query time since time zero
    q_age_years: np.ndarray  # (Q,) float32
    q_visible: np.ndarray  # (Q,) int64 leading tokens visible at the query
    q_duration: np.ndarray  # (Q,) float32 days to event / censoring (NaN when unlabelled)
    q_cause: np.ndarray  # (Q,) int64 0 censored, k = outcomes[k-1], -1 unlabelled
    q_prediction_time: pl.Series  # (Q,) datetime

    @property
    def n_samples(self) -> int:
        return int(self.offsets.size - 1)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _input_events(cohort: Cohort, pre: Preprocessor) -> pl.DataFrame:
    """Events that may become tokens, with availability and the columns tensorizing needs."""
    ev = cohort.events.with_row_index("_row")
    if "available_time" not in ev.columns:
        ev = ev.with_columns(available_time=pl.col("time"))
    else:
        ev = ev.with_columns(available_time=pl.coalesce("available_time", "time"))
    for name, dtype in (("embedding", pl.List(pl.Float32)),):
        if name not in ev.columns:
            ev = ev.with_columns(pl.lit(None, dtype=dtype).alias(name))
    return ev.filter(~pl.col("code").is_in(pre.excluded_codes)).select(
        "_row",
        "subject_id",
        "time",
        "available_time",
        "code",
        "numeric_value",
        "text_value",
        "embedding",
        cohort.conventions.modality_expr().alias("modality"),
    )


def tensorize(
    cohort: Cohort,
    samples: pl.DataFrame,
    pre: Preprocessor,
    *,
    queries: pl.DataFrame | None = None,
    max_len: int = 512,
    note_embedder: NoteEmbedder | None = None,
    note_dim: int = 0,
) -> TokenTable:
    """Build the token table for ``samples`` (columns ``subject_id``, ``cutoff_time``).

    Args:
        cohort: the events.
        samples: one row per sequence; ``cutoff_time`` is the as-of time (inclusive).
        pre: fitted preprocessor (train-split vocabulary and normalisers).
        queries: optional ``sample_index, prediction_time, duration_days, cause`` (one or more per sample, each
            at or before its cutoff). Default: one unlabelled query per sample at its cutoff.
        max_len: most tokens per sequence, start token included.
        note_embedder: maps note texts to ``(n, note_dim)`` float32 (e.g. a cached frozen encoder); notes are
            dropped from the inputs when None.
        note_dim: embedding size of ``note_embedder``.
    """
    samples = samples.select(pl.col("subject_id").cast(pl.Int64), pl.col("cutoff_time").cast(pl.Datetime("us")))
    samples = _with_as_of_anchors(cohort, samples.with_row_index("sample_index"))
    ev = _input_events(cohort, pre)
    if note_embedder is None:
        ev = ev.filter(pl.col("modality") != "note")
    tok = samples.join(ev, on="subject_id", how="inner").filter(
        pl.col("time").is_null() | (pl.col("available_time") <= pl.col("cutoff_time"))
    )
    tok = tok.sort(["sample_index", "available_time", "time", "_row"], nulls_last=False)
    # Truncate the oldest timed tokens beyond the budget (start token and statics always kept).
    is_static = pl.col("time").is_null()
    n_static = is_static.sum().over("sample_index")
    from_end = pl.len().over("sample_index") - pl.int_range(pl.len()).over("sample_index")
    tok = tok.filter(is_static | (from_end <= (max_len - 1 - n_static).clip(lower_bound=0)))

    counts = tok.group_by("sample_index").len()
    n = samples.join(counts, on="sample_index", how="left").sort("sample_index")["len"].fill_null(0).to_numpy()
    n = n.astype(np.int64)
    n_samples = samples.height
    lengths = n + 1
    offsets = np.zeros(n_samples + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])

    sample_idx = tok["sample_index"].to_numpy().astype(np.int64)
    within = np.arange(tok.height, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    pos = offsets[sample_idx] + 1 + within

    tz = tok["time_zero"]
    t_days = _days(tok["time"] - tz)
    avail = _days(tok["available_time"] - tz)
    age = _days(tok["time"] - tok["birth_time"]) / _DAYS_PER_YEAR
    codes = tok["code"].to_numpy()
    raw = tok["numeric_value"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    modality_names = tok["modality"].to_numpy()

    code_id = np.full(total, START_ID, dtype=np.int32)
    ids = tok.select(pl.col("code")).join(pre.code_frame(), on="code", how="left", maintain_order="left")
    code_id[pos] = ids["code_id"].fill_null(UNK_ID).to_numpy()
    values = pre.normalise_values(codes, raw)
    value = np.zeros(total, dtype=np.float32)
    has_value = np.zeros(total, dtype=np.float32)
    value[pos] = np.nan_to_num(values, nan=0.0)
    has_value[pos] = (~np.isnan(values)).astype(np.float32)
    modality = np.full(total, START_MODALITY, dtype=np.int64)
    modality[pos] = tok["modality"].replace_strict(MODALITY_IDS, return_dtype=pl.Int64).to_numpy()
    time_days = np.zeros(total, dtype=np.float32)
    time_days[pos] = np.nan_to_num(t_days, nan=0.0)
    avail_days = np.full(total, -np.inf, dtype=np.float32)
    avail_days[pos] = np.where(np.isnan(avail), -np.inf, avail)
    age_years = np.full(total, np.nan, dtype=np.float32)
    age_years[pos] = age
    # Start tokens sit at time zero.
    starts = offsets[:-1]
    zero_age = _days(samples.sort("sample_index").select(pl.col("time_zero") - pl.col("birth_time")).to_series())
    age_years[starts] = zero_age / _DAYS_PER_YEAR

    image_index = np.full(total, -1, dtype=np.int64)
    emb_mask = tok["embedding"].is_not_null().to_numpy()
    if emb_mask.any() and pre.image_dim:
        mat = np.asarray(tok.filter(pl.col("embedding").is_not_null())["embedding"].to_list(), dtype=np.float64)
        images = pre.normalise_images(mat)
        image_index[pos[emb_mask]] = np.arange(images.shape[0])
    else:
        images = np.zeros((0, max(pre.image_dim, 1)), dtype=np.float32)

    note_index = np.full(total, -1, dtype=np.int64)
    note_mask = (modality_names == "note") & tok["text_value"].is_not_null().to_numpy()
    if note_embedder is not None and note_mask.any():
        texts = tok["text_value"].to_numpy()[note_mask]
        uniq, inverse = np.unique(texts.astype(str), return_inverse=True)
        notes = np.asarray(note_embedder(uniq.tolist()), dtype=np.float32)
        note_index[pos[note_mask]] = inverse
    else:
        notes = np.zeros((0, max(note_dim, 1)), dtype=np.float32)

    samples = samples.with_columns(n_tokens=pl.Series(lengths))
    q = _resolve_queries(samples, tok, pos, offsets, queries)
    return TokenTable(
        offsets=offsets,
        code_id=code_id,
        value=value,
        has_value=has_value,
        modality=modality,
        time_days=time_days,
        age_years=age_years,
        avail_days=avail_days,
        image_index=image_index,
        note_index=note_index,
        images=images,
        notes=notes,
        samples=samples,
        **q,
    )


def _with_as_of_anchors(cohort: Cohort, samples: pl.DataFrame) -> pl.DataFrame:
    """Add each sample's ``time_zero`` and ``birth_time`` as known at its cutoff.

    Time zero is the first non-birth timed event and birth the birth row, both counted only once available
    (``<=`` cutoff), so that a fact timed early but recorded late cannot shift a sample's time axis before it is
    known. Where nothing timed is visible yet, the cutoff itself anchors the axis. Without late availability these
    equal :attr:`Cohort.subjects`' values.
    """
    ev = cohort.events.filter(pl.col("time").is_not_null())
    avail = pl.coalesce("available_time", "time") if "available_time" in ev.columns else pl.col("time")
    birth_code = cohort.conventions.birth_code
    timed = ev.select("subject_id", "time", avail.alias("_avail"), (pl.col("code") == birth_code).alias("_birth"))
    known = (
        samples.select("sample_index", "subject_id", "cutoff_time")
        .join(timed, on="subject_id", how="inner")
        .filter(pl.col("_avail") <= pl.col("cutoff_time"))
        .group_by("sample_index")
        .agg(
            pl.col("time").filter(~pl.col("_birth")).min().alias("time_zero"),
            pl.col("time").filter(pl.col("_birth")).min().alias("birth_time"),
        )
    )
    return (
        samples.join(known, on="sample_index", how="left")
        .with_columns(time_zero=pl.coalesce("time_zero", "cutoff_time"))
        .sort("sample_index")
    )


def _days(duration: pl.Series) -> np.ndarray:
    return (duration.dt.total_microseconds().cast(pl.Float64) / DAY_US).fill_null(np.nan).to_numpy()


def _resolve_queries(
    samples: pl.DataFrame,
    tok: pl.DataFrame,
    pos: np.ndarray,
    offsets: np.ndarray,
    queries: pl.DataFrame | None,
) -> dict[str, Any]:
    if queries is None:
        queries = samples.select(
            "sample_index",
            pl.col("cutoff_time").alias("prediction_time"),
            pl.lit(None, dtype=pl.Float64).alias("duration_days"),
            pl.lit(-1, dtype=pl.Int64).alias("cause"),
        )
    queries = queries.with_columns(pl.col("sample_index").cast(pl.UInt32)).with_row_index("_q")
    # Last visible timed token at or before each query (as-of join on availability, ties → the last one).
    timed = (
        tok.with_columns(_pos=pl.Series(pos - offsets[tok["sample_index"].to_numpy().astype(np.int64)]))
        .filter(pl.col("time").is_not_null())
        .group_by("sample_index", "available_time")
        .agg(pl.col("_pos").max())
        .sort("available_time")
    )
    static_count = tok.filter(pl.col("time").is_null()).group_by("sample_index").len().rename({"len": "_n_static"})
    joined = (
        queries.sort("prediction_time")
        .join_asof(
            timed,
            left_on="prediction_time",
            right_on="available_time",
            by="sample_index",
            strategy="backward",
            check_sortedness=False,
        )
        .join(static_count, on="sample_index", how="left")
        .join(samples.select("sample_index", "time_zero", "birth_time"), on="sample_index", how="left")
        .sort("_q")
    )
    visible = np.maximum(
        joined["_pos"].fill_null(0).to_numpy().astype(np.int64) + 1,
        joined["_n_static"].fill_null(0).to_numpy().astype(np.int64) + 1,
    )
    return {
        "q_sample": joined["sample_index"].to_numpy().astype(np.int64),
        "q_days": _days(joined["prediction_time"] - joined["time_zero"]).astype(np.float32),
        "q_age_years": (_days(joined["prediction_time"] - joined["birth_time"]) / _DAYS_PER_YEAR).astype(np.float32),
        "q_visible": visible,
        "q_duration": joined["duration_days"].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float32),
        "q_cause": joined["cause"].fill_null(-1).to_numpy().astype(np.int64),
        "q_prediction_time": joined["prediction_time"],
    }


def training_queries(
    cohort: Cohort,
    *,
    split: str,
    extra_per_subject: int = 2,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Samples and labelled queries for training on every history prefix.

    Query times per subject: time zero, every distinct availability time of an input event after time zero, and
    ``extra_per_subject`` seeded uniform times after time zero (so the model also learns how risk moves through
    quiet periods). The extra times are drawn over the split's longest follow-up, one window for all subjects,
    independently of each subject's own outcome, so a query's position carries no information about its label;
    those past a subject's follow-up fall away with the at-risk rule. Only queries at which the subject is at risk
    are kept (labels from :meth:`Cohort.labels`, the one source of the as-of label rule). One sample per subject
    with cutoff at its last query.

    Returns:
        ``(samples, queries)``: samples ``subject_id, cutoff_time``; queries ``sample_index, prediction_time,
        duration_days, cause``.
    """
    subjects = cohort.subjects.filter((pl.col("split") == split) & pl.col("time_zero").is_not_null())
    ev = cohort.events.filter(pl.col("time").is_not_null())
    avail = pl.coalesce("available_time", "time") if "available_time" in ev.columns else pl.col("time")
    excluded = {*cohort.outcomes, cohort.conventions.end_of_followup_code, cohort.conventions.birth_code}
    times = (
        ev.filter(~pl.col("code").is_in(list(excluded)))
        .select("subject_id", avail.alias("prediction_time"))
        .join(subjects.select("subject_id", "time_zero"), on="subject_id")
        .filter(pl.col("prediction_time") >= pl.col("time_zero"))
        .select("subject_id", "prediction_time")
    )
    base = subjects.select("subject_id", pl.col("time_zero").alias("prediction_time"))
    parts = [base, times]
    if extra_per_subject > 0 and subjects.height:
        # Drawn over the split's longest follow-up, the same window for every subject, then kept only where the
        # subject is at risk: a window cut at the subject's own end of follow-up would put the queries of
        # subjects who die early closer to their death, so that the mere position of a query would tell the label.
        longest = subjects.select((pl.col("end_of_followup") - pl.col("time_zero")).dt.total_microseconds().max())
        span_us = float(longest.item() or 0)
        rng = np.random.default_rng(seed)
        offset_us = (rng.random(subjects.height * extra_per_subject) * span_us).astype(np.int64)
        extra = pl.DataFrame(
            {
                "subject_id": np.repeat(subjects["subject_id"].to_numpy(), extra_per_subject),
                "time_zero": np.repeat(subjects["time_zero"].to_numpy(), extra_per_subject),
                "_offset": offset_us,
            }
        ).select(
            "subject_id", (pl.col("time_zero") + pl.duration(microseconds=pl.col("_offset"))).alias("prediction_time")
        )
        parts.append(extra)
    pts = pl.concat([p.with_columns(pl.col("prediction_time").cast(pl.Datetime("us"))) for p in parts]).unique()
    labels = cohort.labels(prediction_times=pts)
    code_index = {code: i + 1 for i, code in enumerate(cohort.outcomes)}
    labels = labels.with_columns(cause=pl.col("event").replace_strict(code_index, default=0, return_dtype=pl.Int64))
    samples = (
        labels.group_by("subject_id")
        .agg(pl.col("prediction_time").max().alias("cutoff_time"))
        .sort("subject_id")
        .with_row_index("sample_index")
    )
    queries = labels.join(samples.select("subject_id", "sample_index"), on="subject_id").select(
        "sample_index", "prediction_time", "duration_days", "cause"
    )
    return samples.select("subject_id", "cutoff_time"), queries.sort("sample_index", "prediction_time")
