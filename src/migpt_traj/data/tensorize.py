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
cost of one pass).

How it is fast (no per-subject Python loop, no join of samples × events, no sort of tokens): the events of the
sampled subjects are put once in token order (subject, availability, time, input order; the cohort is already
sorted by subject and time, so only the late-available rows move, by a merge). In that order the events a sample
sees are a prefix of its subject's block, found by a vectorised binary search; its tokens are a slice of that prefix
(statics, then the newest timed inputs), gathered with integer arithmetic. Per-code work (vocabulary, modality,
value normalisation) is done once per distinct code, per-event work once per event, not once per token.
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
_NULL_TIME = np.iinfo(np.int64).min  # static rows: before every time (they sort first and are always visible)
_NO_TIME = np.iinfo(np.int64).max  # "no such time" in minima

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


@dataclass
class _Events:
    """The sampled subjects' events (all codes) in token order, one array entry per event.

    Times are microseconds since the epoch, ``_NULL_TIME`` on static rows.
    """

    subject_id: np.ndarray  # int64, ascending
    time_us: np.ndarray  # int64
    avail_us: np.ndarray  # int64, availability (else time), ascending within a subject
    is_birth: np.ndarray  # bool
    is_input: np.ndarray  # bool: may become a token
    code_id: np.ndarray  # int32
    modality: np.ndarray  # int64
    value: np.ndarray  # float32 normal score, NaN = no value
    image_row: np.ndarray  # int64 row of ``images_raw``, -1 = none
    images_raw: np.ndarray  # (n, d) float32 embeddings as given
    text_id: np.ndarray  # int64 index of a note input's text in ``texts``, -1 = none
    texts: list[str]  # distinct note texts, sorted


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + lengths[i])`` over ``i``."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(int(ends[-1]) if ends.size else 0)


def _bisect(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, targets: np.ndarray, *, side: str) -> np.ndarray:
    """Vectorised binary search: per ``i``, the first index in ``[lo[i], hi[i])`` of the ascending run
    ``values[lo[i]:hi[i]]`` whose value is ``> targets[i]`` (``side="right"``) or ``>=`` (``"left"``); ``hi[i]``
    when there is none. A fixed number of whole-array steps, ``ceil(log2(longest run + 1))``."""
    lo, hi = lo.astype(np.int64, copy=True), hi.astype(np.int64, copy=True)
    if lo.size == 0 or values.size == 0:
        return lo
    last = values.size - 1
    for _ in range(int((hi - lo).max()).bit_length()):
        mid = (lo + hi) >> 1
        found = values[np.minimum(mid, last)]
        up = (found <= targets) if side == "right" else (found < targets)
        up &= lo < hi
        lo = np.where(up, mid + 1, lo)
        hi = np.where(up, hi, mid)
    return lo


