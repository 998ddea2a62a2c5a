"""tune: search spaces, the tuning-split objective, resumable studies, workers sharing one storage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from migpt_traj.api import TrajectoryModel
from migpt_traj.config import TrajectoryConfig
from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError
from migpt_traj.evaluation.metrics import cumulative_dynamic_auc
from migpt_traj.tracking.tuning import ParamSpec, bundled_search_space_path, load_search_space, tune, tuning_objective

optuna = pytest.importorskip("optuna")

BASE = TrajectoryConfig(
    d_model=16, n_layers=1, n_heads=2, max_epochs=1, batch_size=16, n_bins=4, use_notes=False, progress=False
)
SPACE: dict[str, Any] = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "d_model": {"type": "categorical", "choices": [8, 16]},
}
LANDMARKS = [0.0, 150.0]
HORIZONS = [180.0, 365.25]


@pytest.fixture(scope="module")
def cohort(tiny: Any) -> Cohort:
    return tiny.cohort(60)


def _tune(cohort: Cohort, storage: str, n_trials: int, **kwargs: Any) -> Any:
    return tune(
        cohort,
        search_space=SPACE,
        n_trials=n_trials,
        storage=storage,
        study_name=kwargs.pop("study_name", "tiny"),
        base_config=BASE,
        landmarks=LANDMARKS,
        horizons=HORIZONS,
        **kwargs,
    )


def test_bundled_search_space_reads_and_draws_valid_configs() -> None:
    specs = load_search_space(bundled_search_space_path())
    assert {s.name for s in specs} >= {"lr", "d_model", "n_layers", "dropout"}
    trial = optuna.trial.FixedTrial({"lr": 1e-3, "weight_decay": 1e-3, "dropout": 0.1, "d_model": 64, "n_layers": 2})
    drawn = {s.name: s.suggest(trial) for s in specs if s.name != "rank_weight"}
    TrajectoryConfig().replace(**drawn)  # every drawn combination is a valid config


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"lrr": {"type": "float", "low": 0.1, "high": 1.0}}, r"'lrr', which is no config field.*'lr'"),
        ({"lr": {"type": "uniform", "low": 0.1, "high": 1.0}}, r"type 'uniform'; valid types are"),
        ({"lr": {"type": "float", "low": 1.0, "high": 0.1}}, r"low < high; got low=1.0, high=0.1"),
        ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}, r"log-scaled, so low must be > 0"),
        ({"d_model": {"type": "categorical", "choices": []}}, r"non-empty list 'choices'"),
        ({"lr": {"type": "float", "low": 0.1, "hi": 1.0}}, r"unknown key 'hi'"),
        ({}, r"non-empty mapping"),
    ],
    ids=["unknown-field", "unknown-type", "low-above-high", "log-of-zero", "no-choices", "unknown-key", "empty"],
)
def test_bad_search_spaces_are_refused(space: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_search_space(space)


def test_param_spec_int_suggestion_respects_bounds() -> None:
    spec = ParamSpec("n_layers", "int", low=1, high=3)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = [spec.suggest(study.ask()) for _ in range(20)]
    assert set(values) <= {1, 2, 3} and len(set(values)) > 1


def test_objective_is_mean_td_auc_on_the_tuning_split(cohort: Cohort) -> None:
    model = TrajectoryModel(BASE).fit(cohort)
    got = tuning_objective(model, cohort, landmarks=LANDMARKS, horizons=HORIZONS)
    # independent recomputation, cell by cell
    code = {"MEDS_DEATH": 1, "TRANSPLANT": 2}
    risk = model.predict_risk(cohort, landmarks=LANDMARKS, horizons=HORIZONS, split="tuning")
    cells = []
    for lm in LANDMARKS:
        lab = cohort.labels(landmarks=[lm], split="tuning")
        train = cohort.labels(landmarks=[lm], split="train")
        for h in HORIZONS:
            r = risk.filter((pl.col("landmark_days") == lm) & (pl.col("horizon_days") == h))
            j = lab.join(r.filter(pl.col("event") == "MEDS_DEATH").select("subject_id", "risk"), on="subject_id")
            cells.append(
                cumulative_dynamic_auc(
                    j["duration_days"].to_numpy(),
                    j["event"].replace_strict(code, default=0, return_dtype=pl.Int64).to_numpy(),
                    j["risk"].to_numpy(),
                    h,
                    train_time=train["duration_days"].to_numpy(),
                    train_event=train["event"].replace_strict(code, default=0, return_dtype=pl.Int64).to_numpy(),
                )
            )
    assert got == pytest.approx(float(np.mean(cells)))
    ibs = tuning_objective(model, cohort, objective="ibs", landmarks=LANDMARKS, horizons=HORIZONS)
    assert 0.0 < ibs < 1.0


def test_two_trial_study_never_reads_held_out_and_resumes(
    cohort: Cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    seen: list[tuple[str, Any, set[int]]] = []  # (function, split argument, subjects returned)
    predict, labels = TrajectoryModel.predict_risk, Cohort.labels

    def spy_predict(self: TrajectoryModel, *args: Any, **kwargs: Any) -> pl.DataFrame:
        out = predict(self, *args, **kwargs)
        seen.append(("predict_risk", kwargs.get("split"), set(out["subject_id"].to_list())))
        return out

    def spy_labels(self: Cohort, **kwargs: Any) -> pl.DataFrame:
        out = labels(self, **kwargs)
        seen.append(("labels", kwargs.get("split"), set(out["subject_id"].to_list())))
        return out

    monkeypatch.setattr(TrajectoryModel, "predict_risk", spy_predict)
    monkeypatch.setattr(Cohort, "labels", spy_labels)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = _tune(cohort, storage, 2)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(0.0 <= t.value <= 1.0 for t in study.trials)
    # pruning is wired: each trial reported its epoch's tuning loss (val_loss) to Optuna
    assert all(list(t.intermediate_values) == [0] and t.intermediate_values[0] > 0 for t in study.trials)
    assert {t.params["d_model"] for t in study.trials} <= {8, 16}
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    held_out = set(cohort.subject_ids("held_out"))
    assert held_out and seen
    assert [(name, split) for name, split, ids in seen if ids & held_out or split == "held_out"] == []
    assert {split for name, split, _ in seen if name == "predict_risk"} == {"tuning"}
    # resume: the same study gets a third trial
    again = _tune(cohort, storage, 1)
    assert again._study_id == study._study_id
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 3


def test_existing_study_with_the_other_direction_is_refused(cohort: Cohort, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    with pytest.raises(ConfigError, match="is set to maximize, not minimize"):
        _tune(cohort, storage, 0, objective="ibs")
    with pytest.raises(ConfigError, match="Unknown objective 'auc'"):
        _tune(cohort, storage, 0, objective="auc")
    with pytest.raises(ConfigError, match=r"'ibs' objective integrates over two or more horizons; got \[180.0\]"):
        tune(cohort, search_space=SPACE, n_trials=0, storage=storage, objective="ibs", horizons=[180.0])


def test_invalid_drawn_config_fails_the_trial_not_the_study(cohort: Cohort, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = {"d_model": {"type": "categorical", "choices": [15]}}  # not a multiple of n_heads = 2
    study = tune(cohort, search_space=space, n_trials=1, storage=storage, base_config=BASE, horizons=HORIZONS)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def test_nested_mlflow_run_per_trial(cohort: Cohort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow_client = pytest.importorskip("mlflow.tracking")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = _tune(cohort, f"sqlite:///{tmp_path / 'optuna.db'}", 1, tracking_uri=uri, pruning=False)
    client = mlflow_client.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("migpt_traj_tuning")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and len(trials) == 1
    assert trials[0].data.tags["mlflow.parentRunId"] == parent[0].info.run_id
    assert trials[0].data.metrics["td_auc"] == pytest.approx(study.trials[0].value)
    assert float(trials[0].data.params["config.lr"]) == pytest.approx(study.trials[0].params["lr"])


@pytest.mark.slow  # two fresh interpreters import torch and lightning (~20 s on 2 cores)
def test_two_cli_workers_share_one_study(cohort: Cohort, tmp_path: Path) -> None:
    root = cohort.to_meds(tmp_path / "meds")
    (tmp_path / "base.yaml").write_text(
        "d_model: 16\nn_layers: 1\nn_heads: 2\nmax_epochs: 1\nbatch_size: 16\nn_bins: 4\nuse_notes: false\n"
        "progress: false\noutcomes: [MEDS_DEATH, TRANSPLANT]\n"
    )
    (tmp_path / "space.yaml").write_text("lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="shared", storage=storage, direction="maximize")  # the workers load it
    command = [
        sys.executable, "-m", "migpt_traj.cli", "tune", "--data", str(root), "--trials", "1", "--storage", storage,
        "--config", str(tmp_path / "base.yaml"), "--search-space", str(tmp_path / "space.yaml"),
        "--study-name", "shared", "--landmarks", "0,150", "--horizons", "180,365.25", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    workers = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    study = optuna.load_study(study_name="shared", storage=storage)
    assert len(study.trials) == 2
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert b"Study 'shared'" in outputs[0][0]
