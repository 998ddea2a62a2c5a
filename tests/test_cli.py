"""The migpt-traj command (fit, predict) on a MEDS root, and the duration strings it accepts."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from migpt_traj.cli import main
from migpt_traj.data.cohort import Cohort
from migpt_traj.datasets import load_pbc2
from migpt_traj.durations import DAYS_PER_YEAR, parse_days, parse_days_list
from migpt_traj.errors import ConfigError

SMALL_YAML = """\
model:
  d_model: 16
  n_layers: 1
  n_heads: 2
  n_bins: 4
train:
  batch_size: 32
  extra_queries_per_subject: 0
data:
  use_notes: false
"""


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Cohort, Path, Path]:
    """A PBC2 subset written as a MEDS root, and a run folder fitted on it by ``migpt-traj fit``."""
    base = tmp_path_factory.mktemp("cli")
    pbc2 = load_pbc2()
    cohort = pbc2.subset(pbc2.subject_ids()[:90])
    root = cohort.to_meds(base / "meds")
    config = base / "small.yaml"
    config.write_text(SMALL_YAML)
    code = main(
        [
            "fit",
            "--data",
            str(root),
            "--out",
            str(base / "run"),
            "--config",
            str(config),
            "--outcomes",
            "MEDS_DEATH,TRANSPLANT",
            "--max-epochs",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    return cohort, root, base / "run"


def test_fit_then_predict_covers_every_subject_at_risk(
    fitted_run: tuple[Cohort, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cohort, root, run = fitted_run
    out = tmp_path / "preds" / "risk.parquet"
    code = main(
        [
            "predict",
            "--model",
            str(run),
            "--data",
            str(root),
            "--landmarks",
            "0,6m,1y",
            "--horizons",
            "1y,1095d",
            "--split",
            "held_out",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "Wrote" in capsys.readouterr().out
    risk = pl.read_parquet(out)
    assert {"subject_id", "prediction_time", "event", "horizon_days", "risk"} <= set(risk.columns)
    reread = Cohort.from_meds(root, outcomes=["MEDS_DEATH", "TRANSPLANT"])
    assert reread.subject_ids("held_out") == cohort.subject_ids("held_out")
    landmarks = [0.0, DAYS_PER_YEAR / 2, DAYS_PER_YEAR]
    labels = cohort.labels(landmarks=landmarks, split="held_out")
    assert labels["subject_id"].n_unique() > 5
    expected = (
        labels.select("subject_id", "prediction_time")
        .join(pl.DataFrame({"event": ["MEDS_DEATH", "TRANSPLANT"]}), how="cross")
        .join(pl.DataFrame({"horizon_days": [DAYS_PER_YEAR, 1095.0]}), how="cross")
        .sort(pl.all())
    )
    got = risk.select("subject_id", "prediction_time", "event", "horizon_days").sort(pl.all())
    assert_frame_equal(got, expected)
    assert risk["risk"].is_between(0.0, 1.0).all()


def test_predict_split_all_covers_every_split(fitted_run: tuple[Cohort, Path, Path], tmp_path: Path) -> None:
    cohort, root, run = fitted_run
    out = tmp_path / "all.parquet"
    assert (
        main(
            [
                "predict",
                "--model",
                str(run),
                "--data",
                str(root),
                "--landmarks",
                "0",
                "--horizons",
                "1y",
                "--split",
                "all",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    risk = pl.read_parquet(out)
    assert risk["subject_id"].n_unique() == cohort.labels(landmarks=[0.0])["subject_id"].n_unique()


def test_the_run_folder_holds_no_pickle(fitted_run: tuple[Cohort, Path, Path]) -> None:
    _, _, run = fitted_run
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    assert {"model.json", "model.safetensors"} <= set(files), files
    # Checkpoints are safetensors too; nothing in the run folder is a pickle or a torch.save zip.
    assert all(f.endswith((".json", ".safetensors")) for f in files), files
    for f in files:
        head = (run / f).read_bytes()[:4]
        assert not head.startswith(b"\x80") and head != b"PK\x03\x04", f


@pytest.mark.parametrize(
    ("argv_tail", "match"),
    [
        pytest.param(["--landmarks", "1yy", "--horizons", "1y"], "Cannot read --landmarks '1yy'", id="bad-landmark"),
        pytest.param(["--landmarks", "0", "--horizons", ","], "--horizons is empty", id="empty-horizons"),
    ],
)
def test_predict_reports_bad_durations_and_exits_2(
    fitted_run: tuple[Cohort, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv_tail: list[str],
    match: str,
) -> None:
    _, root, run = fitted_run
    code = main(["predict", "--model", str(run), "--data", str(root), "--out", str(tmp_path / "x.parquet"), *argv_tail])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("migpt-traj: error:") and match in err
    assert not (tmp_path / "x.parquet").exists()


def test_predict_with_a_missing_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "predict",
            "--model",
            str(tmp_path / "nope"),
            "--data",
            str(tmp_path),
            "--landmarks",
            "0",
            "--horizons",
            "1y",
            "--out",
            str(tmp_path / "x.parquet"),
        ]
    )
    assert code == 2
    assert "Cannot read a saved model" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- durations
@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("365", 365.0),
        ("365d", 365.0),
        ("6m", 365.25 / 2),
        ("1y", 365.25),
        ("5y", 1826.25),
        ("2.5y", 2.5 * 365.25),
        ("26w", 182.0),
        (" 1Y ", 365.25),
        (".5y", 365.25 / 2),
        ("0", 0.0),
        (30, 30.0),
        (1.5, 1.5),
    ],
)
def test_parse_days(text: str | float, days: float) -> None:
    assert parse_days(text) == pytest.approx(days, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "Cannot read duration ''"),
        ("abc", "Cannot read duration 'abc'"),
        ("1yy", "Cannot read duration '1yy'"),
        ("y", "Cannot read duration 'y'"),
        ("1.2.3", "Cannot read duration '1.2.3'"),
        ("-1y", "Cannot read duration '-1y'"),
        ("1 year", "Cannot read duration '1 year'"),
        ("nan", "Cannot read duration 'nan'"),
        (-3, "duration must be a finite number of days >= 0; got -3"),
    ],
)
def test_parse_days_rejects(text: str | float, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_days(text)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_parse_days_rejects_non_finite_numbers(value: float) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_days(value)


def test_parse_days_list() -> None:
    assert parse_days_list("1y,3y,5y") == [365.25, 1095.75, 1826.25]
    assert parse_days_list("30, 6m ,") == [30.0, 182.625]
    with pytest.raises(ConfigError, match="--horizons is empty"):
        parse_days_list(" , ", name="--horizons")
    with pytest.raises(ConfigError, match="Cannot read --landmarks '2x'"):
        parse_days_list("1y,2x", name="--landmarks")
