"""Hyper-parameter tuning with Optuna: a YAML search space over :class:`TrajectoryConfig` fields, an objective
measured on the *tuning* split only (never ``held_out``), pruning on the tuning loss, resumable studies in an RDB
storage shared by any number of worker processes, and an optional nested MLflow run per trial."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import polars as pl
import yaml

from migpt_traj.config import TrajectoryConfig
from migpt_traj.errors import ConfigError, MigptTrajError, ValueRangeError, did_you_mean

if TYPE_CHECKING:
    import optuna

    from migpt_traj.api import TrajectoryModel
    from migpt_traj.data.cohort import Cohort

__all__ = ["ParamSpec", "bundled_search_space_path", "load_search_space", "tune", "tuning_objective"]

ParamType = Literal["float", "int", "categorical"]
Objective = Literal["td_auc", "ibs"]
_DIRECTIONS: dict[str, Literal["maximize", "minimize"]] = {"td_auc": "maximize", "ibs": "minimize"}
_KEYS = {"type", "low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class ParamSpec:
    """One tuned :class:`TrajectoryConfig` field: ``float`` / ``int`` in ``[low, high]`` (inclusive; ``log`` for a
    log-uniform draw, ``step`` for int grids) or ``categorical`` over ``choices``."""

    name: str
    type: ParamType
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draw this parameter for ``trial``."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=self.step or 1, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def bundled_search_space_path() -> Path:
    """Path of the search space shipped with the package (``configs/search_space.yaml``)."""
    from importlib.resources import files

    return Path(str(files("migpt_traj") / "configs" / "search_space.yaml"))


def _spec(name: str, raw: Any, source: str) -> ParamSpec:
    fields = {f.name for f in dataclasses.fields(TrajectoryConfig)}
    if name not in fields:
        raise ConfigError(
            f"Search space {source} tunes {name!r}, which is no config field.{did_you_mean(name, fields)}"
        )
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Search space {source}: {name!r} must map to {{type, low, high, ...}}, not {raw!r}.")
    unknown = set(raw) - _KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"Search space {source}: unknown key {key!r} for {name!r}.{did_you_mean(key, _KEYS)}")
    kind: Any = raw.get("type")
    if kind not in get_args(ParamType):
        raise ConfigError(
            f"Search space {source}: {name!r} has type {kind!r}; valid types are 'float', 'int', 'categorical'."
        )
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"Search space {source}: categorical {name!r} needs a non-empty list 'choices'.")
        return ParamSpec(name, kind, choices=tuple(choices))
    low: Any = raw.get("low")
    high: Any = raw.get("high")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise ConfigError(f"Search space {source}: {name!r} needs numbers low < high; got low={low!r}, high={high!r}.")
    log = bool(raw.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"Search space {source}: {name!r} is log-scaled, so low must be > 0; got {low!r}.")
    step = raw.get("step")
    return ParamSpec(name, kind, low=float(low), high=float(high), log=log, step=None if step is None else int(step))


def load_search_space(space: str | Path | Mapping[str, Any]) -> tuple[ParamSpec, ...]:
    """Read a search space: a YAML file or mapping ``field → {type: float|int|categorical, low, high, log, step,
    choices}``.

    Raises:
        ConfigError: an unreadable file, a field that is not in :class:`TrajectoryConfig`, an unknown type or key,
            ``low >= high``, a log scale with ``low <= 0``, or empty ``choices``.
    """
    source = "mapping"
    if isinstance(space, str | Path):
        source = repr(str(space))
        try:
            space = yaml.safe_load(Path(space).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"Cannot read search space file {source}: {err}") from err
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"Search space {source} must be a non-empty mapping of config fields.")
    return tuple(_spec(str(name), raw, source) for name, raw in space.items())


# ---------------------------------------------------------------------------------------------------- objective
def _check_horizons(objective: str, horizons: Sequence[float]) -> None:
    if objective == "ibs" and len(horizons) < 2:
        raise ConfigError(f"The 'ibs' objective integrates over two or more horizons; got {list(horizons)}.")


def _codes(events: pl.Series, outcomes: Sequence[str]) -> np.ndarray:
    mapping = {o: i + 1 for i, o in enumerate(outcomes)}
    return events.replace_strict(mapping, default=0, return_dtype=pl.Int64).to_numpy()


def tuning_objective(
    model: TrajectoryModel,
    cohort: Cohort,
    *,
    objective: Objective = "td_auc",
    landmarks: Sequence[float] = (0.0,),
    horizons: Sequence[float] | None = None,
) -> float:
    """Score a fitted model on the **tuning** split for the primary outcome (competing outcomes as such).

    ``td_auc``: mean IPCW cumulative/dynamic AUC over landmarks × horizons (higher = better). ``ibs``: mean over
    landmarks of the Brier score integrated over ``horizons`` (lower = better; needs two or more horizons). The
    censoring distribution comes from the train split at the same landmark. Cells that are not estimable (no case
    or no control, horizon beyond follow-up) are skipped.

    Raises:
        ValueRangeError: no landmark × horizon cell is estimable on the tuning split.
    """
    from migpt_traj.evaluation.metrics import cumulative_dynamic_auc, integrated_brier_score

    hs = [float(h) for h in (horizons if horizons is not None else model.config.horizons_days)]
    _check_horizons(objective, hs)
    risk = model.predict_risk(cohort, landmarks=landmarks, horizons=hs, split="tuning")
    names = {h: f"h{j}" for j, h in enumerate(hs)}
    risk = risk.filter(pl.col("event") == cohort.primary_outcome).with_columns(
        pl.col("horizon_days").replace_strict(names, return_dtype=pl.String)
    )
    scores: list[float] = []
    for lm in landmarks:
        tune_lab = cohort.labels(landmarks=[lm], split="tuning")
        train_lab = cohort.labels(landmarks=[lm], split="train")
        wide = (
            risk.filter(pl.col("landmark_days") == float(lm))
            .pivot(on="horizon_days", index="subject_id", values="risk")
            .join(tune_lab.select("subject_id", "duration_days", "event"), on="subject_id")
        )
        if wide.height == 0:
            continue
        time, event = wide["duration_days"].to_numpy(), _codes(wide["event"], cohort.outcomes)
        train_time, train_event = train_lab["duration_days"].to_numpy(), _codes(train_lab["event"], cohort.outcomes)
        matrix = wide.select(list(names.values())).to_numpy()
        try:
            if objective == "ibs":
                scores.append(
                    integrated_brier_score(
                        time, event, matrix, hs, cause=1, train_time=train_time, train_event=train_event
                    )
                )
            else:
                for j, h in enumerate(hs):
                    try:
                        scores.append(
                            cumulative_dynamic_auc(
                                time, event, matrix[:, j], h, cause=1, train_time=train_time, train_event=train_event
                            )
                        )
                    except MigptTrajError:
                        continue
        except MigptTrajError:
            continue
    scores = [s for s in scores if math.isfinite(s)]
    if not scores:
        raise ValueRangeError(
            f"The {objective!r} objective is not estimable on the tuning split at landmarks {list(landmarks)} and "
            f"horizons {hs} (no case or no control, or horizons beyond follow-up); choose shorter horizons."
        )
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------------- study
def _storage(url: str) -> optuna.storages.BaseStorage:
    import optuna

    if url.startswith("sqlite:"):  # wait for the other workers' writes instead of failing on a locked database
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def tune(
    cohort: Cohort,
    *,
    search_space: str | Path | Mapping[str, Any] | None = None,
    n_trials: int = 20,
    storage: str = "sqlite:///optuna.db",
    study_name: str = "migpt_traj",
    objective: Objective = "td_auc",
    direction: Literal["maximize", "minimize"] | None = None,
    base_config: TrajectoryConfig | None = None,
    landmarks: Sequence[float] = (0.0,),
    horizons: Sequence[float] | None = None,
    pruning: bool = True,
    tracking_uri: str | None = None,
    experiment: str = "migpt_traj_tuning",
    seed: int = 0,
) -> optuna.Study:
    """Run ``n_trials`` more trials of a (new or resumed) Optuna study and return it.

    Each trial draws the ``search_space`` fields over ``base_config``, fits a model (train split; tuning split for
    early stopping and, with ``pruning``, Optuna's median pruner on the per-epoch tuning loss ``val_loss``) and
    scores it with :func:`tuning_objective` on the tuning split. ``held_out`` is never read. The study lives in
    ``storage`` under ``study_name`` and is loaded when it exists, so an interrupted study resumes and several
    processes pointed at one storage share the work (each runs its own ``n_trials``). Trials whose drawn config is
    invalid (e.g. ``d_model`` not a multiple of ``n_heads``) are recorded as failed and the study goes on.

    Args:
        cohort: Cohort with train and tuning subjects.
        search_space: YAML file or mapping (see :func:`load_search_space`); default the bundled
            ``configs/search_space.yaml``.
        n_trials: Trials this call runs (>= 0).
        storage: Optuna RDB URL (``sqlite:///optuna.db`` is relative to the working directory).
        study_name: Study to create or resume.
        objective: ``td_auc`` (mean over landmarks × horizons) or ``ibs``.
        direction: Default ``maximize`` for ``td_auc``, ``minimize`` for ``ibs``.
        base_config: Fields not tuned (default :class:`TrajectoryConfig` defaults).
        landmarks: Days after time zero at which the objective is measured.
        horizons: Days; default ``base_config.horizons_days``.
        pruning: Prune unpromising trials on ``val_loss``.
        tracking_uri: When given, one MLflow run per call with a nested run per trial (params, curves, objective).
        experiment: MLflow experiment of those runs.
        seed: Seed of the TPE sampler (the model seed is ``base_config.seed``).

    Raises:
        ConfigError: bad search space, ``n_trials < 0``, an unknown objective, or an existing study with the other
            direction.

    Example:
        >>> study = tune(cohort, n_trials=20, storage="sqlite:///optuna.db")  # doctest: +SKIP
        >>> study.best_params  # doctest: +SKIP
    """
    import optuna

    if objective not in _DIRECTIONS:
        raise ConfigError(f"Unknown objective {objective!r}; valid objectives are 'td_auc' and 'ibs'.")
    if n_trials < 0:
        raise ConfigError(f"n_trials must be >= 0; got {n_trials}.")
    specs = load_search_space(search_space if search_space is not None else bundled_search_space_path())
    base = base_config or TrajectoryConfig()
    _check_horizons(objective, list(horizons) if horizons is not None else list(base.horizons_days))
    direction = direction or _DIRECTIONS[objective]
    study = optuna.create_study(
        storage=_storage(storage),
        study_name=study_name,
        direction=direction,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner() if pruning else optuna.pruners.NopPruner(),
    )
    existing = study.direction.name.lower()
    if existing != direction:
        raise ConfigError(
            f"Study {study_name!r} in {storage!r} is set to {existing}, not {direction}; use another name."
        )
    study.set_user_attr("objective", objective)
    tracker = _Tracker(tracking_uri, experiment, study_name) if tracking_uri is not None else None

    def run_trial(trial: optuna.Trial) -> float:
        from migpt_traj.api import TrajectoryModel

        drawn = {spec.name: spec.suggest(trial) for spec in specs}
        model = TrajectoryModel(base.replace(**drawn))  # ConfigError → failed trial (caught below)
        callbacks = []
        if pruning:
            from optuna_integration import PyTorchLightningPruningCallback

            callbacks.append(PyTorchLightningPruningCallback(trial, monitor="val_loss"))
        value: float | None = None
        try:
            model.fit(cohort, callbacks=callbacks)
            value = tuning_objective(model, cohort, objective=objective, landmarks=landmarks, horizons=horizons)
            return value
        finally:
            if tracker is not None:
                tracker.log_trial(trial, model, cohort, objective, value)

    try:
        study.optimize(run_trial, n_trials=n_trials, catch=(ConfigError,))
    finally:
        if tracker is not None:
            tracker.close()
    return study


class _Tracker:
    """One MLflow parent run per :func:`tune` call, a nested run per trial (no subject-level data)."""

    def __init__(self, uri: str, experiment: str, study_name: str) -> None:
        from mlflow.tracking import MlflowClient

        from migpt_traj.tracking.mlflow_tracking import _experiment_id

        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.experiment_id = _experiment_id(self.client, experiment, uri)
        self.parent = self.client.create_run(
            self.experiment_id, run_name=f"{study_name}-study", tags={"optuna.study_name": study_name}
        ).info.run_id

    def log_trial(
        self, trial: optuna.Trial, model: TrajectoryModel, cohort: Cohort, objective: str, value: float | None
    ) -> None:
        from migpt_traj.tracking.mlflow_tracking import log_fit

        tags = {
            "mlflow.parentRunId": self.parent,
            "optuna.study_name": trial.study.study_name,
            "optuna.trial_number": str(trial.number),
        }
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.number}", tags=tags)
        run_id = run.info.run_id
        if model.module is not None:
            log_fit(self.client, run_id, model, cohort)
        if value is not None:
            self.client.log_metric(run_id, objective, value)
        self.client.set_terminated(run_id, "FINISHED" if value is not None else "KILLED")

    def close(self) -> None:
        self.client.set_terminated(self.parent)
