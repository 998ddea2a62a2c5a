"""From imaging studies on disk to the ``embedding`` column the trajectory model reads: :class:`ImageEmbedder`.

``fit`` prepares the encoder on the **train subjects only** (nothing is read from other subjects' volumes);
``transform`` embeds every study of a cohort with the frozen encoder and returns a new cohort whose imaging events
carry the embedding (the as-of rule then applies to them as to any event: the tensorizer shows a study only once
its ``available_time``, else ``time``, is ``<=`` the prediction time). :func:`embed_images` does both.

Encoders (:class:`~migpt_traj.imaging.config.ImagingConfig`): ``"precomputed"`` (a no-op: the ``embedding``
column as given), ``"survival"`` (a MONAI 3D network pretrained with a survival likelihood on the train volumes,
then frozen: **two-stage**, not trained jointly with the transformer) and ``"autoencoder"`` (a MONAI variational
autoencoder trained self-supervised on the train volumes, then frozen). A user's safetensors weights may replace
the training (``weights``) or start it (``fine_tune``).

Caching (:mod:`migpt_traj.imaging.cache`): embeddings are keyed by the study's content hash within the encoder's
identity (a hash of its weights) and the transform; a fitted encoder is keyed by the content hashes and targets of
its training studies and the training options. A second ``fit`` + ``transform`` of unchanged files therefore reads
no volume at all.

Example:
    >>> import migpt_traj as mt  # doctest: +SKIP
    >>> from migpt_traj.imaging import ImagingConfig, embed_images  # doctest: +SKIP
    >>> syn = mt.datasets.make_synthetic(300, volumes=True, volume_dir="vols")  # doctest: +SKIP
    >>> cohort, report = embed_images(syn, ImagingConfig(encoder="autoencoder"))  # doctest: +SKIP
    >>> report.n_embedded, report.n_skipped  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError, ModelStateError
from migpt_traj.imaging.cache import EmbeddingStore, HashIndex, atomic_write, default_image_cache_dir
from migpt_traj.imaging.config import ImagingConfig
from migpt_traj.imaging.networks import EncoderNetwork, build_network, load_weights, state_digest
from migpt_traj.imaging.reading import VolumeReader
from migpt_traj.imaging.report import ImagingReport
from migpt_traj.imaging.studies import StudyFailures, image_studies, read_each, with_embeddings
from migpt_traj.imaging.training import embed_batches, fit_autoencoder, fit_survival, survival_bins, torch_threads

__all__ = ["ENCODER_VERSION", "ImageEmbedder", "ImagingReport", "embed_images"]

#: Bumped whenever the networks, training or embedding computation change (part of every cache key).
ENCODER_VERSION = "migpt-traj-imaging-1"
_WEIGHTS_FILE = "image_encoder.safetensors"


class ImageEmbedder:
    """Fits an image encoder on train subjects and embeds a cohort's imaging studies (module docs).

    Args:
        config: imaging options (default: ``ImagingConfig()``, the precomputed no-op).
        cache_dir: cache root; overrides ``config.cache_dir`` (``None`` and no config value: the default
            :func:`~migpt_traj.imaging.cache.default_image_cache_dir`). Ignored when ``config.use_cache`` is false.
    """

    def __init__(self, config: ImagingConfig | None = None, *, cache_dir: str | Path | None = None) -> None:
        self.config = config or ImagingConfig()
        root = cache_dir if cache_dir is not None else self.config.cache_dir
        self.cache_root: Path | None = None
        if self.config.use_cache:
            self.cache_root = Path(root).expanduser() if root is not None else default_image_cache_dir()
        self.network: EncoderNetwork | None = None
        self.edges: list[float] = []
        self.outcomes: tuple[str, ...] = ()
        self.identity: str | None = None
        self.fit_report: ImagingReport | None = None
        self.reader = VolumeReader(self.config.transform, self.config.reader)

    @property
    def dim(self) -> int:
        """Length of the embeddings this encoder writes (0 for ``"precomputed"``: whatever the column holds)."""
        return 0 if self.config.encoder == "precomputed" else self.config.embedding_dim

    # ------------------------------------------------------------------ fit
    def fit(self, cohort: Cohort, *, train_subjects: Iterable[int] | None = None) -> ImageEmbedder:
        """Prepare the encoder from the studies of ``train_subjects`` (default: the cohort's train split) only.

        Raises:
            ImageReadError: an unreadable train study with ``on_missing_image="error"``.
            ConfigError: no readable train study to learn from, or unusable ``weights``.
        """
        with torch_threads(self.config.threads):
            return self._fit(cohort, train_subjects)

    def _fit(self, cohort: Cohort, train_subjects: Iterable[int] | None) -> ImageEmbedder:
        start = time.perf_counter()
        cfg = self.config
        self.outcomes = tuple(cohort.outcomes)
        if cfg.encoder == "precomputed":
            self.fit_report = ImagingReport(stage="fit", encoder=cfg.encoder, identity=None)
            return self
        ids = cohort.subject_ids("train") if train_subjects is None else sorted({int(s) for s in train_subjects})
        studies = image_studies(cohort).filter(pl.col("subject_id").is_in(pl.Series(ids, dtype=pl.Int64).implode()))
        n_causes = len(self.outcomes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            network = build_network(cfg, n_causes=n_causes)
        weights_digest = None
        if cfg.weights is not None:
            load_weights(network, cfg.weights)
            weights_digest = state_digest(network.weights())
        failures = StudyFailures(cfg.on_missing_image)
        hashes = HashIndex(self.cache_root)
        report: dict[str, Any] = {"n_studies": studies.height}
        if cfg.weights is not None and not cfg.fine_tune:
            self.edges = []
        else:
            targets = self._targets(cohort, studies)
            digests = self._digests(targets, hashes, failures)
            failures.resolve(studies, stage="fitting the image encoder", final=False)
            targets = targets.with_columns(digest=pl.Series(digests, dtype=pl.String)).filter(
                pl.col("digest").is_not_null()
            )
            if targets.height > cfg.max_train_volumes:
                keep = np.sort(np.random.default_rng(cfg.seed).choice(targets.height, cfg.max_train_volumes, False))
                targets = targets[keep]
            if targets.height < 2:
                raise ConfigError(
                    f"The image encoder {cfg.encoder!r} needs at least 2 readable train studies to learn from; the "
                    f"{len(ids)} train subjects have {targets.height}."
                )
            report.update(self._fit_network(network, targets, weights_digest, failures, studies))
        hashes.save()
        failures.resolve(studies, stage="fitting the image encoder", final=True)
        network.eval().requires_grad_(False)
        self.network = network
        self.identity = f"{cfg.encoder}-{state_digest(network.weights(), extra=(ENCODER_VERSION, self.edges))}"
        self.fit_report = ImagingReport(
            stage="fit",
            encoder=cfg.encoder,
            identity=self.identity,
            n_hashed=hashes.hashed,
            n_skipped=len(failures.reasons),
            skipped=failures.frame(studies),
            seconds=time.perf_counter() - start,
            **report,
        )
        return self

    def _targets(self, cohort: Cohort, studies: pl.DataFrame) -> pl.DataFrame:
        """Train studies with their survival targets (``duration_days``, ``cause``; at risk at the study time)."""
        timed = studies.filter(pl.col("time").is_not_null())
        if self.config.encoder != "survival":
            return timed.with_columns(duration_days=pl.lit(0.0), cause=pl.lit(0, dtype=pl.Int64))
        pts = timed.select("subject_id", pl.col("time").alias("prediction_time")).unique()
        labels = cohort.labels(prediction_times=pts).select(
            "subject_id",
            pl.col("prediction_time").alias("time"),
            "duration_days",
            pl.col("event")
            .replace_strict({o: i + 1 for i, o in enumerate(self.outcomes)}, default=0, return_dtype=pl.Int64)
            .alias("cause"),
        )
        return timed.join(labels, on=["subject_id", "time"], how="inner").sort("_row")

    def _digests(self, studies: pl.DataFrame, hashes: HashIndex, failures: StudyFailures) -> list[str | None]:
        out: list[str | None] = []
        for row, path in zip(studies["_row"].to_list(), studies["image_path"].to_list(), strict=True):
            try:
                out.append(hashes.digest(path))
            except OSError as err:
                failures.add(row, err)
                out.append(None)
        return out

    def _fit_network(
        self,
        network: EncoderNetwork,
        targets: pl.DataFrame,
        weights_digest: str | None,
        failures: StudyFailures,
        studies: pl.DataFrame,
    ) -> dict[str, Any]:
        cfg = self.config
        duration = targets["duration_days"].to_numpy().astype(np.float64)
        cause = targets["cause"].to_numpy().astype(np.int64)
        if cfg.encoder == "survival":
            edges, init = survival_bins(duration, cause, n_bins=cfg.n_bins, n_causes=len(self.outcomes))
            if not (cause > 0).any():
                raise ConfigError("The train studies are followed by no outcome; the survival encoder has no signal.")
        else:
            edges, init = np.empty(0), np.empty(0)
        record = json.dumps(
            [ENCODER_VERSION, cfg.training_fingerprint(), weights_digest, list(self.outcomes), edges.tolist()]
        )
        key_hash = hashlib.sha256(record.encode())
        for digest, d, c in zip(targets["digest"].to_list(), duration.tolist(), cause.tolist(), strict=True):
            key_hash.update(f"{digest}|{d!r}|{c}\n".encode())
        key = key_hash.hexdigest()[:32]
        cached = self.cache_root / "encoders" / f"{key}.safetensors" if self.cache_root is not None else None
        self.edges = edges.tolist()
        if cached is not None and cached.is_file():
            try:
                load_weights(network, cached)
                return {"n_embedded": targets.height, "fitted_from_cache": True}
            except ConfigError:
                pass  # a damaged cache entry: train again and overwrite it
        reads_before = self.reader.reads
        read = read_each(targets["_row"].to_numpy(), targets["image_path"].to_list(), self.reader.read, failures)
        failures.resolve(studies, stage="fitting the image encoder", final=False)
        if len(read) < 2:
            failures.resolve(studies, stage="fitting the image encoder", final=True)
            raise ConfigError(
                f"The image encoder {cfg.encoder!r} needs at least 2 readable train studies; {len(read)} of "
                f"{targets.height} could be read (see the warning on the skipped ones)."
            )
        ok = np.isin(targets["_row"].to_numpy(), [r for r, _ in read])
        volumes = torch.as_tensor(np.stack([v for _, v in read]))
        generator = torch.Generator().manual_seed(cfg.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            if cfg.encoder == "survival":
                network.set_head_bias(init)
                history = fit_survival(network, volumes, duration[ok], cause[ok], edges, cfg, generator)
            else:
                history = fit_autoencoder(network, volumes, cfg, generator)
        if cached is not None:
            self._save_weights(network, cached, {"key": key})
        return {"n_embedded": int(ok.sum()), "n_read": self.reader.reads - reads_before, "training_loss": history.loss}

    # ------------------------------------------------------------------ transform
    def transform(self, cohort: Cohort) -> tuple[Cohort, ImagingReport]:
        """Embed every study of ``cohort`` with the fitted encoder (cached by content hash).

        Returns:
            ``(cohort, report)``: a cohort of the same class (a ``SyntheticCohort`` keeps ``.truth``) whose
            studies carry the embedding (list<float32> of length ``embedding_dim``); skipped studies are dropped
            from its events; imaging events without ``image_path`` lose a precomputed embedding.

        Raises:
            ModelStateError: called before :meth:`fit` with a trained encoder.
            ImageReadError: an unreadable study with ``on_missing_image="error"``.
        """
        with torch_threads(self.config.threads):
            return self._transform(cohort)

    def _transform(self, cohort: Cohort) -> tuple[Cohort, ImagingReport]:
        start = time.perf_counter()
        cfg = self.config
        if cfg.encoder == "precomputed":
            n = image_studies(cohort).height
            return cohort, ImagingReport(stage="transform", encoder=cfg.encoder, identity=None, n_studies=n)
        if self.network is None or self.identity is None:
            raise ModelStateError("This ImageEmbedder is not fitted; call fit(cohort) first (or ImageEmbedder.load).")
        studies = image_studies(cohort)
        failures = StudyFailures(cfg.on_missing_image)
        hashes = HashIndex(self.cache_root)
        digests = pl.Series(self._digests(studies, hashes, failures), dtype=pl.String)
        failures.resolve(studies, stage="embedding imaging studies", final=False)
        hashes.save()
        studies = studies.with_columns(digest=digests)
        unique = studies.filter(pl.col("digest").is_not_null()).unique("digest", keep="first", maintain_order=True)
        namespace = f"{self.identity}-{cfg.transform.fingerprint()}"
        store = EmbeddingStore(self.cache_root, namespace, self.dim, self._manifest())
        found, vectors = store.lookup(unique["digest"].to_list())
        reads_before = self.reader.reads
        rows = unique["_row"].to_numpy()
        position = {int(r): i for i, r in enumerate(rows.tolist())}
        todo = np.flatnonzero(~found)
        computed = np.zeros(unique.height, dtype=bool)
        for s in range(0, todo.size, cfg.batch_size_embed):
            chunk = todo[s : s + cfg.batch_size_embed]
            read = read_each(rows[chunk], unique["image_path"].gather(chunk).to_list(), self.reader.read, failures)
            if read:
                idx = np.array([position[r] for r, _ in read])
                vectors[idx] = embed_batches(self.network, np.stack([v for _, v in read]))
                computed[idx] = True
                store.store(unique["digest"].gather(idx).to_list(), vectors[idx])
        # A read failure is recorded against the first study with that content: extend it to every copy.
        reasons = failures.reasons
        bad = {d: reasons[int(r)] for r, d in zip(rows, unique["digest"], strict=True) if int(r) in reasons}
        for row, digest in zip(studies["_row"].to_list(), studies["digest"].to_list(), strict=True):
            if digest in bad:
                failures.reasons.setdefault(row, bad[digest])
        failures.resolve(studies, stage="embedding imaging studies", final=True)
        good = unique.filter(pl.Series(found | computed)).select(
            "digest", pl.Series("_vec", vectors[found | computed]).cast(pl.List(pl.Float32))
        )
        embedded_rows = studies.join(good, on="digest", how="inner")
        out, n_dropped = with_embeddings(cohort, embedded_rows, dropped=list(failures.reasons), dim=self.dim)
        embedded = studies.height - len(failures.reasons)
        report = ImagingReport(
            stage="transform",
            encoder=cfg.encoder,
            identity=self.identity,
            n_studies=studies.height,
            n_embedded=embedded,
            n_from_cache=int(studies.join(unique.filter(pl.Series(found)), on="digest", how="semi").height),
            n_read=self.reader.reads - reads_before,
            n_hashed=hashes.hashed,
            n_skipped=len(failures.reasons),
            n_embeddings_dropped=n_dropped,
            seconds=time.perf_counter() - start,
            skipped=failures.frame(studies),
        )
        return out, report

    def _manifest(self) -> dict[str, Any]:
        return {
            "version": ENCODER_VERSION,
            "identity": self.identity,
            "encoder": self.config.encoder,
            "config": self.config.to_dict(),
            "transform_fingerprint": self.config.transform.fingerprint(),
        }

    # ------------------------------------------------------------------ persistence
    def _save_weights(self, network: EncoderNetwork, path: Path, extra: dict[str, Any]) -> None:
        from safetensors.torch import save

        meta = {"version": ENCODER_VERSION, "edges": json.dumps(self.edges), **{k: str(v) for k, v in extra.items()}}
        blob = save(network.weights(), metadata=meta)
        with contextlib.suppress(OSError):  # an unwritable cache only costs a retrain next time
            atomic_write(path, lambda fh: fh.write(blob))

    def save(self, directory: str | Path) -> Path:
        """Write ``image_encoder.safetensors`` (weights; config, bins and outcomes in its metadata)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.network is None:
            raise ModelStateError("Nothing to save: this ImageEmbedder has no fitted network.")
        from safetensors.torch import save_file

        meta = {
            "version": ENCODER_VERSION,
            "config": json.dumps(self.config.to_dict()),
            "edges": json.dumps(self.edges),
            "outcomes": json.dumps(list(self.outcomes)),
            "identity": str(self.identity),
        }
        save_file(self.network.weights(), str(directory / _WEIGHTS_FILE), metadata=meta)
        return directory / _WEIGHTS_FILE

    @classmethod
    def load(cls, directory: str | Path, *, cache_dir: str | Path | None = None) -> ImageEmbedder:
        """Read an encoder written by :meth:`save` (safetensors only; no pickle)."""
        from safetensors import safe_open

        path = Path(directory) / _WEIGHTS_FILE
        if not path.is_file():
            raise ModelStateError(f"No saved image encoder at {str(path)!r}.")
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if meta.get("version") != ENCODER_VERSION:
            raise ModelStateError(
                f"The image encoder at {str(path)!r} was saved by {meta.get('version')!r}; this version reads "
                f"{ENCODER_VERSION!r}. Fit it again."
            )
        config = ImagingConfig.from_dict(json.loads(meta["config"]), source=str(path))
        embedder = cls(config, cache_dir=cache_dir)
        embedder.outcomes = tuple(json.loads(meta["outcomes"]))
        embedder.edges = list(json.loads(meta["edges"]))
        network = build_network(config, n_causes=max(len(embedder.outcomes), 1))
        load_weights(network, path)
        embedder.network = network.eval().requires_grad_(False)
        embedder.identity = meta["identity"]
        return embedder


def embed_images(
    cohort: Cohort,
    config: ImagingConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
    train_subjects: Iterable[int] | None = None,
) -> tuple[Cohort, ImagingReport]:
    """Fit the configured image encoder on ``train_subjects`` (default: the train split) and embed ``cohort``.

    ``ImageEmbedder(config, cache_dir=cache_dir).fit(cohort, train_subjects=...).transform(cohort)``; keep the
    :class:`ImageEmbedder` instead when the same encoder must embed other cohorts later (prediction).
    """
    return ImageEmbedder(config, cache_dir=cache_dir).fit(cohort, train_subjects=train_subjects).transform(cohort)
