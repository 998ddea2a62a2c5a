"""A straightforward pandas implementation of as-of tensorizing, the reference the library is timed against.

It is what one writes first with pandas: group the events by subject, then for every sample take the subject's
group, keep what is available at the cutoff (``<=``), sort it, truncate it and build the token rows; for every
query count the visible tokens. It computes the same thing as :func:`migpt_traj.data.tensorize.tensorize` (the
test ``tests/benchmarks/test_perf.py`` checks every array on a synthetic cohort), sharing only the preprocessor's
value and embedding transforms, so the comparison times the as-of sampling itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from migpt_traj.data.cohort import Cohort
from migpt_traj.data.preprocess import START_ID, UNK_ID, Preprocessor
from migpt_traj.data.schema import MODALITY_IDS
from migpt_traj.data.tensorize import START_MODALITY, TokenTable

__all__ = ["compare_with_library", "pandas_events", "tensorize_pandas"]

_DAY = pd.Timedelta(days=1)


def pandas_events(cohort: Cohort) -> pd.DataFrame:
    """The cohort's events as a pandas frame (the input a pandas user starts from; not timed)."""
    ev = cohort.events.to_pandas()
    if "available_time" not in ev.columns:
        ev["available_time"] = pd.NaT
    if "embedding" not in ev.columns:
        ev["embedding"] = None
    return ev


def _modality(g: pd.DataFrame, cohort: Cohort) -> np.ndarray:
    conv = cohort.conventions
    code = g["code"].astype(str)
    choices = [
        g["time"].isna(),
        code.str.startswith(conv.note_prefix),
        code.str.startswith(conv.image_prefix),
        code.str.startswith(conv.treatment_prefix),
        g["numeric_value"].notna(),
    ]
    names = np.select(choices, ["static", "note", "image", "treatment", "measurement"], default="event")
    return np.asarray([MODALITY_IDS[n] for n in names], dtype=np.int64)


