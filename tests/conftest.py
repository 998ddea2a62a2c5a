"""Shared builders: tiny multimodal cohorts with a known risk signal, and a fake deterministic note embedder.

Test modules get them through the session-scoped ``tiny`` fixture (``tiny.cohort(...)``, ``tiny.events(...)``,
``tiny.at(days)``, ``tiny.event_frame(rows)``, ``tiny.note_embedder``), usable from hypothesis tests too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from migpt_traj.data.cohort import Cohort

ORIGIN = dt.datetime(2000, 1, 1)
NOTE_DIM = 4
IMAGE_DIM = 3
TINY_OUTCOMES = ("MEDS_DEATH", "TRANSPLANT")


def at(days: float) -> dt.datetime:
    """``ORIGIN + days`` (microsecond precision)."""
    return ORIGIN + dt.timedelta(microseconds=round(days * 86_400_000_000))


def event_frame(rows: Sequence[dict[str, object]]) -> pl.DataFrame:
    """MEDS events from dict rows (missing keys are null), with every optional column used by the tests."""
    schema = {
        "subject_id": pl.Int64,
        "time": pl.Datetime("us"),
        "code": pl.String,
        "numeric_value": pl.Float32,
        "text_value": pl.String,
        "embedding": pl.List(pl.Float32),
        "available_time": pl.Datetime("us"),
    }
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema, orient="row")


def fake_note_embedder(texts: Sequence[str]) -> np.ndarray:
    """A deterministic stand-in for the frozen text encoder: a seeded vector per text (hash of its bytes)."""
    out = np.empty((len(texts), NOTE_DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        out[i] = np.random.default_rng(seed).standard_normal(NOTE_DIM)
    return out


def tiny_events(
    n_subjects: int = 40,
    *,
    seed: int = 0,
    notes: bool = False,
    images: bool = False,
    lag_days: float = 0.0,
) -> pl.DataFrame:
    """Events of ``n_subjects`` with a latent risk ``r`` that drives both the labs and the outcome hazards.

    Each subject: a static sex row, a birth row, entry at ``ORIGIN + u`` (u < 30 days), a treatment at entry,
    visits every 60-120 days with ``LAB//a`` (= 5 + 2 r + drift, the signal), ``LAB//b`` (noise) and
    ``SIGN//x`` (a 0/1 sign), optional ``NOTE//visit`` texts and ``IMAGE//ct`` embeddings (available
    ``lag_days`` after they are taken), until death (hazard ``exp(1.5 r) / 400`` per day), transplant
    (``1 / 4000`` per day) or censoring (``END_OF_FOLLOWUP``, uniform in 300-1500 days).
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for sid in range(1, n_subjects + 1):
        r = float(rng.standard_normal())
        entry = float(rng.uniform(0, 30))
        rows.append({"subject_id": sid, "code": "SEX//female" if rng.random() < 0.6 else "SEX//male"})
        rows.append({"subject_id": sid, "time": at(entry - rng.uniform(30, 70) * 365.25), "code": "MEDS_BIRTH"})
        t_death = rng.exponential(400.0 / np.exp(1.5 * r))
        t_tx = rng.exponential(4000.0)
        t_cens = rng.uniform(300, 1500)
        end = min(t_death, t_tx, t_cens)
        end_code = "MEDS_DEATH" if end == t_death else ("TRANSPLANT" if end == t_tx else "END_OF_FOLLOWUP")
        drug = "TREATMENT//drug" if rng.random() < 0.5 else "TREATMENT//placebo"
        rows.append({"subject_id": sid, "time": at(entry), "code": drug, "numeric_value": 1.0})
        visit = 0.0
        while visit < end:
            t = at(entry + visit)
            rows.append({"subject_id": sid, "time": t, "code": "LAB//a", "numeric_value": 5 + 2 * r + visit / 500})
            rows.append({"subject_id": sid, "time": t, "code": "LAB//b", "numeric_value": float(rng.gamma(2.0))})
            rows.append({"subject_id": sid, "time": t, "code": "SIGN//x", "numeric_value": float(r > 0.5)})
            if notes:
                word = "worse" if r > 0 else "stable"
                rows.append(
                    {"subject_id": sid, "time": t, "code": "NOTE//visit", "text_value": f"{word} day {visit:.0f}"}
                )
            if images:
                emb = [r + float(rng.normal(0, 0.3)), float(rng.normal()), visit / 1000]
                avail = at(entry + visit + lag_days) if lag_days else None
                rows.append(
                    {"subject_id": sid, "time": t, "code": "IMAGE//ct", "embedding": emb, "available_time": avail}
                )
            visit += float(rng.uniform(60, 120))
        rows.append({"subject_id": sid, "time": at(entry + end), "code": end_code})
    return event_frame(rows)


def tiny_splits(n_subjects: int, *, train: float = 0.6, tuning: float = 0.2) -> dict[int, str]:
    """Deterministic interleaved split: subject ids cycle through train / tuning / held_out."""
    n_train, n_tune = round(train * 10), round(tuning * 10)
    names = ["train"] * n_train + ["tuning"] * n_tune + ["held_out"] * (10 - n_train - n_tune)
    return {sid: names[(sid - 1) % 10] for sid in range(1, n_subjects + 1)}


def make_tiny_cohort(
    n_subjects: int = 40,
    *,
    seed: int = 0,
    notes: bool = False,
    images: bool = False,
    lag_days: float = 0.0,
    train: float = 0.6,
    tuning: float = 0.2,
) -> Cohort:
    """A validated :class:`Cohort` of :func:`tiny_events` with outcomes death (primary) and transplant."""
    ev = tiny_events(n_subjects, seed=seed, notes=notes, images=images, lag_days=lag_days)
    present = set(ev["code"].unique().to_list())
    outcomes = [o for o in TINY_OUTCOMES if o in present]
    return Cohort.from_events(ev, outcomes=outcomes, splits=tiny_splits(n_subjects, train=train, tuning=tuning))


class TinyBuilders:
    """The builders of this module, as one object handed to tests by the ``tiny`` fixture."""

    origin = ORIGIN
    note_dim = NOTE_DIM
    image_dim = IMAGE_DIM
    at = staticmethod(at)
    event_frame = staticmethod(event_frame)
    events = staticmethod(tiny_events)
    splits = staticmethod(tiny_splits)
    cohort = staticmethod(make_tiny_cohort)
    note_embedder = staticmethod(fake_note_embedder)


@pytest.fixture(scope="session")
def tiny() -> type[TinyBuilders]:
    return TinyBuilders
