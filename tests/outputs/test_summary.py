"""PatientState summaries: JSON round trip, attribution completeness and as-of, text, trends, risk trajectory, CLI,
plot, and the errors of a bad subject or prediction time."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from migpt_traj.api import TrajectoryModel
from migpt_traj.cli import main
from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError, ValueRangeError
from migpt_traj.outputs import PatientState
from migpt_traj.outputs.summary import NO_INTERVAL_NOTE

SMALL: dict[str, Any] = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "max_epochs": 1,
    "batch_size": 16,
    "n_bins": 4,
    "progress": False,
    "seed": 0,
}
SUBJECT = 30  # tiny.cohort(40, seed 0): censored after 1422 days, labs, CT studies, notes and a treatment
AT_DAYS = 750.0  # a CT study was taken 2.5 days earlier and becomes available 17.5 days later
HORIZONS = [365.25, 1095.75]


class FakeNotes:
    """The frozen note encoder's interface (identity, dim, encode) over the conftest's seeded hash embedder."""

    identity = "fake-notes-v1"

    def __init__(self, embed: Any, dim: int) -> None:
        self._embed, self.dim = embed, dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._embed(texts), dtype=np.float32)


@pytest.fixture(scope="module")
def cohort(tiny: Any) -> Cohort:
    # Images and notes become available 20 days after they are taken: the as-of rule bites.
    return tiny.cohort(40, images=True, notes=True, lag_days=20.0)


@pytest.fixture(scope="module")
def fitted(cohort: Cohort, tiny: Any) -> TrajectoryModel:
    model = TrajectoryModel(**SMALL)
    model._note_encoder = FakeNotes(tiny.note_embedder, tiny.note_dim)
    return model.fit(cohort)


@pytest.fixture(scope="module")
def no_forecast(fitted: TrajectoryModel) -> TrajectoryModel:
    """A shallow copy of the fitted model (same weights) with ``forecast`` hidden: the summary must work without
    one, whatever the class has."""
    model = copy.copy(fitted)
    model.forecast = None  # type: ignore[assignment,method-assign]
    return model


@pytest.fixture(scope="module")
def state(no_forecast: TrajectoryModel, cohort: Cohort) -> PatientState:
    return no_forecast.summarize(cohort, subject_id=SUBJECT, prediction_time=AT_DAYS, horizons=HORIZONS)


def _prediction_time(cohort: Cohort, days: float = AT_DAYS) -> dt.datetime:
    tz = cohort.subjects.filter(pl.col("subject_id") == SUBJECT)["time_zero"].item()
    return tz + dt.timedelta(microseconds=round(days * 86_400_000_000))


def _as_of(cohort: Cohort, t: dt.datetime) -> pl.DataFrame:
    avail = pl.coalesce("available_time", "time")
    return cohort.events.filter((pl.col("subject_id") == SUBJECT) & (pl.col("time").is_null() | (avail <= t)))


def test_json_round_trip_is_exact(state: PatientState) -> None:
    text = json.dumps(state.to_dict(), allow_nan=False)
    back = PatientState.from_dict(json.loads(text))
    assert back == state
    assert back.text == state.text
    assert json.loads(text)["kind"] == "model-based estimate"
    with pytest.raises(ConfigError, match="format_version 99"):
        PatientState.from_dict({**state.to_dict(), "format_version": 99})


def test_attributions_are_complete_and_match_the_predicted_risk(state: PatientState) -> None:
    a = state.attribution
    assert a.tokens, "the subject has values, images and notes"
    # f(x) is the log of the risk predict_risk gives at t (an independent code path: no gradients, batched CIF).
    assert a.log_risk == pytest.approx(np.log(state.risk(state.outcomes[0], HORIZONS[0])), abs=1e-5)
    delta = a.log_risk - a.baseline_log_risk
    assert abs(delta) > 1e-3, "a trivial target would make completeness vacuous"
    assert abs(a.total - delta) <= 1e-2 * abs(delta)
    assert a.completeness_gap == pytest.approx(delta - a.total)
    kinds = {t.kind for t in a.tokens}
    assert {"measurement", "image", "note"} <= kinds


def test_attribution_error_falls_as_the_midpoint_rule_says(no_forecast: TrajectoryModel, cohort: Cohort) -> None:
    gaps = [
        no_forecast.summarize(cohort, subject_id=SUBJECT, prediction_time=AT_DAYS, steps=k).attribution.completeness_gap
        for k in (4, 8)
    ]
    # Midpoint Riemann sums of a smooth path integral: error ∝ 1 / steps², so halving the step divides it by 4
    # (a left or right Riemann sum, or gradients at the wrong points, would give 2 or no convergence at all).
    assert abs(gaps[0]) > 1e-6
    assert 3.0 < gaps[0] / gaps[1] < 5.0


def test_attributions_cover_exactly_the_inputs_available_at_the_prediction_time(
    state: PatientState, cohort: Cohort
) -> None:
    t = state.prediction_time
    visible = _as_of(cohort, t)
    with_input = visible.filter(
        pl.col("numeric_value").is_not_null()
        | pl.col("embedding").is_not_null()
        | (pl.col("code").str.starts_with("NOTE//") & pl.col("text_value").is_not_null())
    ).filter(~pl.col("code").is_in(["MEDS_BIRTH", "MEDS_DEATH", "TRANSPLANT", "END_OF_FOLLOWUP"]))
    assert len(state.attribution.tokens) == with_input.height
    assert all(tok.available_time is None or tok.available_time <= t for tok in state.attribution.tokens)
    future = cohort.events.filter(
        (pl.col("subject_id") == SUBJECT) & (pl.coalesce("available_time", "time") > t) & pl.col("time").is_not_null()
    )
    assert future.height > 0
    # Studies taken before t but available only after it are not inputs either.
    late = future.filter(pl.col("time") <= t)
    assert late.height > 0
    attributed = {(tok.code, tok.time) for tok in state.attribution.tokens}
    assert not attributed & set(zip(future["code"], future["time"], strict=True))


def test_long_records_attribute_only_the_tokens_the_model_kept(
    no_forecast: TrajectoryModel, cohort: Cohort, state: PatientState
) -> None:
    # max_len 12: the start token, the static SEX row (position 1, no value: not attributed), then only the 10
    # newest timed inputs (the tensorizer drops the oldest timed ones).
    short = copy.copy(no_forecast)
    short.config = no_forecast.config.replace(max_len=12)
    s = short.summarize(cohort, subject_id=SUBJECT, prediction_time=AT_DAYS, horizons=HORIZONS)
    assert [t.position for t in s.attribution.tokens] == list(range(2, 12))
    assert min(t.time for t in s.attribution.tokens if t.time) > min(t.time for t in state.attribution.tokens if t.time)
    delta = s.attribution.log_risk - s.attribution.baseline_log_risk
    assert abs(s.attribution.completeness_gap) <= 1e-2 * abs(delta)


def test_future_events_change_nothing(no_forecast: TrajectoryModel, cohort: Cohort, state: PatientState) -> None:
    t = state.prediction_time
    future = (pl.col("subject_id") == SUBJECT) & (pl.coalesce("available_time", "time") > t)
    changed = cohort.events.with_columns(
        numeric_value=pl.when(future & pl.col("code").str.starts_with("LAB//"))
        .then(pl.col("numeric_value") * 10)
        .otherwise(pl.col("numeric_value")),
        text_value=pl.when(future & pl.col("code").str.starts_with("NOTE//"))
        .then(pl.lit("very much worse"))
        .otherwise(pl.col("text_value")),
    )
    other = no_forecast.summarize(cohort.with_events(changed), subject_id=SUBJECT, prediction_time=t, horizons=HORIZONS)
    assert other == state


def test_text_is_deterministic_and_states_the_risks(
    no_forecast: TrajectoryModel, cohort: Cohort, state: PatientState
) -> None:
    # A second call, with the prediction time as a datetime instead of days after time zero: the same state.
    again = no_forecast.summarize(
        cohort, subject_id=SUBJECT, prediction_time=_prediction_time(cohort), horizons=HORIZONS
    )
    assert again == state
    assert again.text == state.text
    assert state.days_since_time_zero == pytest.approx(AT_DAYS)
    assert state.text.startswith(f"Model-based estimate for subject {SUBJECT} as of {_prediction_time(cohort).date()}")
    for r in state.risks:
        assert f"{r.event} {100 * r.risk:.1f} %" in state.text
    assert "No intervals" in state.text
    assert all(r.lower is None and r.upper is None for r in state.risks)
    assert state.interval_note == NO_INTERVAL_NOTE
    assert "## Risks" in state.to_markdown()


def test_trend_and_latest_value_match_numpy_polyfit(state: PatientState, cohort: Cohort) -> None:
    t = state.prediction_time
    labs = _as_of(cohort, t).filter(pl.col("code").is_in(["LAB//a", "LAB//b", "SIGN//x"]))
    assert [lab.code for lab in state.labs] == ["LAB//a", "LAB//b", "SIGN//x"]
    for lab in state.labs:
        rows = labs.filter(pl.col("code") == lab.code).sort("time")
        assert lab.latest_value == pytest.approx(float(rows["numeric_value"][-1]))
        assert lab.latest_time == rows["time"][-1]
        assert lab.n_measurements == rows.height
        window = rows.filter(pl.col("time") > t - dt.timedelta(days=365.25))
        years = np.asarray([(x - t) / dt.timedelta(days=365.25) for x in window["time"]])
        values = window["numeric_value"].cast(pl.Float64).to_numpy()
        assert lab.trend_points == window.height >= 2
        assert lab.trend_per_year == pytest.approx(np.polyfit(years, values, 1)[0], rel=1e-9, abs=1e-12)
    assert state.labs[0].trend_per_year is not None and state.labs[0].trend_per_year > 0  # LAB//a drifts upwards


def test_risk_trajectory_ends_at_the_current_risk(
    no_forecast: TrajectoryModel, cohort: Cohort, state: PatientState
) -> None:
    t = state.prediction_time
    now = no_forecast.predict_risk(
        cohort,
        horizons=HORIZONS,
        prediction_times=pl.DataFrame({"subject_id": [SUBJECT], "prediction_time": [t]}),
    )
    last = [p for p in state.trajectory if p.time == t]
    assert len(last) == len(state.outcomes) * len(HORIZONS)
    for p in last:
        ref = now.filter((pl.col("event") == p.event) & (pl.col("horizon_days") == p.horizon_days))["risk"].item()
        assert p.risk == pytest.approx(ref, rel=1e-6)
    times = sorted({p.time for p in state.trajectory})
    assert times[0] == state.time_zero and times[-1] == t
    # One point per distinct availability time of an input event since time zero, plus t.
    inputs = _as_of(cohort, t).filter(
        pl.col("time").is_not_null() & ~pl.col("code").is_in(["MEDS_BIRTH", "MEDS_DEATH", "TRANSPLANT"])
    )
    expected = {*inputs.select(pl.coalesce("available_time", "time")).to_series().to_list(), t}
    assert set(times) == expected


def test_imaging_change_is_the_distance_between_consecutive_studies(state: PatientState, cohort: Cohort) -> None:
    studies = _as_of(cohort, state.prediction_time).filter(pl.col("code") == "IMAGE//ct").sort("time")
    emb = np.asarray(studies["embedding"].to_list(), dtype=np.float64)
    assert len(state.imaging_changes) == studies.height - 1 >= 1
    for i, change in enumerate(state.imaging_changes):
        a, b = emb[i], emb[i + 1]
        assert change.euclidean == pytest.approx(float(np.linalg.norm(b - a)))
        cos = 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        assert change.cosine == pytest.approx(float(cos))
        assert change.to_time == studies["time"][i + 1]


def test_forecasts_are_used_when_the_model_has_them(
    fitted: TrajectoryModel, cohort: Cohort, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def forecast(cohort: Cohort, *, at: list[float], prediction_times: pl.DataFrame, **kw: Any) -> pl.DataFrame:
        calls.append({"at": at, **kw})
        t = prediction_times["prediction_time"][0]
        rows = [
            {"code": c, "target_days": d, "mean": 1.0 + d, "lower": 0.5, "upper": 2.0 + d, "dim": None}
            for c in ("LAB//a", "LAB//b")
            for d in at
        ] + [{"code": "IMAGE//ct", "target_days": at[0], "mean": 0.0, "lower": -1.0, "upper": 1.0, "dim": 0}]
        return pl.DataFrame(rows).with_columns(
            subject_id=pl.lit(SUBJECT), prediction_time=pl.lit(t), landmark_days=pl.lit(None, dtype=pl.Float64)
        )

    monkeypatch.setattr(fitted, "forecast", forecast, raising=False)
    s = fitted.summarize(cohort, subject_id=SUBJECT, prediction_time=AT_DAYS, forecast_days=[30.0, 90.0])
    assert calls and calls[0]["at"] == [30.0, 90.0] and calls[0]["level"] == 0.8
    by_code = {lab.code: lab.forecast for lab in s.labs}
    assert by_code["SIGN//x"] is None
    assert by_code["LAB//a"] is not None and [f.target_days for f in by_code["LAB//a"]] == [30.0, 90.0]
    assert by_code["LAB//a"][1].mean == 91.0
    assert s.forecast_level == 0.8
    assert "forecast in 90 days 91" in s.text
    assert PatientState.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_the_model_forecast_is_attached_to_the_labs(fitted: TrajectoryModel, cohort: Cohort) -> None:
    if not callable(getattr(fitted, "forecast", None)):
        pytest.skip("this TrajectoryModel has no forecast method")
    s = fitted.summarize(cohort, subject_id=SUBJECT, prediction_time=AT_DAYS, forecast_days=[90.0, 365.25])
    t = pl.DataFrame({"subject_id": [SUBJECT], "prediction_time": [s.prediction_time]})
    ref = fitted.forecast(cohort, at=[90.0, 365.25], prediction_times=t, level=0.8)
    if "dim" in ref.columns:
        ref = ref.filter(pl.col("dim").is_null())
    for lab in s.labs:
        rows = ref.filter(pl.col("code") == lab.code).sort("target_days")
        assert lab.forecast is not None
        assert [f.target_days for f in lab.forecast] == rows["target_days"].to_list()
        assert [f.mean for f in lab.forecast] == pytest.approx(rows["mean"].to_list())
        assert [f.upper for f in lab.forecast] == pytest.approx(rows["upper"].to_list())
    assert s.forecast_level == 0.8


def test_without_forecast_fields_are_none(state: PatientState) -> None:
    assert state.forecast_level is None
    assert all(lab.forecast is None for lab in state.labs)
    assert state.forecast_note.startswith("No forecasts")


def test_plot_returns_a_figure_and_writes_a_png(state: PatientState, tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = state.plot(tmp_path / "timeline.png")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(state.labs) + 2  # one panel per lab, the event strip, the risk curve
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bare = dataclasses.replace(state, labs=(), timeline=(), imaging_changes=())
    assert len(bare.plot().axes) == 2
    assert "No lab measured" in bare.text


def test_train_subjects_are_called_in_sample(no_forecast: TrajectoryModel, cohort: Cohort, state: PatientState) -> None:
    assert state.split == "held_out" and "in-sample" not in state.text
    train = no_forecast.summarize(cohort, subject_id=21, prediction_time=400.0)  # subject 21: train, censored
    assert train.split == "train"
    assert "trained on this subject (train split): an in-sample estimate" in train.text


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"subject_id": 9999}, ConfigError, r"Subject 9999 is not in the cohort", id="unknown-subject"),
        pytest.param({"prediction_time": -1.0}, ValueRangeError, r"before time zero; valid", id="before-time-zero"),
        pytest.param(
            {"prediction_time": 1500.0}, ValueRangeError, r"at or after the end of follow-up", id="after-follow-up"
        ),
        pytest.param(
            {"subject_id": 3, "prediction_time": 40.0},
            ValueRangeError,
            r"after the outcome MEDS_DEATH",
            id="after-death",
        ),
        pytest.param({"prediction_time": "2y"}, ConfigError, r"datetime or days after time zero", id="string-time"),
        pytest.param(
            {"prediction_time": dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)},
            ConfigError,
            r"has a time zone",
            id="aware-time",
        ),
        pytest.param({"horizons": [0.0, 365.25]}, ConfigError, r"Horizons must be > 0 days", id="zero-horizon"),
    ],
)
def test_errors_name_the_subject_and_the_valid_range(
    no_forecast: TrajectoryModel, cohort: Cohort, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"subject_id": SUBJECT, "prediction_time": AT_DAYS, **kwargs}
    with pytest.raises(error, match=match):
        no_forecast.summarize(cohort, **args)


def test_cli_writes_json_markdown_and_png(
    fitted: TrajectoryModel, cohort: Cohort, tiny: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import migpt_traj.encoders.notes as notes

    # The saved model reloads its note encoder by identity: serve the same fake one.
    monkeypatch.setattr(notes, "NoteEncoder", lambda config: FakeNotes(tiny.note_embedder, tiny.note_dim))
    fitted.save(tmp_path / "run")
    root = cohort.to_meds(tmp_path / "meds")
    out = tmp_path / "summary"
    code = main(
        [
            "summarize",
            "--model",
            str(tmp_path / "run"),
            "--data",
            str(root),
            "--subject",
            str(SUBJECT),
            "--at",
            f"{AT_DAYS}d",
            "--horizons",
            "1y,3y",
            "--outcomes",
            "MEDS_DEATH,TRANSPLANT",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"summary.json", "summary.md", "timeline.png"}
    written = PatientState.from_dict(json.loads((out / "summary.json").read_text()))
    assert written.subject_id == SUBJECT and written.horizons_days == tuple(HORIZONS)
    assert written.days_since_time_zero == pytest.approx(AT_DAYS)
    assert (out / "summary.md").read_text().startswith(f"# Patient state: subject {SUBJECT}")
    run, bad_out = str(tmp_path / "run"), str(tmp_path / "bad")
    bad = main(["summarize", "--model", run, "--data", str(root), "--subject", "9999", "--at", "1y", "--out", bad_out])
    assert bad == 2


@pytest.mark.slow
def test_pbc2_summaries_of_held_out_subjects_at_two_years() -> None:
    from migpt_traj.datasets import load_pbc2

    pbc2 = load_pbc2()
    model = TrajectoryModel(**{**SMALL, "use_notes": False}).fit(pbc2)
    at_risk = pbc2.labels(landmarks=[730.5], split="held_out")["subject_id"].to_list()
    trends = 0
    for sid in at_risk[:6]:
        s = model.summarize(pbc2, subject_id=sid, prediction_time=730.5)
        assert PatientState.from_dict(json.loads(json.dumps(s.to_dict(), allow_nan=False))) == s
        delta = s.attribution.log_risk - s.attribution.baseline_log_risk
        assert abs(s.attribution.completeness_gap) <= 1e-2 * abs(delta) + 1e-6
        assert s.attribution.log_risk == pytest.approx(np.log(s.risk()), abs=1e-5)
        for lab in s.labs:
            if lab.trend_per_year is None:
                continue
            window = [
                (x, v)
                for x, v in zip(lab.times, lab.values, strict=True)
                if x > s.prediction_time - dt.timedelta(days=365.25)
            ]
            years = [(x - s.prediction_time) / dt.timedelta(days=365.25) for x, _ in window]
            assert lab.trend_per_year == pytest.approx(np.polyfit(years, [v for _, v in window], 1)[0], rel=1e-9)
            trends += 1
        assert s.text.startswith(f"Model-based estimate for subject {sid} as of ")
    assert trends > 0
