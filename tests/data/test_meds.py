"""Tests of migpt_traj.data.meds: root-level defects, sharding, and the MEDS round trip."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from migpt_traj.data.cohort import Cohort
from migpt_traj.data.meds import read_meds, write_meds
from migpt_traj.errors import ConfigError, DataReadError, MigptTrajError, SchemaError


def _corrupt_data_file(meds: Any, root: Path) -> None:
    meds.write_root(root, meds.valid_events(), splits=meds.VALID_SPLITS)
    path = root / "data" / "0000.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated: footer gone


def _corrupt_splits_file(meds: Any, root: Path) -> None:
    meds.write_root(root, meds.valid_events(), splits=meds.VALID_SPLITS)
    (root / "metadata" / "subject_splits.parquet").write_bytes(b"PAR1 this is not parquet")


def _subject_in_two_files(meds: Any, root: Path) -> None:
    v = meds.valid_events()
    first = v.filter((pl.col("subject_id") == 1) | (pl.col("code") == "SEX//male"))
    meds.write_root(root, [first, v.filter(pl.col("subject_id") > 1).filter(pl.col("code") != "SEX//male")])


def _no_data_folder(meds: Any, root: Path) -> None:
    (root / "metadata").mkdir(parents=True)
    meds.splits_frame(meds.VALID_SPLITS).write_parquet(root / "metadata" / "subject_splits.parquet")


def _empty_data_folder(meds: Any, root: Path) -> None:
    (root / "data").mkdir(parents=True)
    (root / "data" / "README.txt").write_text("no parquet here")


def _bad_json(meds: Any, root: Path) -> None:
    meds.write_root(root, meds.valid_events(), metadata="{'dataset_name': oops}")


def _json_not_an_object(meds: Any, root: Path) -> None:
    meds.write_root(root, meds.valid_events(), metadata='["tiny", "1"]')


def _incompatible_extra_columns(meds: Any, root: Path) -> None:
    v = meds.valid_events()
    meds.write_root(
        root,
        [
            v.filter(pl.col("subject_id") == 1).with_columns(site=pl.lit(1)),
            v.filter(pl.col("subject_id") > 1).with_columns(site=pl.lit([1.0])),
        ],
    )


def _bad_codes_file(meds: Any, root: Path) -> None:
    meds.write_root(root, meds.valid_events(), splits=meds.VALID_SPLITS)
    codes = pl.DataFrame({"code": ["LAB//bili"], "description": ["bilirubin"], "parent_codes": ["LOINC/1"]})
    codes.write_parquet(root / "metadata" / "codes.parquet")


# (id, builder of the malformed root, error, message pattern)
ROOT_DEFECTS: list[tuple[str, Callable[[Any, Path], None], type[MigptTrajError], str]] = [
    ("corrupt_data_file", _corrupt_data_file, DataReadError, r"Cannot read parquet file '.*data/0000\.parquet'"),
    (
        "corrupt_splits_file",
        _corrupt_splits_file,
        DataReadError,
        r"Cannot read parquet file '.*metadata/subject_splits\.parquet'",
    ),
    (
        "subject_split_across_two_files",
        _subject_in_two_files,
        SchemaError,
        r"Subject 2 appears in several data files \['data/0000\.parquet', 'data/0001\.parquet'\]",
    ),
    ("no_data_folder", _no_data_folder, DataReadError, r"has no 'data/' folder; expected '.*root/data'"),
    ("empty_data_folder", _empty_data_folder, DataReadError, r"has no parquet files under 'data/'"),
    ("dataset_json_not_json", _bad_json, DataReadError, r"Cannot read '.*metadata/dataset\.json'"),
    ("dataset_json_not_an_object", _json_not_an_object, DataReadError, r"dataset\.json' must hold a JSON object"),
    ("incompatible_extra_columns", _incompatible_extra_columns, SchemaError, r"incompatible schemas"),
    (
        "codes_file_with_string_parent_codes",
        _bad_codes_file,
        SchemaError,
        r"codes\.parquet\) of .* have column 'parent_codes' of dtype String; expected List\(String\)",
    ),
]


@pytest.mark.parametrize(("build", "error", "match"), [c[1:] for c in ROOT_DEFECTS], ids=[c[0] for c in ROOT_DEFECTS])
def test_malformed_roots_are_rejected_and_files_untouched(
    meds: Any, tmp_path: Path, build: Callable[[Any, Path], None], error: type, match: str
) -> None:
    root = tmp_path / "root"
    build(meds, root)
    meds.assert_rejected(root, error, match)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataReadError, match=r"MEDS root '.*nowhere' has no 'data/' folder"):
        Cohort.from_meds(tmp_path / "nowhere")


# ------------------------------------------------------------------ reading


def test_file_order_does_not_matter_and_does_not_warn(meds: Any, tmp_path: Path) -> None:
    """MEDS shards need not be in subject order across files (e.g. data/train/, data/held_out/)."""
    v = meds.valid_events()
    root = tmp_path / "root"
    (root / "data" / "a").mkdir(parents=True)
    (root / "data" / "b").mkdir(parents=True)
    v.filter(pl.col("subject_id") != 2).write_parquet(root / "data" / "a" / "x.parquet")  # subjects 1, 3
    v.filter(pl.col("subject_id") == 2).write_parquet(root / "data" / "b" / "x.parquet")  # subject 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tables = read_meds(root)
    assert [str(p.relative_to(root)) for p in tables.files] == ["data/a/x.parquet", "data/b/x.parquet"]
    assert_frame_equal(tables.events, v)


def test_read_meds_without_metadata(meds: Any, tmp_path: Path) -> None:
    tables = read_meds(meds.write_root(tmp_path / "root", meds.valid_events()))
    assert tables.splits is None and tables.codes is None and tables.metadata == {}


def test_seeded_split_when_no_splits_file(meds: Any, tmp_path: Path) -> None:
    root = meds.write_root(tmp_path / "root", meds.valid_events())
    a = Cohort.from_meds(root, split_seed=3, split_fractions=(1 / 3, 1 / 3, 1 / 3))
    assert sorted(a.splits["split"].to_list()) == ["held_out", "train", "tuning"]
    assert_frame_equal(a.splits, Cohort.from_meds(root, split_seed=3, split_fractions=(1 / 3, 1 / 3, 1 / 3)).splits)


# ------------------------------------------------------------------ round trip


def _assert_same_cohort(a: Cohort, b: Cohort) -> None:
    assert_frame_equal(a.events, b.events)
    assert_frame_equal(a.splits, b.splits)
    assert a.metadata == b.metadata
    assert_frame_equal(a.codes, b.codes)
    assert_frame_equal(a.subjects, b.subjects)


def _round_trip(root: Path, out: Path, **to_meds: Any) -> tuple[Cohort, Cohort]:
    first = Cohort.from_meds(root, outcomes=["MEDS_DEATH", "TRANSPLANT"])
    first.to_meds(out, **to_meds)
    return first, Cohort.from_meds(out, outcomes=["MEDS_DEATH", "TRANSPLANT"])


def test_round_trip(valid_root: Path, tmp_path: Path, meds: Any) -> None:
    before = meds.tree_hashes(valid_root)
    first, second = _round_trip(valid_root, tmp_path / "out")
    _assert_same_cohort(first, second)
    assert first.metadata == {"dataset_name": "tiny", "dataset_version": "1"}
    assert meds.tree_hashes(valid_root) == before
    assert_frame_equal(second.events, meds.valid_events())  # and equal to what was written by hand
    written = pl.read_parquet(tmp_path / "out" / "metadata" / "subject_splits.parquet")
    assert_frame_equal(written, meds.splits_frame(meds.VALID_SPLITS))


def _with_optional_columns(frame: pl.DataFrame) -> pl.DataFrame:
    n = frame.height
    return frame.with_columns(
        pl.Series("embedding", [[float(i), -float(i), 0.5] for i in range(n)], dtype=pl.List(pl.Float32)),
        image_path=pl.when(pl.col("code") == "LAB//alb").then(pl.lit("scans/ct.nii.gz")),
        available_time=pl.col("time") + pl.duration(hours=6),
    )


def test_round_trip_with_optional_columns(meds: Any, tmp_path: Path) -> None:
    events = _with_optional_columns(meds.valid_events())
    root = meds.write_root(tmp_path / "root", events, splits=meds.VALID_SPLITS)
    first, second = _round_trip(root, tmp_path / "out")
    _assert_same_cohort(first, second)
    assert {"embedding", "image_path", "available_time"} <= set(second.events.columns)
    assert second.events["embedding"].dtype == pl.List(pl.Float32)
    assert second.events["embedding"].to_list()[3] == [3.0, -3.0, 0.5]


def test_round_trip_over_shards_of_varying_optional_columns(meds: Any, tmp_path: Path) -> None:
    v = _with_optional_columns(meds.valid_events())
    shards = [
        v.filter(pl.col("subject_id") == 1).drop("image_path", "available_time"),  # embedding only
        v.filter(pl.col("subject_id") == 2).drop("embedding"),  # image_path + available_time
        v.filter(pl.col("subject_id") == 3).drop("embedding", "image_path", "available_time"),
    ]
    root = meds.write_root(tmp_path / "root", shards, splits=meds.VALID_SPLITS)
    first, second = _round_trip(root, tmp_path / "out", subjects_per_shard=2)
    _assert_same_cohort(first, second)
    # Missing optional columns read as null for that shard's rows.
    ev = first.events
    assert ev.filter(pl.col("subject_id") == 3).select("embedding", "image_path", "available_time").null_count().row(
        0
    ) == (3, 3, 3)
    assert ev.filter(pl.col("subject_id") == 1)["embedding"].null_count() == 0
    assert ev.filter(pl.col("subject_id") == 2)["available_time"].null_count() == 1  # the static row
    # Written as two shards (subjects 1-2, 3) with the same columns.
    files = sorted((tmp_path / "out" / "data").glob("*.parquet"))
    assert [p.name for p in files] == ["0000.parquet", "0001.parquet"]
    assert pl.read_parquet(files[0])["subject_id"].unique().sort().to_list() == [1, 2]
    assert len({tuple(pl.read_parquet_schema(p).items()) for p in files}) == 1


def test_codes_descriptions_survive_the_round_trip(valid_root: Path, tmp_path: Path) -> None:
    pl.DataFrame(
        {"code": ["LAB//bili", "UNUSED"], "description": ["bilirubin", "x"], "parent_codes": [["LOINC/1"], None]}
    ).write_parquet(valid_root / "metadata" / "codes.parquet")
    first, second = _round_trip(valid_root, tmp_path / "out")
    _assert_same_cohort(first, second)
    codes = second.codes
    assert codes["code"].to_list() == sorted(meds_codes := first.events["code"].unique().to_list())
    assert "UNUSED" not in meds_codes
    row = codes.filter(pl.col("code") == "LAB//bili").row(0, named=True)
    assert row == {"code": "LAB//bili", "description": "bilirubin", "parent_codes": ["LOINC/1"]}


def test_to_meds_refuses_a_non_empty_root_unless_overwrite(valid_root: Path, tmp_path: Path, meds: Any) -> None:
    cohort = Cohort.from_meds(valid_root)
    out = tmp_path / "out"
    cohort.to_meds(out, subjects_per_shard=1)
    assert len(list((out / "data").glob("*.parquet"))) == 3
    before = meds.tree_hashes(out)
    with pytest.raises(DataReadError, match=r"MEDS root '.*out' is not empty; pass overwrite=True"):
        cohort.to_meds(out)
    assert meds.tree_hashes(out) == before

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DataReadError, match="is not empty"):
        cohort.to_meds(other)

    cohort.subset([1, 2]).to_meds(out, overwrite=True)  # old shards (3 files) must not survive
    assert [p.name for p in (out / "data").glob("*.parquet")] == ["0000.parquet"]
    assert Cohort.from_meds(out).subject_ids() == [1, 2]
    cohort.to_meds(other, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"


def test_to_meds_into_an_empty_existing_folder(valid_root: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    Cohort.from_meds(valid_root).to_meds(tmp_path / "empty")
    assert json.loads((tmp_path / "empty" / "metadata" / "dataset.json").read_text())["dataset_name"] == "tiny"


def test_write_meds_rejects_a_file_root_and_bad_shard_size(valid_root: Path, tmp_path: Path) -> None:
    cohort = Cohort.from_meds(valid_root)
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(DataReadError, match="is a file, not a folder"):
        cohort.to_meds(target)
    with pytest.raises(ConfigError, match="subjects_per_shard must be >= 1; got 0"):
        write_meds(
            tmp_path / "new",
            events=cohort.events,
            splits=cohort.splits,
            codes=cohort.codes,
            metadata={},
            subjects_per_shard=0,
        )
