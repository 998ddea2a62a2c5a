"""Reading and writing MEDS roots with polars.

A MEDS root holds ``data/**/*.parquet`` (events, each subject in exactly one file) and ``metadata/`` with
``subject_splits.parquet``, ``codes.parquet`` and ``dataset.json``. Reading never modifies the input files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from migpt_traj.data.schema import EVENT_SCHEMA, OPTIONAL_COLUMNS, cast_to_schema, sort_events
from migpt_traj.errors import ConfigError, DataReadError, SchemaError

__all__ = ["CODES_FILE", "DATASET_FILE", "SPLITS_FILE", "MedsTables", "read_meds", "write_meds"]

SPLITS_FILE = "metadata/subject_splits.parquet"
CODES_FILE = "metadata/codes.parquet"
DATASET_FILE = "metadata/dataset.json"


@dataclass(frozen=True)
class MedsTables:
    """The tables of a MEDS root after file-level checks, before cohort-level validation.

    Attributes:
        events: all data files concatenated, columns cast to the canonical dtypes, sorted by subject and time.
        splits: ``metadata/subject_splits.parquet`` as read, or None when absent.
        codes: ``metadata/codes.parquet`` as read, or None when absent.
        metadata: ``metadata/dataset.json`` (empty when absent).
        files: the data files read, sorted by path.
    """

    events: pl.DataFrame
    splits: pl.DataFrame | None
    codes: pl.DataFrame | None
    metadata: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as err:  # polars raises several error types for corrupt files
        raise DataReadError(f"Cannot read parquet file {str(path)!r}: {err}") from err


def read_meds(root: str | Path) -> MedsTables:
    """Read a MEDS root's events and metadata.

    Each data file is read, checked for the required columns and cast to the canonical dtypes on its own (so
    messages name the file, and a file missing a column is caught even when others have it), then the files
    are concatenated; they may differ in which optional columns they carry. A file whose rows are not sorted
    by subject and time is sorted with a :class:`~migpt_traj.errors.MigptTrajWarning`; the order of the files
    themselves does not matter. Nothing on disk is modified.

    Raises:
        DataReadError: the root or its ``data/`` folder is missing or empty, or a file cannot be read.
        SchemaError: a file misses a column or has a wrong dtype, or a subject appears in more than one file.
    """
    root = Path(root)
    data_dir = root / "data"
    if not data_dir.is_dir():
        raise DataReadError(f"MEDS root {str(root)!r} has no 'data/' folder; expected {str(data_dir)!r}.")
    files = sorted(p for p in data_dir.rglob("*.parquet") if p.is_file())
    if not files:
        raise DataReadError(f"MEDS root {str(root)!r} has no parquet files under 'data/'.")

    frames: list[pl.DataFrame] = []
    owners: list[pl.DataFrame] = []
    for i, path in enumerate(files):
        source = f"data file {str(path.relative_to(root))!r} of MEDS root {str(root)!r}"
        frame = sort_events(cast_to_schema(_read_parquet(path), source=source), source=source)
        owners.append(frame.select(pl.col("subject_id").drop_nulls().unique(), file=pl.lit(i, pl.Int32)))
        frames.append(frame)
    owner = pl.concat(owners)
    shared = owner.filter(pl.col("subject_id").is_duplicated())
    if shared.height:
        sid = int(shared["subject_id"].min())  # type: ignore[arg-type]
        where = sorted(str(files[j].relative_to(root)) for j in shared.filter(pl.col("subject_id") == sid)["file"])
        raise SchemaError(
            f"Subject {sid} appears in several data files {where} of MEDS root {str(root)!r} "
            f"({shared['subject_id'].n_unique()} subject(s) in all); MEDS keeps each subject in one file."
        )
    try:
        events = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    except pl.exceptions.PolarsError as err:
        raise SchemaError(f"Data files under {str(data_dir)!r} have incompatible schemas: {err}") from err
    events = sort_events(events, source=None)  # only the order of the files may differ here

    splits = _read_parquet(root / SPLITS_FILE) if (root / SPLITS_FILE).is_file() else None
    codes = _read_parquet(root / CODES_FILE) if (root / CODES_FILE).is_file() else None
    metadata: dict[str, Any] = {}
    if (root / DATASET_FILE).is_file():
        try:
            metadata = json.loads((root / DATASET_FILE).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataReadError(f"Cannot read {str(root / DATASET_FILE)!r}: {err}") from err
        if not isinstance(metadata, dict):
            raise DataReadError(
                f"{str(root / DATASET_FILE)!r} must hold a JSON object (dataset_name, dataset_version, ...); "
                f"got a {type(metadata).__name__}."
            )
    return MedsTables(events=events, splits=splits, codes=codes, metadata=metadata, files=files)


def write_meds(
    root: str | Path,
    *,
    events: pl.DataFrame,
    splits: pl.DataFrame,
    codes: pl.DataFrame,
    metadata: dict[str, Any],
    subjects_per_shard: int = 50_000,
    overwrite: bool = False,
) -> Path:
    """Write a MEDS root: events sharded by subject into ``data/NNNN.parquet``, plus the metadata files.

    Shards hold ``subjects_per_shard`` consecutive subjects each (in the order of ``events``, which should be
    sorted by subject and time); every shard carries the same columns.

    Args:
        root: the folder to write; created if absent.
        events: the events, in canonical form (see :func:`~migpt_traj.data.schema.validate_events`).
        splits: ``subject_id, split``.
        codes: ``code, description, parent_codes``.
        metadata: written as ``metadata/dataset.json``.
        subjects_per_shard: subjects per data file, >= 1.
        overwrite: allow a non-empty ``root``; its old ``data/**/*.parquet`` files are deleted first (other
            files are left alone, the metadata files are replaced).

    Returns:
        ``root`` as a Path.

    Raises:
        DataReadError: ``root`` is a file, or a non-empty folder and ``overwrite`` is false.
        ConfigError: ``subjects_per_shard`` < 1.
    """
    root = Path(root)
    if subjects_per_shard < 1:
        raise ConfigError(f"subjects_per_shard must be >= 1; got {subjects_per_shard}.")
    if root.exists() and not root.is_dir():
        raise DataReadError(f"MEDS root {str(root)!r} is a file, not a folder.")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise DataReadError(
                f"MEDS root {str(root)!r} is not empty; pass overwrite=True to replace its data files, or "
                f"choose an empty or new folder."
            )
        for old in (root / "data").rglob("*.parquet"):
            old.unlink()
    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)

    columns = [c for c in (*EVENT_SCHEMA, *OPTIONAL_COLUMNS) if c in events.columns]
    columns += [c for c in events.columns if c not in columns]
    shard = (pl.col("subject_id").rank("dense") - 1) // subjects_per_shard
    parts = events.select(columns).with_columns(_shard=shard).partition_by("_shard", maintain_order=True)
    for part in parts:
        index = int(part["_shard"][0])
        part.drop("_shard").write_parquet(data_dir / f"{index:04d}.parquet")
    splits.write_parquet(root / SPLITS_FILE)
    codes.write_parquet(root / CODES_FILE)
    (root / DATASET_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))
    return root
