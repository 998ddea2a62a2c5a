"""Experiment tracking with MLflow: one run per fit with config, dataset counts, code version, training curves,
evaluation metrics with CIs, the HTML report and the model as a pyfunc.

Nothing subject-level is logged: params, tags, metric and run names hold the config, counts per split, versions
and aggregate metrics only; the pyfunc's input example is made up (:func:`~._pyfunc.synthetic_events`). The
report's ``report.json`` (which holds every scored prediction) is *not* logged, only ``report.html`` and figures.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import re
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from migpt_traj.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from migpt_traj.api import TrajectoryModel
    from migpt_traj.data.cohort import Cohort
    from migpt_traj.evaluation.report import EvaluationReport

__all__ = ["TrackedRun", "default_tracking_uri", "log_fit", "log_report", "track_fit"]

_PACKAGES = ("migpt_traj", "torch", "lightning", "polars", "numpy", "mlflow", "optuna", "scikit-survival")
#: Report metric → MLflow metric stem (``td_auc.lm365.h1095.MEDS_DEATH``).
_METRIC_NAMES = {"auc": "td_auc"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")


@dataclass(frozen=True)
class TrackedRun:
    """Where a tracked fit went: ``run_id``, ``experiment_id``, ``model_uri`` (``models:/...`` of the pyfunc, or
    None) and ``registered_version`` (model registry version, or None)."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    model_uri: str | None = None
    registered_version: str | None = None


def default_tracking_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db`` (absolute; MLflow 3 no longer accepts a plain ``./mlruns`` file store)."""
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


@contextlib.contextmanager
def _tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block, then restore the previous URIs."""
    import mlflow

    before, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        mlflow.set_registry_uri(registry)


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if uri.startswith("sqlite:///"):  # keep artifacts next to the database, not in the working directory
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def _git_sha() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _clean(name: str) -> str:
    return _UNSAFE.sub("_", name)


def _days(value: float) -> str:
    """Whole days for metric names (365.25 → ``365``)."""
    return str(math.floor(value))


def _fit_params(model: TrajectoryModel, cohort: Cohort) -> dict[str, str]:
    params = {f"config.{k}": str(v) for k, v in model.config.to_dict().items()}
    params["data.name"] = str(cohort.metadata.get("dataset_name", "unnamed"))
    params["data.version"] = str(cohort.metadata.get("dataset_version", "unknown"))
    params["data.outcomes"] = ",".join(cohort.outcomes)
    for row in cohort.describe().select("split", "subjects", "events").iter_rows(named=True):
        params[f"data.{row['split']}.subjects"] = str(row["subjects"])
        params[f"data.{row['split']}.events"] = str(row["events"])
    return params


def _tags(model: TrajectoryModel) -> dict[str, str]:
    tags = {"git_sha": _git_sha(), "seed": str(model.config.seed), "package": "migpt_traj"}
    tags.update({f"version.{p}": _version(p) for p in _PACKAGES})
    return tags


def log_fit(client: MlflowClient, run_id: str, model: TrajectoryModel, cohort: Cohort) -> None:
    """Log a fitted model's config and dataset counts (params), code and package versions and seed (tags), and its
    per-epoch ``train_loss`` / ``val_loss`` (metrics, ``step`` = epoch) into an open run."""
    from mlflow.entities import Metric, Param, RunTag

    history = model.history
    metrics = [
        Metric(name, float(v), 0, epoch)
        for name in ("train_loss", "val_loss")
        for epoch, v in enumerate(history.get(name) or [])
    ]
    if history.get("best_val_loss") is not None:
        # best_epoch -1 = the stage-1 (wide) fit before any training epoch; MLflow steps start at 0.
        step = max(int(history["best_epoch"]), 0)
        metrics.append(Metric("best_val_loss", float(history["best_val_loss"]), 0, step))
    params = [Param(k, v) for k, v in _fit_params(model, cohort).items()]
    params.append(Param("fit.best_epoch", str(history.get("best_epoch"))))
    tags = [RunTag(k, v) for k, v in _tags(model).items()]
    for i in range(0, max(len(params), len(metrics)), 100):  # MLflow's batch limit is 100 params per call
        client.log_batch(run_id, metrics=metrics[i : i + 100], params=params[i : i + 100], tags=tags if i == 0 else [])


