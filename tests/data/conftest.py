"""Shared builders of tiny MEDS event frames and roots for the data-layer tests.

Test modules get them through the ``meds`` fixture (``meds.events(...)``, ``meds.write_root(...)``) rather
than ``from conftest import ...``, which breaks as soon as another test folder has its own conftest.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from migpt_traj.data.schema import EVENT_SCHEMA

#: Day 0 of every hand-built event stream.
BASE = dt.datetime(2020, 1, 1)

#: A row of a hand-built stream: (subject_id, day after BASE or None for a static row, code,
#: numeric_value, text_value); the last two may be left out.
Row = tuple[Any, ...]


def day(days: float | None) -> dt.datetime | None:
    """BASE + ``days`` (None stays None, for static rows)."""
    return None if days is None else BASE + dt.timedelta(days=days)


def events(rows: Sequence[Row], **extra: Sequence[Any]) -> pl.DataFrame:
    """A canonical MEDS event frame from hand-written rows, plus optional extra columns (given in full)."""
    padded = [(*r, *([None] * (5 - len(r)))) for r in rows]
    frame = pl.DataFrame(
        {
            "subject_id": [r[0] for r in padded],
            "time": [day(r[1]) for r in padded],
            "code": [r[2] for r in padded],
            "numeric_value": [r[3] for r in padded],
            "text_value": [r[4] for r in padded],
        },
        schema=EVENT_SCHEMA,
    )
    return frame.with_columns(pl.Series(name, values) for name, values in extra.items())


def valid_events() -> pl.DataFrame:
    """Three well-formed subjects: one dies, one is censored at END_OF_FOLLOWUP, one is transplanted."""
    return events(
        [
            (1, None, "SEX//female"),
            (1, -20_000, "MEDS_BIRTH"),
            (1, 0, "LAB//bili", 1.2),
            (1, 100, "LAB//bili", 2.0),
            (1, 400, "MEDS_DEATH"),
            (2, None, "SEX//male"),
            (2, 10, "LAB//bili", 0.8),
            (2, 20, "NOTE//progress", None, "stable"),
            (2, 800, "END_OF_FOLLOWUP"),
            (3, 5, "LAB//alb", 3.5),
            (3, 50, "TRANSPLANT"),
            (3, 60, "LAB//alb", 3.9),
        ]
    )


VALID_SPLITS = {1: "train", 2: "tuning", 3: "held_out"}


def splits_frame(mapping: dict[int, str] | Sequence[tuple[int, str]]) -> pl.DataFrame:
    pairs = list(mapping.items()) if isinstance(mapping, dict) else list(mapping)
    return pl.DataFrame(
        {"subject_id": [p[0] for p in pairs], "split": [p[1] for p in pairs]},
        schema={"subject_id": pl.Int64, "split": pl.String},
    )


def write_root(
    root: Path,
    frames: pl.DataFrame | Sequence[pl.DataFrame],
    *,
    splits: dict[int, str] | pl.DataFrame | None = None,
    metadata: str | None = None,
) -> Path:
    """Write a MEDS root by hand: ``data/NNNN.parquet`` per frame, optional splits and raw dataset.json."""
    frames = [frames] if isinstance(frames, pl.DataFrame) else list(frames)
    (root / "data").mkdir(parents=True)
    for i, frame in enumerate(frames):
        frame.write_parquet(root / "data" / f"{i:04d}.parquet")
    if splits is not None or metadata is not None:
        (root / "metadata").mkdir()
    if splits is not None:
        table = splits_frame(splits) if isinstance(splits, dict) else splits
        table.write_parquet(root / "metadata" / "subject_splits.parquet")
    if metadata is not None:
        (root / "metadata" / "dataset.json").write_text(metadata)
    return root


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_rejected(
    root: Path, error: type[Exception], match: str, **from_meds: Any
) -> pytest.ExceptionInfo[Exception]:
    """``Cohort.from_meds(root, **from_meds)`` raises ``error`` matching ``match``, leaving every file intact."""
    from migpt_traj.data.cohort import Cohort

    before = tree_hashes(root)
    with pytest.raises(error, match=match) as info:
        Cohort.from_meds(root, **from_meds)
    assert tree_hashes(root) == before, "reading a MEDS root modified its files"
    return info


class MedsBuilders:
    """The builders of this module, as one object handed to tests by the ``meds`` fixture."""

    BASE = BASE
    VALID_SPLITS = VALID_SPLITS
    day = staticmethod(day)
    events = staticmethod(events)
    valid_events = staticmethod(valid_events)
    splits_frame = staticmethod(splits_frame)
    write_root = staticmethod(write_root)
    tree_hashes = staticmethod(tree_hashes)
    assert_rejected = staticmethod(assert_rejected)


@pytest.fixture
def meds() -> type[MedsBuilders]:
    """The MEDS builders (see :class:`MedsBuilders`)."""
    return MedsBuilders


@pytest.fixture
def valid_root(tmp_path: Path) -> Path:
    """A well-formed MEDS root of :func:`valid_events` with explicit splits and dataset.json."""
    return write_root(
        tmp_path / "valid",
        valid_events(),
        splits=VALID_SPLITS,
        metadata='{"dataset_name": "tiny", "dataset_version": "1"}',
    )