def _range_min(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``min(values[lo[i]:hi[i]])`` per ``i`` (``_NO_TIME`` for an empty range)."""
    out = np.full(lo.size, _NO_TIME, dtype=np.int64)
    full = hi > lo
    if full.any():
        ext = np.append(values, _NO_TIME)
        out[full] = np.minimum.reduceat(ext, np.column_stack([lo[full], hi[full]]).ravel())[::2]
    return out


def _subject_events(events: pl.DataFrame, subject_ids: np.ndarray, columns: list[str]) -> pl.DataFrame:
    """``columns`` of the events of ``subject_ids`` (ascending, distinct), sorted by subject and time, input order
    among ties."""
    sid = events["subject_id"].to_numpy()
    events = events.select(columns)
    if sid.size and bool(np.all(sid[1:] >= sid[:-1])):  # a Cohort's events always are: slice out the blocks
        lo, hi = np.searchsorted(sid, subject_ids, "left"), np.searchsorted(sid, subject_ids, "right")
        picked = events if int((hi - lo).sum()) == sid.size else events[_ranges(lo, hi - lo)]
    else:
        picked = events.filter(pl.col("subject_id").is_in(pl.Series(subject_ids).implode()))
        picked = picked.sort("time", nulls_last=False, maintain_order=True).sort("subject_id", maintain_order=True)
    return picked


def _token_order(sid: np.ndarray, time_us: np.ndarray, avail_us: np.ndarray) -> np.ndarray | None:
    """Permutation from (subject, time, input order) to (subject, availability, time, input order); None = same.

    Only late rows (available after their time) move: sorted among themselves, each is merged in before the
    on-time rows of its subject available at or after it (at equal availability the late row happened earlier).
    """
    late = avail_us > time_us
    if not late.any():
        return None
    on_time = np.flatnonzero(~late)
    moved = np.flatnonzero(late)
    moved = moved[np.lexsort((avail_us[moved], sid[moved]))]  # stable: (time, input order) among ties
    # Each subject's block among the on-time rows, through a dense subject index (sid is ascending).
    dense = np.zeros(sid.size, dtype=np.int64)
    np.cumsum(sid[1:] != sid[:-1], out=dense[1:])
    bounds = np.searchsorted(dense[on_time], np.arange(int(dense[-1]) + 2), "left")
    lo, hi = bounds[dense[moved]], bounds[dense[moved] + 1]
    dest = _bisect(avail_us[on_time], lo, hi, avail_us[moved], side="left") + np.arange(moved.size)
    order = np.empty(sid.size, dtype=np.int64)
    free = np.ones(sid.size, dtype=bool)
    free[dest] = False
    order[dest] = moved
    order[free] = on_time
    return order


def _ordered_events(cohort: Cohort, pre: Preprocessor, subject_ids: np.ndarray, *, notes: bool) -> _Events:
    """Everything tensorizing needs per event, computed once per distinct code and once per event."""
    wanted = {"subject_id", "time", "available_time", "code", "numeric_value"}
    wanted |= {"text_value"} if notes else set()
    wanted |= {"embedding"} if pre.image_dim else set()
    ev = _subject_events(cohort.events, subject_ids, [c for c in cohort.events.columns if c in wanted])
    n = ev.height
    time = ev["time"]
    static = time.is_null().to_numpy()
    time_us = time.to_physical().fill_null(_NULL_TIME).to_numpy().astype(np.int64, copy=False)
    if "available_time" in ev.columns:
        avail = ev.select(pl.coalesce("available_time", "time")).to_series()
        avail_us = avail.to_physical().fill_null(_NULL_TIME).to_numpy().astype(np.int64, copy=False)
    else:
        avail_us = time_us
    # Per distinct code: vocabulary id, exclusion, birth, and modality (which also depends on a null time and a
    # value, so the conventions' own expression is evaluated on the 4 combinations).
    distinct = ev["code"].unique().sort()
    code_ix = ev["code"].cast(pl.Enum(distinct)).to_physical().cast(pl.Int64).to_numpy()
    names = distinct.to_list()
    vocab = {code: i for i, code in enumerate(pre.codes)}
    raw = ev["numeric_value"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    has_raw = ~np.isnan(raw)
    combos = pl.DataFrame(
        {
            "code": np.repeat(np.asarray(names, dtype=object), 4),
            "time": pl.Series([None, 0, None, 0] * len(names), dtype=pl.Int64).cast(pl.Datetime("us")),
            "numeric_value": pl.Series([None, None, 1.0, 1.0] * len(names), dtype=pl.Float32),
        },
        schema_overrides={"code": pl.String},
    )
    modality_of = combos.select(cohort.conventions.modality_expr().replace_strict(MODALITY_IDS, return_dtype=pl.Int64))
    modality_table = modality_of.to_series().to_numpy().reshape(len(names), 2, 2)  # [code, has value, timed]
    modality = modality_table[code_ix, has_raw.astype(np.int64), (~static).astype(np.int64)]
    excluded = np.isin(np.asarray(names, dtype=object), np.asarray(pre.excluded_codes, dtype=object))[code_ix]
    is_input = ~excluded
    if not notes:
        is_input &= modality != MODALITY_IDS["note"]
    code_id = np.asarray([vocab.get(c, UNK_ID) for c in names], dtype=np.int32)[code_ix]
    is_birth = (np.asarray(names, dtype=object) == cohort.conventions.birth_code)[code_ix]

    # Normal scores per code (the preprocessor's transform, called once per distinct measured code).
    value = np.full(n, np.nan, dtype=np.float32)
    rows = np.flatnonzero(has_raw & is_input)
    if rows.size:
        keys = code_ix[rows].astype(np.uint16) if len(names) <= 2**16 else code_ix[rows]  # uint16: radix sort
        rows = rows[np.argsort(keys, kind="stable")]
        sorted_ix = code_ix[rows]
        cuts = np.flatnonzero(np.diff(sorted_ix)) + 1
        for group in np.split(rows, cuts):
            code = np.full(group.size, names[int(code_ix[group[0]])], dtype=object)
            value[group] = pre.normalise_values(code, raw[group])

    image_row = np.full(n, -1, dtype=np.int64)
    images_raw = np.zeros((0, max(pre.image_dim, 1)), dtype=np.float32)
    if pre.image_dim and "embedding" in ev.columns:
        has_emb = ev["embedding"].is_not_null().to_numpy() & is_input
        if has_emb.any():
            emb = ev["embedding"].filter(pl.Series(has_emb))
            lengths = emb.list.len()
            if lengths.n_unique() == 1:
                images_raw = emb.explode().to_numpy().reshape(emb.len(), int(lengths[0]))
            else:  # ragged: let numpy raise as it would on any ragged matrix
                images_raw = np.asarray(emb.to_list(), dtype=np.float64)
            image_row[has_emb] = np.arange(emb.len())

    text_id = np.full(n, -1, dtype=np.int64)
    texts: list[str] = []
    if notes:
        is_note = (modality == MODALITY_IDS["note"]) & is_input & ev["text_value"].is_not_null().to_numpy()
        if is_note.any():
            note_texts = ev["text_value"].filter(pl.Series(is_note))
            distinct_texts = note_texts.unique().sort()
            texts = distinct_texts.to_list()
            text_id[is_note] = note_texts.cast(pl.Enum(distinct_texts)).to_physical().cast(pl.Int64).to_numpy()

    sid = ev["subject_id"].to_numpy()
    order = _token_order(sid, time_us, avail_us)
    if order is None:
        order = slice(None)  # type: ignore[assignment]
    return _Events(
        subject_id=sid[order],
        time_us=time_us[order],
        avail_us=avail_us[order],
        is_birth=is_birth[order],
        is_input=is_input[order],
        code_id=code_id[order],
        modality=modality[order],
        value=value[order],
        image_row=image_row[order],
        images_raw=images_raw,
        text_id=text_id[order],
        texts=texts,
    )


def _days_between(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """``later - earlier`` in days (float64), both microseconds."""
    return (later - earlier) / DAY_US  # int64 / int: each difference converted to float64, then divided


def _datetimes(name: str, us: np.ndarray, null: np.ndarray) -> pl.Series:
    frame = pl.DataFrame({"v": np.where(null, 0, us), "null": null})
    return frame.select(pl.when(~pl.col("null")).then(pl.col("v")).cast(pl.Datetime("us")).alias(name)).to_series()


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
    samples = samples.select(
        pl.col("subject_id").cast(pl.Int64), pl.col("cutoff_time").cast(pl.Datetime("us"))
    ).with_row_index("sample_index")
    s_sid = samples["subject_id"].to_numpy()
    cutoff_null = samples["cutoff_time"].is_null().to_numpy()
    cutoff = samples["cutoff_time"].to_physical().fill_null(_NULL_TIME).to_numpy().astype(np.int64, copy=False)
    ev = _ordered_events(cohort, pre, np.unique(s_sid), notes=note_embedder is not None)

    # The events a sample sees: a prefix of its subject's block (statics first, then by availability).
    block_lo = np.searchsorted(ev.subject_id, s_sid, "left")
    block_hi = np.searchsorted(ev.subject_id, s_sid, "right")
    seen_hi = _bisect(ev.avail_us, block_lo, block_hi, cutoff, side="right")
    # As-of anchors: first visible non-birth timed event (else the cutoff), first visible birth.
    timed = ev.time_us != _NULL_TIME
    tz = _range_min(np.where(timed & ~ev.is_birth, ev.time_us, _NO_TIME), block_lo, seen_hi)
    birth = _range_min(np.where(timed & ev.is_birth, ev.time_us, _NO_TIME), block_lo, seen_hi)
    tz_null = (tz == _NO_TIME) & cutoff_null
    tz = np.where(tz == _NO_TIME, cutoff, tz)
    birth_null = birth == _NO_TIME

    # Tokens: the visible inputs, statics always, then the newest timed ones within the budget.
    n_ev = ev.subject_id.size
    inputs_before = np.zeros(n_ev + 1, dtype=np.int64)
    np.cumsum(ev.is_input, out=inputs_before[1:])
    statics_before = np.zeros(n_ev + 1, dtype=np.int64)
    np.cumsum(~timed, out=statics_before[1:])
    first = inputs_before[block_lo]
    n_static = inputs_before[block_lo + statics_before[block_hi] - statics_before[block_lo]] - first
    n_seen = inputs_before[seen_hi] - first
    n_timed = np.minimum(n_seen - n_static, np.maximum(max_len - 1 - n_static, 0))
    input_rows = np.flatnonzero(ev.is_input)
    starts = np.column_stack([first, first + n_seen - n_timed]).ravel()
    src = input_rows[_ranges(starts, np.column_stack([n_static, n_timed]).ravel())]

    n = n_static + n_timed
    n_samples = samples.height
    lengths = n + 1
    offsets = np.zeros(n_samples + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    starts_at = offsets[:-1]
    # Token t reads event src_full[t]; start positions read a placeholder and are overwritten below.
    src_full = np.insert(src, np.cumsum(n) - n, 0) if n_ev else np.zeros(total, dtype=np.int64)
    tok_sample = np.repeat(np.arange(n_samples), lengths)

    def take(arr: np.ndarray, start: Any) -> np.ndarray:
        out = arr[src_full] if n_ev else np.full(total, start, dtype=arr.dtype)
        out[starts_at] = start
        return out

    code_id = take(ev.code_id, START_ID)
    values = take(ev.value, np.nan)
    value = np.nan_to_num(values, nan=0.0)
    has_value = (~np.isnan(values)).astype(np.float32)
    modality = take(ev.modality, START_MODALITY)
    t_us, a_us = take(ev.time_us, _NULL_TIME), take(ev.avail_us, _NULL_TIME)
    no_axis = (t_us == _NULL_TIME) | tz_null[tok_sample]
    tz_tok = tz[tok_sample]
    time_days = np.where(no_axis, 0.0, _days_between(t_us, tz_tok)).astype(np.float32)
    avail_days = np.where(no_axis, -np.inf, _days_between(a_us, tz_tok)).astype(np.float32)
    no_age = (t_us == _NULL_TIME) | birth_null[tok_sample]
    age_years = np.where(no_age, np.nan, _days_between(t_us, birth[tok_sample]) / _DAYS_PER_YEAR).astype(np.float32)
    # Start tokens sit at time zero.
    age_years[starts_at] = np.where(tz_null | birth_null, np.nan, _days_between(tz, birth) / _DAYS_PER_YEAR)

    image_rows = take(ev.image_row, -1)
    with_image = image_rows >= 0
    image_index = np.full(total, -1, dtype=np.int64)
    if with_image.any() and pre.image_dim:
        images = pre.normalise_images(ev.images_raw[image_rows[with_image]])
        image_index[with_image] = np.arange(images.shape[0])
    else:
        images = np.zeros((0, max(pre.image_dim, 1)), dtype=np.float32)

    text_ids = take(ev.text_id, -1)
    with_note = text_ids >= 0
    note_index = np.full(total, -1, dtype=np.int64)
    if note_embedder is not None and with_note.any():
        used, inverse = np.unique(text_ids[with_note], return_inverse=True)
        notes = np.asarray(note_embedder([ev.texts[i] for i in used]), dtype=np.float32)
        note_index[with_note] = inverse
    else:
        notes = np.zeros((0, max(note_dim, 1)), dtype=np.float32)

    samples = samples.with_columns(
        _datetimes("time_zero", tz, tz_null),
        _datetimes("birth_time", birth, birth_null),
        n_tokens=pl.Series(lengths),
    )
    anchors = (tz, tz_null, birth, birth_null)
    q = _resolve_queries(samples, queries, offsets, 1 + n_static, a_us, anchors)
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


def _resolve_queries(
    samples: pl.DataFrame,
    queries: pl.DataFrame | None,
    offsets: np.ndarray,
    first_timed: np.ndarray,
    token_avail_us: np.ndarray,
    anchors: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> dict[str, Any]:
    """Query arrays; ``q_visible`` = start + statics + the timed tokens available at the query (``<=``)."""
    if queries is None:
        queries = samples.select(
            "sample_index",
            pl.col("cutoff_time").alias("prediction_time"),
            pl.lit(None, dtype=pl.Float64).alias("duration_days"),
            pl.lit(-1, dtype=pl.Int64).alias("cause"),
        )
    q_sample = queries["sample_index"].cast(pl.Int64).to_numpy()
    q_time = queries["prediction_time"].cast(pl.Datetime("us"))
    q_us = q_time.to_physical().fill_null(_NULL_TIME).to_numpy().astype(np.int64, copy=False)
    lo = offsets[q_sample] + first_timed[q_sample]
    visible = _bisect(token_avail_us, lo, offsets[q_sample + 1], q_us, side="right") - offsets[q_sample]
    tz, tz_null, birth, birth_null = anchors
    q_null = q_time.is_null().to_numpy()
    q_days = np.where(q_null | tz_null[q_sample], np.nan, _days_between(q_us, tz[q_sample]))
    q_age = np.where(q_null | birth_null[q_sample], np.nan, _days_between(q_us, birth[q_sample]) / _DAYS_PER_YEAR)
    return {
        "q_sample": q_sample.astype(np.int64),
        "q_days": q_days.astype(np.float32),
        "q_age_years": q_age.astype(np.float32),
        "q_visible": visible.astype(np.int64),
        "q_duration": queries["duration_days"].cast(pl.Float64).fill_null(np.nan).to_numpy().astype(np.float32),
        "q_cause": queries["cause"].fill_null(-1).to_numpy().astype(np.int64),
        "q_prediction_time": queries["prediction_time"],
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
    times = _input_availability_times(cohort, subjects)
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
    # Duplicates left across the parts are dropped by Cohort.labels.
    pts = pl.concat([p.with_columns(pl.col("prediction_time").cast(pl.Datetime("us"))) for p in parts])
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


def _input_availability_times(cohort: Cohort, subjects: pl.DataFrame) -> pl.DataFrame:
    """Distinct ``(subject_id, prediction_time)``: availability times of the input events of ``subjects`` at or
    after their time zero (outcomes, end of follow-up and birth are not inputs)."""
    excluded = [*cohort.outcomes, cohort.conventions.end_of_followup_code, cohort.conventions.birth_code]
    avail = pl.coalesce("available_time", "time") if "available_time" in cohort.events.columns else pl.col("time")
    ev = (
        cohort.events.lazy()
        .filter(pl.col("time").is_not_null() & ~pl.col("code").is_in(excluded))
        .select("subject_id", pl.col("time").to_physical().alias("t"), avail.to_physical().alias("a"))
        .collect()
    )
    sid, time_us, avail_us = (ev[c].to_numpy().astype(np.int64, copy=False) for c in ("subject_id", "t", "a"))
    ids = subjects["subject_id"].to_numpy()
    slot = np.minimum(np.searchsorted(ids, sid), max(ids.size - 1, 0))
    tz = subjects["time_zero"].to_physical().to_numpy().astype(np.int64, copy=False)
    keep = (ids[slot] == sid) & (avail_us >= tz[slot]) if ids.size else np.zeros(sid.size, dtype=bool)
    sid, time_us, avail_us = sid[keep], time_us[keep], avail_us[keep]
    order: np.ndarray | None
    if sid.size > 1 and not bool(np.all(sid[1:] >= sid[:-1])):  # not a Cohort's (subject, time) order
        order = np.lexsort((avail_us, sid))
    else:
        order = _token_order(sid, time_us, avail_us)
    if order is not None:
        sid, avail_us = sid[order], avail_us[order]
    first = np.ones(sid.size, dtype=bool)
    first[1:] = (sid[1:] != sid[:-1]) | (avail_us[1:] != avail_us[:-1])
    return pl.DataFrame(
        {"subject_id": sid[first], "prediction_time": pl.Series(avail_us[first]).cast(pl.Datetime("us"))}
    )