def log_report(client: MlflowClient, run_id: str, report: EvaluationReport, *, artifact_path: str = "report") -> None:
    """Log an evaluation's metrics and CIs, ``report.html`` and ``figures/*.png`` into an open run.

    Metric names are ``<metric>.lm<landmark>.h<horizon>.<event>`` in whole days (``td_auc.lm365.h1095.MEDS_DEATH``;
    ``auc`` is renamed ``td_auc``), with ``_lower`` / ``_upper`` for the CI bounds; baselines get a
    ``baseline.<name>.`` prefix. NaN cells (too few events, not estimable) are left out.
    """
    from mlflow.entities import Metric

    model_name = report.models[0]
    metrics: list[Metric] = []
    rows = report.metrics.select("model", "landmark_days", "horizon_days", "event", "metric", "value", "lower", "upper")
    for model, lm, h, event, metric, value, lower, upper in rows.iter_rows():
        prefix = "" if model == model_name else f"baseline.{model}."
        stem = _clean(f"{prefix}{_METRIC_NAMES.get(metric, metric)}.lm{_days(lm)}.h{_days(h)}.{event}")
        for suffix, v in (("", value), ("_lower", lower), ("_upper", upper)):
            if v is not None and math.isfinite(v):
                metrics.append(Metric(stem + suffix, float(v), 0, 0))
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        root = report.save(tmp)
        client.log_artifact(run_id, str(root / "report.html"), artifact_path)
        client.log_artifacts(run_id, str(root / "figures"), f"{artifact_path}/figures")


def _log_pyfunc(model: TrajectoryModel, *, register_as: str | None) -> tuple[str, str | None]:
    import mlflow
    from mlflow.models import infer_signature

    from migpt_traj.tracking._pyfunc import MODEL_ARTIFACT, TrajectoryPyfunc, predict_events, synthetic_events

    assert model.preprocessor is not None
    example = synthetic_events(model.preprocessor.codes, outcomes=model.outcomes)
    params = {"landmarks": [0.0], "horizons": [float(h) for h in model.config.horizons_days]}
    output = predict_events(model, example, params=params)
    example_pd = example.to_pandas()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Inferred schema contains integer column.*")
        signature = infer_signature(example_pd, output.to_pandas(), params=params)
    requirements = [f"{p}=={_version(p)}" for p in ("mlflow", "torch", "lightning", "polars", "safetensors")]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # subject_id is an integer on purpose; predict has no type hints on purpose (the signature is the schema)
        warnings.filterwarnings("ignore", message=r".*Inferred schema contains integer column.*")
        warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method.*")
        saved = model.save(Path(tmp) / "model")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TrajectoryPyfunc(),
            artifacts={MODEL_ARTIFACT: str(saved)},
            signature=signature,
            input_example=(example_pd, params),
            pip_requirements=requirements,
            registered_model_name=register_as,
        )
    version = info.registered_model_version
    return str(info.model_uri), None if version is None else str(version)


def track_fit(
    model: TrajectoryModel,
    cohort: Cohort,
    *,
    tracking_uri: str | None = None,
    experiment: str = "migpt_traj",
    run_name: str | None = None,
    evaluate: Callable[[TrajectoryModel, Cohort], EvaluationReport] | None = None,
    log_model: bool = True,
    register_as: str | None = None,
    alias: str = "champion",
    run_dir: str | Path | None = None,
) -> TrackedRun:
    """Fit ``model`` on ``cohort`` inside an MLflow run and log everything needed to reproduce and compare it.

    Logs the resolved config and dataset counts per split (params), git sha, package versions and seed (tags),
    per-epoch ``train_loss`` / ``val_loss`` (``step`` = epoch), then — when ``evaluate`` is given — the metrics of
    ``evaluate(model, cohort)`` with CIs and its HTML report and figures (see :func:`log_report`), and the model as
    a pyfunc (see :class:`~migpt_traj.tracking._pyfunc.TrajectoryPyfunc`), registered as ``register_as`` with
    alias ``alias`` when asked. Nothing subject-level is logged.

    Args:
        model: An unfitted (or to-be-refitted) model; fitted in place.
        cohort: Train split fits, tuning split early-stops (as :meth:`TrajectoryModel.fit`).
        tracking_uri: MLflow tracking URI (default :func:`default_tracking_uri`).
        experiment: Experiment name (created when absent).
        run_name: Run name; must not contain subject identifiers.
        evaluate: Called after the fit, e.g. ``lambda m, c: evaluate(m, c, landmarks=..., horizons=...)``.
        log_model: Log the pyfunc model.
        register_as: Registered model name (needs ``log_model``); None skips the registry.
        alias: Registry alias set on the new version.
        run_dir: Handed to :meth:`TrajectoryModel.fit` (checkpoints).

    Example:
        >>> run = track_fit(TrajectoryModel(max_epochs=2), cohort, tracking_uri="sqlite:////tmp/m.db")  # doctest: +SKIP
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if register_as is not None and not log_model:
        raise ConfigError("register_as needs log_model=True (the registry holds logged models).")
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = _experiment_id(client, experiment, uri)
    model_uri = version = None
    with _tracking(uri), mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        run_id = run.info.run_id
        model.fit(cohort, run_dir=run_dir)
        log_fit(client, run_id, model, cohort)
        if evaluate is not None:
            log_report(client, run_id, evaluate(model, cohort))
        if log_model:
            model_uri, version = _log_pyfunc(model, register_as=register_as)
    if register_as is not None and version is not None:
        client.set_registered_model_alias(register_as, alias, version)
    return TrackedRun(run_id, experiment_id, uri, model_uri, version)
