"""``TrajectoryModel``: the notebook-facing facade (fit, predict risk and survival, save, load)."""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl_light
import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from migpt_traj._progress import progress_enabled, track
from migpt_traj.config import TrajectoryConfig
from migpt_traj.data.cohort import Cohort, Split
from migpt_traj.data.datamodule import TokenDataset, TrajectoryDataModule, collate_tokens
from migpt_traj.data.preprocess import Preprocessor
from migpt_traj.data.tensorize import TokenTable, tensorize, training_queries
from migpt_traj.errors import ConfigError, ModelStateError, OutcomeError, SchemaError
from migpt_traj.model.module import TrajectoryModule, bin_edges, initial_log_hazard
from migpt_traj.model.survival import cumulative_incidence, survival_function

if TYPE_CHECKING:
    from migpt_traj.outputs.summary import PatientState

__all__ = ["TrajectoryModel"]

_FORMAT_VERSION = 3  # 2: wide-path standardisation buffers; 3: forecast head


@contextlib.contextmanager
def _quiet_lightning(progress: bool) -> Iterator[None]:
    """Silence Lightning's banner lines and third-party deprecation chatter during one fit, then restore them.

    Scoped to the call: logger levels are put back and warning filters are restored on exit (no global state).
    """
    names = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    if not progress:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning\..*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class _BestWeights(pl_light.Callback):
    """Keeps the weights of the epoch with the lowest tuning loss (restored after fit).

    With a ``directory``, each new best is also written there as ``best.safetensors`` (checkpointing without
    pickle: Lightning's own ``.ckpt`` files are torch.save archives), by global rank 0 only. Under DDP every rank
    sees the same ``val_loss`` (the tuning split is not sharded, see ``TrajectoryDataModule``) and holds the same
    weights, so every rank keeps the same best epoch and rank 0 (the calling process) returns its weights.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.best = float("inf")
        self.state: dict[str, torch.Tensor] | None = None
        self.epoch = -1
        self.directory = directory

    def seed(self, loss: float, module: pl_light.LightningModule) -> None:
        """Start from weights fitted before training (epoch -1) and their tuning loss."""
        self.best, self.epoch, self.state = loss, -1, copy.deepcopy(module.state_dict())

    def on_validation_epoch_end(self, trainer: pl_light.Trainer, module: pl_light.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and float(loss) < self.best:
            self.best = float(loss)
            self.epoch = trainer.current_epoch
            self.state = copy.deepcopy(module.state_dict())  # every rank: each returns the best weights
            if self.directory is not None and trainer.is_global_zero:  # one writer under DDP
                self.directory.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous() for k, v in self.state.items()}, str(self.directory / "best.safetensors"))


def _measurement_code_ids(pre: Preprocessor, cohort: Cohort) -> list[int]:
    """Vocabulary ids of the numeric measurement codes (not treatments, images or notes): the forecast channels."""
    conv = cohort.conventions
    other = (conv.treatment_prefix, conv.image_prefix, conv.note_prefix)
    return [i for i, code in enumerate(pre.codes) if code in pre.quantiles and not code.startswith(other)]


def _sequential_batches(table: TokenTable, *, batch_size: int = 256) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of ``table`` in length order (least padding), for passes that need no shuffling."""
    dataset = TokenDataset(table)
    order = np.argsort(table.lengths, kind="stable")
    for i in range(0, order.size, batch_size):
        yield collate_tokens(dataset, order[i : i + batch_size].tolist())