def tensorize_pandas(
    cohort: Cohort,
    events: pd.DataFrame,
    samples: pl.DataFrame,
    pre: Preprocessor,
    *,
    queries: pl.DataFrame | None = None,
    max_len: int = 512,
    note_embedder: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> dict[str, Any]:
    """As-of token rows with pandas, one sample at a time (per-subject groups from ``groupby``).

    Returns:
        dict of flat arrays named as :class:`TokenTable`'s fields (``offsets``, ``code_id``, ``value``,
        ``has_value``, ``modality``, ``time_days``, ``age_years``, ``avail_days``, ``q_visible``, ``q_days``,
        ``q_age_years``), plus ``image`` and ``note``: per token, the resolved vector (NaN row = none).
    """
    conv = cohort.conventions
    excluded = set(pre.excluded_codes)
    vocab = {c: i for i, c in enumerate(pre.codes)}
    ev = events.copy()
    ev["_row"] = np.arange(len(ev))
    ev["avail"] = ev["available_time"].fillna(ev["time"])
    groups = dict(tuple(ev.groupby("subject_id", sort=False)))
    smp = samples.select("subject_id", "cutoff_time").to_pandas()
    if queries is None:
        q = pd.DataFrame({"sample_index": np.arange(len(smp)), "prediction_time": smp["cutoff_time"]})
    else:
        q = queries.select("sample_index", "prediction_time").to_pandas()
    q_by_sample = dict(tuple(q.groupby("sample_index", sort=False)))
    d_img = max(pre.image_dim, 1)
    out: dict[str, list[Any]] = {k: [] for k in ("code_id", "value", "has_value", "modality", "time_days")}
    out.update({k: [] for k in ("age_years", "avail_days", "image", "note", "lengths")})
    q_visible = np.zeros(len(q), dtype=np.int64)
    q_days = np.zeros(len(q), dtype=np.float64)
    q_age = np.zeros(len(q), dtype=np.float64)
    empty = ev.iloc[0:0]
    for s, (sid, cutoff) in enumerate(zip(smp["subject_id"], smp["cutoff_time"], strict=True)):
        g = groups.get(sid, empty)
        timed = g[g["time"].notna() & (g["avail"] <= cutoff)]
        tz = timed.loc[timed["code"] != conv.birth_code, "time"].min()
        tz = cutoff if pd.isna(tz) else tz
        birth = timed.loc[timed["code"] == conv.birth_code, "time"].min()
        inputs = g[~g["code"].isin(excluded)]
        if note_embedder is None:
            inputs = inputs[~inputs["code"].astype(str).str.startswith(conv.note_prefix) | inputs["time"].isna()]
        statics = inputs[inputs["time"].isna()]
        seen = inputs[inputs["time"].notna() & (inputs["avail"] <= cutoff)].sort_values(["avail", "time", "_row"])
        budget = max(max_len - 1 - len(statics), 0)
        seen = seen.iloc[len(seen) - min(budget, len(seen)) :]
        tok = pd.concat([statics, seen])
        out["lengths"].append(len(tok) + 1)
        values = pre.normalise_values(tok["code"].to_numpy(dtype=object), tok["numeric_value"].to_numpy(np.float64))
        out["code_id"] += [START_ID, *(vocab.get(c, UNK_ID) for c in tok["code"])]
        out["value"] += [0.0, *np.nan_to_num(values, nan=0.0)]
        out["has_value"] += [0.0, *(~np.isnan(values)).astype(float)]
        out["modality"] += [START_MODALITY, *_modality(tok, cohort)]
        out["time_days"] += [0.0, *((tok["time"] - tz) / _DAY).fillna(0.0)]
        out["avail_days"] += [-np.inf, *((tok["avail"] - tz) / _DAY).fillna(-np.inf)]
        out["age_years"] += [(tz - birth) / _DAY / 365.25, *((tok["time"] - birth) / _DAY / 365.25)]
        img = np.full((len(tok) + 1, d_img), np.nan)
        emb = tok["embedding"].to_numpy(dtype=object)
        has_img = np.asarray([e is not None for e in emb], dtype=bool) & (pre.image_dim > 0)
        if has_img.any():
            img[1:][has_img] = pre.normalise_images(np.vstack(list(emb[has_img])).astype(np.float64))
        out["image"].append(img)
        is_note = tok["code"].astype(str).str.startswith(conv.note_prefix) & tok["time"].notna()
        pairs = zip(tok["text_value"], is_note, strict=True)
        out["note"] += [None, *(t if n and isinstance(t, str) else None for t, n in pairs)]
        qs = q_by_sample.get(s)
        if qs is not None:
            rows, t = qs.index.to_numpy(), qs["prediction_time"]
            seen_avail = seen["avail"].to_numpy()
            q_visible[rows] = 1 + len(statics) + np.searchsorted(seen_avail, t.to_numpy(), side="right")
            q_days[rows] = ((t - tz) / _DAY).to_numpy()
            q_age[rows] = ((t - birth) / _DAY / 365.25).to_numpy()
    result: dict[str, Any] = {
        "offsets": np.concatenate([[0], np.cumsum(out.pop("lengths"))]).astype(np.int64),
        "image": np.vstack(out.pop("image")) if len(smp) else np.zeros((0, d_img)),
        "q_visible": q_visible,
        "q_days": q_days.astype(np.float32),
        "q_age_years": q_age.astype(np.float32),
    }
    texts = out.pop("note")
    result.update({k: np.asarray(v, dtype=np.float64).astype(np.float32) for k, v in out.items()})
    result["code_id"] = result["code_id"].astype(np.int32)
    result["modality"] = result["modality"].astype(np.int64)
    if note_embedder is not None and any(t is not None for t in texts):
        uniq = sorted({t for t in texts if t is not None})
        vectors = dict(zip(uniq, np.asarray(note_embedder(uniq), dtype=np.float32), strict=True))
        dim = next(iter(vectors.values())).size
        result["note"] = np.vstack([vectors[t] if t is not None else np.full(dim, np.nan, np.float32) for t in texts])
    else:
        result["note"] = np.full((len(texts), 1), np.nan, dtype=np.float32)
    return result


def compare_with_library(table: TokenTable, ref: dict[str, Any]) -> dict[str, float]:
    """Largest absolute difference per array between the library's table and the pandas reference.

    Exact arrays (offsets, ids, modality, q_visible) must match exactly; an AssertionError names the first that
    does not. Times are compared in days (float32 on both sides).
    """
    for name in ("offsets", "code_id", "modality", "q_visible"):
        np.testing.assert_array_equal(getattr(table, name), ref[name], err_msg=name)
    diffs: dict[str, float] = {}
    for name in ("value", "has_value", "time_days", "age_years", "avail_days", "q_days", "q_age_years"):
        a, b = getattr(table, name).astype(np.float64), np.asarray(ref[name], dtype=np.float64)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN positions")
        np.testing.assert_array_equal(np.isinf(a) * np.sign(a), np.isinf(b) * np.sign(b), err_msg=f"{name}: inf")
        finite = np.isfinite(a)
        diffs[name] = float(np.max(np.abs(a[finite] - b[finite]), initial=0.0))
    img = np.where((table.image_index >= 0)[:, None], table.images[np.maximum(table.image_index, 0)], np.nan)
    if table.images.shape[0] == 0:
        img = np.full_like(ref["image"], np.nan)
    diffs["image"] = _nan_aware_max_diff(img, ref["image"], "image")
    note = (
        table.notes[np.maximum(table.note_index, 0)] if table.notes.shape[0] else np.zeros((table.note_index.size, 1))
    )
    note = np.where((table.note_index >= 0)[:, None], note, np.nan)
    diffs["note"] = _nan_aware_max_diff(note, ref["note"], "note")
    return diffs


def _nan_aware_max_diff(a: np.ndarray, b: np.ndarray, name: str) -> float:
    assert a.shape == b.shape, (name, a.shape, b.shape)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: which tokens have one")
    both = ~np.isnan(a)
    return float(np.max(np.abs(a[both] - b[both]), initial=0.0))