class _LossCurves(pl_light.Callback):
    """Records the epoch-mean train and tuning losses (``train_loss``, ``val_loss``) after each epoch."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []

    def on_train_epoch_end(self, trainer: pl_light.Trainer, module: pl_light.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None:
            self.train.append(float(loss))

    def on_validation_epoch_end(self, trainer: pl_light.Trainer, module: pl_light.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val_loss")
        if loss is not None and not trainer.sanity_checking:
            self.val.append(float(loss))


class TrajectoryModel:
    """Time-aware multimodal transformer with a competing-risk survival head.

    Risk = cumulative incidence of each outcome in ``(t, t + h]`` given event-free at the prediction time ``t``
    (higher = worse); horizons in days.

    Example:
        >>> import migpt_traj as mt  # doctest: +SKIP
        >>> cohort = mt.datasets.load_pbc2()  # doctest: +SKIP
        >>> model = mt.TrajectoryModel(max_epochs=5, seed=0).fit(cohort)  # doctest: +SKIP
        >>> model.predict_risk(cohort, landmarks=[365], horizons=[365], split="held_out")  # doctest: +SKIP
    """

    def __init__(self, config: TrajectoryConfig | None = None, **overrides: Any) -> None:
        base = config or TrajectoryConfig()
        self.config = base.replace(**overrides) if overrides else base
        self.preprocessor: Preprocessor | None = None
        self.module: TrajectoryModule | None = None
        self.outcomes: tuple[str, ...] = ()
        self.note_identity: str | None = None
        self.note_dim = 0
        self.history: dict[str, Any] = {}
        self._note_encoder: Any = None
        self.image_embedder: Any = None  # migpt_traj.imaging.ImageEmbedder when volumes are embedded here
        self._embedded: tuple[Cohort, Cohort] | None = None  # (input cohort, the same with embeddings)

    @classmethod
    def from_config(cls, path: str | Path, **overrides: Any) -> TrajectoryModel:
        return cls(TrajectoryConfig.from_yaml(path), **overrides)

    # ------------------------------------------------------------------ notes
    def _note_embedder(self, cohort: Cohort | None) -> Any:
        if not self.config.use_notes:
            return None
        if cohort is not None and self.note_identity is None:
            has_notes = cohort.events.filter(pl.col("code").str.starts_with(cohort.conventions.note_prefix)).height
            if not has_notes:
                return None
        if self._note_encoder is None:
            from migpt_traj.encoders.notes import NoteEncoder, NoteEncoderConfig

            self._note_encoder = NoteEncoder(
                NoteEncoderConfig(
                    model=self.config.note_model,
                    cache_dir=self.config.note_cache_dir,
                    progress=None if self.config.progress else False,
                )
            )
        return self._note_encoder

    # ------------------------------------------------------------------ images
    def _with_image_embeddings(self, cohort: Cohort, *, fit: bool = False) -> Cohort:
        """The cohort with its ``image_path`` studies embedded by the configured encoder (unchanged when the
        encoder is ``precomputed`` or images are off). With ``fit``, the encoder is fitted on train subjects only.
        The last input and result are remembered, so one cohort is embedded (and warned about) once."""
        cfg = self.config
        if not cfg.use_images or cfg.imaging.encoder == "precomputed":
            return cohort
        if not fit and self._embedded is not None and self._embedded[0] is cohort:
            return self._embedded[1]
        from migpt_traj.imaging import ImageEmbedder

        if fit:
            train_ids = cohort.splits.filter(pl.col("split") == "train")["subject_id"].to_list()
            self.image_embedder = ImageEmbedder(cfg.imaging).fit(cohort, train_subjects=train_ids)
        if self.image_embedder is None:
            raise ModelStateError("This model has no fitted image encoder; fit it or load a saved model.")
        embedded, report = self.image_embedder.transform(cohort)
        if fit:
            self.history["imaging"] = report.counts()
        self._embedded = (cohort, embedded)
        return embedded

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        cohort: Cohort,
        *,
        run_dir: str | Path | None = None,
        callbacks: Sequence[pl_light.Callback] = (),
        logger: Any = False,
    ) -> TrajectoryModel:
        """Fit on the train split, early-stopping on the tuning split's likelihood.

        Stage 1 fits the wide path and the forecast head's linear part in closed form or by L-BFGS (ridge
        penalties chosen on the tuning split); stage 2 trains the transformer on top by minibatch AdamW, and the
        best tuning loss wins (``best_epoch == -1``: stage 1 as is). Nothing from tuning or held-out subjects
        reaches the fitted statistics (vocabulary, normalisers, time bins, weights); tuning subjects only pick
        penalties and the epoch. ``callbacks`` (e.g. a pruning callback on ``val_loss``) and ``logger`` (a
        Lightning logger, default none) are handed to the Trainer. ``history`` records ``train_loss`` and
        ``val_loss`` per epoch: the epoch-mean survival negative log-likelihood per query plus ``forecast_weight``
        times the forecast negative log-likelihood.
        """
        cfg = self.config
        if cfg.outcomes is not None and tuple(cfg.outcomes) != tuple(cohort.outcomes):
            raise OutcomeError(
                f"Config outcomes {list(cfg.outcomes)} differ from the cohort's {list(cohort.outcomes)}; build the "
                f"cohort with outcomes={list(cfg.outcomes)}."
            )
        pl_light.seed_everything(cfg.seed, workers=True, verbose=False)
        self.history = {}
        cohort = self._with_image_embeddings(cohort, fit=True)
        self.outcomes = tuple(cohort.outcomes)
        pre = Preprocessor.fit(cohort, min_code_count=cfg.min_code_count)
        if not cfg.use_images:
            pre.image_dim, pre.image_mean, pre.image_std = 0, [], []
        self.preprocessor = pre
        embedder = self._note_embedder(cohort)
        if embedder is not None:
            self.note_identity = embedder.identity
            self.note_dim = embedder.dim
        tables = {}
        quiet = None if cfg.progress else False
        for split in track(("train", "tuning"), desc="tensorizing", unit="split", enabled=quiet, leave=False):
            samples, queries = training_queries(
                cohort, split=split, extra_per_subject=cfg.extra_queries_per_subject, seed=cfg.seed
            )
            tables[split] = self._tensorize(cohort, samples, queries=queries)
        train = tables["train"]
        labelled = train.q_cause >= 0
        if not (train.q_cause[labelled] > 0).any():
            raise OutcomeError("The train split has no outcome events after any prediction time; nothing to learn.")
        edges = bin_edges(train.q_duration[labelled], train.q_cause[labelled], n_bins=cfg.n_bins)
        init = initial_log_hazard(train.q_duration[labelled], train.q_cause[labelled], edges, len(self.outcomes))
        self.module = TrajectoryModule(
            vocab_size=len(pre.codes),
            n_causes=len(self.outcomes),
            edges=edges.tolist(),
            init_log_hazard=init.tolist(),
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            dropout=cfg.dropout,
            image_dim=pre.image_dim,
            note_dim=self.note_dim,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            rank_weight=cfg.rank_weight,
            rank_sigma=cfg.rank_sigma,
            forecast_code_ids=_measurement_code_ids(pre, cohort),
            forecast_weight=cfg.forecast_weight,
            forecast_horizon_days=cfg.forecast_horizon_days,
            forecast_targets_per_query=cfg.forecast_targets_per_query,
        )
        data = TrajectoryDataModule(train, tables["tuning"], batch_size=cfg.batch_size, seed=cfg.seed)
        best = _BestWeights(Path(run_dir) / "checkpoints" if run_dir is not None else None)
        # Stage 1: the wide (landmark-Cox-like) model fitted to convergence; the transformer then trains on top and
        # early stopping may keep the stage-1 model itself ("best_epoch" -1) when the deep part never helps.
        tuning_table = tables["tuning"] if data.tuning_set is not None else None
        penalty = self.module.fit_wide(
            _sequential_batches(train),
            _sequential_batches(tuning_table) if tuning_table is not None else None,
            n_queries=int(labelled.sum()),
            seed=cfg.seed,
        )
        forecast_fit = self.module.fit_forecast(
            _sequential_batches(train),
            _sequential_batches(tuning_table) if tuning_table is not None else None,
            seed=cfg.seed,
        )
        if tuning_table is not None:
            best.seed(self._mean_loss(tuning_table), self.module)
            self.module.train()
        curves = _LossCurves()
        all_callbacks: list[pl_light.Callback] = [best, curves, *callbacks]
        has_tuning = data.tuning_set is not None
        if has_tuning:
            all_callbacks.append(pl_light.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience))
        show = progress_enabled(None if cfg.progress else False)
        processes = cfg.devices * cfg.num_nodes
        # "auto" with several processes would pick ddp_fork in notebooks (children hold the best weights): use ddp.
        strategy = "ddp" if cfg.strategy == "auto" and processes > 1 else cfg.strategy
        with tempfile.TemporaryDirectory() as tmp, _quiet_lightning(show):
            root = Path(run_dir) if run_dir is not None else Path(tmp)
            trainer = pl_light.Trainer(
                max_epochs=cfg.max_epochs,
                accelerator=cfg.accelerator,
                devices=cfg.devices,
                num_nodes=cfg.num_nodes,
                strategy=strategy,
                use_distributed_sampler=False,  # the DataModule shards its length-bucketed batches itself
                deterministic=cfg.deterministic,
                enable_progress_bar=show,
                enable_model_summary=False,
                logger=logger,
                enable_checkpointing=False,
                callbacks=all_callbacks,
                gradient_clip_val=1.0,
                default_root_dir=str(root),
                num_sanity_val_steps=0,
            )
            trainer.fit(self.module, datamodule=data)
        if best.state is not None:
            self.module.load_state_dict(best.state)
        self.module.eval()
        self.history = {
            **self.history,
            "best_epoch": best.epoch,
            "best_val_loss": best.best if best.state is not None else None,
            "epochs_run": trainer.current_epoch,
            "train_samples": train.n_samples,
            "train_queries": int(labelled.sum()),
            "wide_penalty": penalty,
            "forecast_penalties": [p if np.isfinite(p) else None for p in forecast_fit["penalties"]],
            "train_loss": curves.train,
            "val_loss": curves.val,
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
        }
        return self

    def _tensorize(self, cohort: Cohort, samples: pl.DataFrame, *, queries: pl.DataFrame | None = None) -> TokenTable:
        assert self.preprocessor is not None
        cohort = self._with_image_embeddings(cohort)
        embedder = self._note_embedder(cohort) if self.note_identity is not None else None
        if embedder is not None and embedder.identity != self.note_identity:
            raise ConfigError(
                f"The note encoder {self.config.note_model!r} has identity {embedder.identity}, but this model was "
                f"trained with {self.note_identity}; use the same encoder (model files, pooling, max_length)."
            )
        dim = self.preprocessor.image_dim
        if dim and "embedding" in cohort.events.columns:
            lengths = cohort.events.select(pl.col("embedding").list.len().drop_nulls().unique())["embedding"]
            odd = [int(n) for n in lengths.to_list() if int(n) != dim]
            if odd:
                raise SchemaError(
                    f"Column 'embedding' has vectors of length {odd[0]}; this model was trained on length {dim}."
                )
        return tensorize(
            cohort,
            samples,
            self.preprocessor,
            queries=queries,
            max_len=self.config.max_len,
            note_embedder=embedder.encode if embedder is not None else None,
            note_dim=self.note_dim,
        )

    # ------------------------------------------------------------------ predict
    def _require_fit(self) -> TrajectoryModule:
        if self.module is None or self.preprocessor is None:
            raise ModelStateError("This TrajectoryModel is not fitted; call fit(cohort) or TrajectoryModel.load(path).")
        return self.module

    def _prediction_samples(
        self,
        cohort: Cohort,
        landmarks: Sequence[float] | None,
        prediction_times: pl.DataFrame | None,
        split: Split | None,
    ) -> pl.DataFrame:
        """At-risk samples: strict DESIGN.md rule for landmarks; for explicit times, no outcome at or before t."""
        if prediction_times is None:
            lab = cohort.labels(landmarks=landmarks, split=split)
            return lab.select("subject_id", "prediction_time", "landmark_days")
        pt = prediction_times.select(
            pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us"))
        )
        subj = cohort.subjects if split is None else cohort.subjects.filter(pl.col("split") == split)
        return (
            pt.join(subj.select("subject_id", "outcome_time"), on="subject_id", how="inner")
            .filter(pl.col("outcome_time").is_null() | (pl.col("outcome_time") > pl.col("prediction_time")))
            .select("subject_id", "prediction_time", pl.lit(None, dtype=pl.Float64).alias("landmark_days"))
            .unique(maintain_order=True)
            .sort("subject_id", "prediction_time")
        )

    @torch.inference_mode()
    def _log_hazards(self, table: TokenTable) -> torch.Tensor:
        module = self._require_fit()
        module.eval()
        out = torch.empty(table.q_sample.size, len(self.outcomes), module.edges.numel())
        for batch in _sequential_batches(table):
            out[batch["q_row"]] = module.log_hazard(batch)
        return out

    @torch.inference_mode()
    def _mean_loss(self, table: TokenTable) -> float:
        """Per-query mean negative log-likelihood over the labelled queries of ``table`` (eval mode)."""
        module = self._require_fit()
        module.eval()
        total, count = 0.0, 0
        for batch in _sequential_batches(table):
            loss, n = module._loss(batch)
            total, count = total + float(loss) * n, count + n
        return total / max(count, 1)

    def _checked_horizons(self, horizons: Sequence[float]) -> torch.Tensor:
        if isinstance(horizons, str | bytes):
            raise ConfigError(
                f"Horizons must be a list of days, not the string {horizons!r}; e.g. horizons=[365.25, 1095.75] "
                f"(parse '1y,3y' with migpt_traj.durations.parse_days_list)."
            )
        try:
            h = np.asarray(list(horizons), dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"Horizons must be numbers of days; got {list(horizons)!r} ({err}).") from err
        if h.ndim != 1 or h.size == 0 or not np.all(np.isfinite(h)) or np.any(h < 0):
            raise ConfigError(f"Horizons must be a non-empty list of finite days >= 0; got {list(horizons)}.")
        return torch.tensor(h, dtype=torch.float32)

    def _predict_hazards(
        self,
        cohort: Cohort,
        landmarks: Sequence[float] | None,
        prediction_times: pl.DataFrame | None,
        split: Split | None,
    ) -> tuple[pl.DataFrame, torch.Tensor, torch.Tensor]:
        """At-risk samples, their ``(S, K, J)`` log hazards as of each prediction time, and the bin edges."""
        module = self._require_fit()
        samples = self._prediction_samples(cohort, landmarks, prediction_times, split)
        table = self._tensorize(
            cohort, samples.rename({"prediction_time": "cutoff_time"}).select("subject_id", "cutoff_time")
        )
        # A few sequences: one intra-op thread (waking and syncing threads costs more than it saves on tiny
        # tensors, and badly so on a shared machine; benchmarks/perf.py). The caller's setting is restored.
        threads = torch.get_num_threads()
        if table.n_samples <= 16:
            torch.set_num_threads(1)
        try:
            return samples, self._log_hazards(table), module.edges  # _log_hazards runs under inference_mode
        finally:
            torch.set_num_threads(threads)

    def predict_risk(
        self,
        cohort: Cohort,
        *,
        horizons: Sequence[float],
        landmarks: Sequence[float] | None = None,
        prediction_times: pl.DataFrame | None = None,
        split: Split | None = None,
    ) -> pl.DataFrame:
        """Cumulative incidence of every outcome within each horizon after each prediction time.

        Give ``landmarks`` (days after time zero; every subject at risk there) or ``prediction_times`` (frame
        ``subject_id, prediction_time``; every one without an outcome at or before it). Inputs are the events
        available at the prediction time (``<=``), nothing later.

        Returns:
            polars frame ``subject_id, prediction_time, landmark_days, event, horizon_days, risk`` with risk in
            [0, 1], non-decreasing in ``horizon_days``; summed over events it equals ``1 - survival``.
        """
        tau = self._checked_horizons(horizons)
        samples, log_hazard, edges = self._predict_hazards(cohort, landmarks, prediction_times, split)
        cif = cumulative_incidence(log_hazard, edges, tau).numpy()  # (S, K, H)
        n, k, h = cif.shape
        return pl.DataFrame(
            {
                "subject_id": np.repeat(samples["subject_id"].to_numpy(), k * h),
                "prediction_time": samples["prediction_time"].gather(np.repeat(np.arange(n), k * h)),
                "landmark_days": np.repeat(samples["landmark_days"].to_numpy(), k * h),
                "event": np.tile(np.repeat(np.asarray(self.outcomes, dtype=object), h), n),
                "horizon_days": np.tile(tau.numpy().astype(np.float64), n * k),
                "risk": cif.reshape(-1).astype(np.float64),
            },
            schema_overrides={"event": pl.String},
        )

    def predict_survival(
        self,
        cohort: Cohort,
        *,
        times: Sequence[float],
        landmarks: Sequence[float] | None = None,
        prediction_times: pl.DataFrame | None = None,
        split: Split | None = None,
    ) -> pl.DataFrame:
        """Probability of no outcome of any kind within ``times`` days: ``subject_id, prediction_time,
        landmark_days, time_days, survival``."""
        tau = self._checked_horizons(times)
        samples, log_hazard, edges = self._predict_hazards(cohort, landmarks, prediction_times, split)
        surv = survival_function(log_hazard, edges, tau).numpy()  # (S, H)
        n, h = surv.shape
        return pl.DataFrame(
            {
                "subject_id": np.repeat(samples["subject_id"].to_numpy(), h),
                "prediction_time": samples["prediction_time"].gather(np.repeat(np.arange(n), h)),
                "landmark_days": np.repeat(samples["landmark_days"].to_numpy(), h),
                "time_days": np.tile(tau.numpy().astype(np.float64), n),
                "survival": surv.reshape(-1).astype(np.float64),
            }
        )

    def forecast(
        self,
        cohort: Cohort,
        *,
        at: Sequence[float],
        landmarks: Sequence[float] | None = None,
        prediction_times: pl.DataFrame | None = None,
        codes: Sequence[str] | None = None,
        split: Split | None = None,
        level: float = 0.8,
    ) -> pl.DataFrame:
        """Projected future values of every numeric measurement and of the image embedding, ``at`` days after each
        prediction time, in the codes' original units with a central ``level`` predictive interval:
        ``subject_id, prediction_time, landmark_days, code, dim, target_days, mean, median, lower, upper``.

        See :func:`migpt_traj.outputs.forecast.forecast` for every argument and error.
        """
        from migpt_traj.outputs.forecast import forecast

        return forecast(
            self,
            cohort,
            at=at,
            landmarks=landmarks,
            prediction_times=prediction_times,
            codes=codes,
            split=split,
            level=level,
        )

    def suggest_treatments(
        self,
        cohort: Cohort,
        *,
        horizon: float,
        landmarks: Sequence[float] | None = None,
        prediction_times: pl.DataFrame | None = None,
        options: Sequence[str] | None = None,
        split: Split | None = None,
        event: str | None = None,
        min_propensity: float = 0.05,
        decision_window_days: float = 365.25,
        n_bootstrap: int = 20,
        interval: float = 0.95,
        reference: str = "none",
        seed: int = 0,
    ) -> pl.DataFrame:
        """Model-based risk of ``event`` within ``horizon`` days under each treatment option started at the
        prediction time (``"none"`` = no new treatment), with bootstrap intervals, propensities, ``supported``
        and a rank among supported options (1 = lowest risk).

        See :func:`migpt_traj.outputs.treatments.suggest_treatments` for the method, every argument and error.
        """
        from migpt_traj.outputs.treatments import suggest_treatments

        return suggest_treatments(
            self,
            cohort,
            horizon=horizon,
            landmarks=landmarks,
            prediction_times=prediction_times,
            options=options,
            split=split,
            event=event,
            min_propensity=min_propensity,
            decision_window_days=decision_window_days,
            n_bootstrap=n_bootstrap,
            interval=interval,
            reference=reference,
            seed=seed,
        )

    def summarize(
        self,
        cohort: Cohort,
        *,
        subject_id: int,
        prediction_time: datetime.datetime | float,
        horizons: Sequence[float] | None = None,
        forecast_days: Sequence[float] = (182.625, 365.25),
        level: float = 0.8,
        steps: int = 48,
    ) -> PatientState:
        """One subject's state as of ``prediction_time`` (a datetime, or days after the subject's time zero):
        current risks, risk over the past, labs with trends and forecasts, imaging change, attributions.

        See :func:`migpt_traj.outputs.summary.summarize` for every argument and error.
        """
        from migpt_traj.outputs.summary import summarize

        return summarize(
            self,
            cohort,
            subject_id=subject_id,
            prediction_time=prediction_time,
            horizons=horizons,
            forecast_days=forecast_days,
            level=level,
            steps=steps,
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` (weights) and ``model.json`` (config, vocabulary, normalisers, bins)."""
        module = self._require_fit()
        assert self.preprocessor is not None
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
        hparams = {k: v for k, v in module.hparams.items() if k != "init_log_hazard"}
        meta = {
            "format_version": _FORMAT_VERSION,
            "config": self.config.to_dict(),
            "outcomes": list(self.outcomes),
            "preprocessor": self.preprocessor.to_dict(),
            "module": hparams,
            "note_identity": self.note_identity,
            "note_dim": self.note_dim,
            "history": self.history,
        }
        (path / "model.json").write_text(json.dumps(meta, indent=1))
        if self.image_embedder is not None:
            self.image_embedder.save(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrajectoryModel:
        """Load a model written by :meth:`save` (no pickle anywhere)."""
        path = Path(path)
        try:
            meta = json.loads((path / "model.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ModelStateError(f"Cannot read a saved model at {str(path)!r}: {err}") from err
        if meta.get("format_version") != _FORMAT_VERSION:
            raise ModelStateError(
                f"Saved model at {str(path)!r} has format_version {meta.get('format_version')}; this version of "
                f"migpt_traj reads {_FORMAT_VERSION}."
            )
        model = cls(TrajectoryConfig.from_dict(meta["config"], source=str(path / "model.json")))
        model.outcomes = tuple(meta["outcomes"])
        model.preprocessor = Preprocessor.from_dict(meta["preprocessor"])
        model.note_identity = meta["note_identity"]
        model.note_dim = int(meta["note_dim"])
        model.history = meta.get("history", {})
        module = TrajectoryModule(**meta["module"])
        module.load_state_dict(load_file(str(path / "model.safetensors")))
        module.eval()
        model.module = module
        if (path / "image_encoder.safetensors").is_file():
            from migpt_traj.imaging import ImageEmbedder

            model.image_embedder = ImageEmbedder.load(path, cache_dir=model.config.imaging.cache_dir)
        return model
