"""Tests for migpt_traj.imaging.embed: fit on train subjects only, embed with a cache, missing files, weights."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch

from migpt_traj.data.cohort import Cohort
from migpt_traj.errors import ConfigError, ImageReadError, MigptTrajWarning, ModelStateError
from migpt_traj.imaging import ImageEmbedder, ImagingConfig, embed_images


class _Spy:
    """Wraps an embedder's reader to record every path it reads."""

    def __init__(self, embedder: ImageEmbedder) -> None:
        self.paths: list[str] = []
        inner = embedder.reader.read

        def read(path: Any) -> np.ndarray:
            self.paths.append(str(path))
            return inner(path)

        embedder.reader.read = read  # type: ignore[method-assign]


@pytest.fixture(scope="module")
def built(img: Any, tiny: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One cohort of NIfTI studies, one fitted autoencoder (its cache), one transform of the cohort."""
    root = tmp_path_factory.mktemp("imaging")
    cohort = img.cohort(tiny, root / "vol")
    embedder = ImageEmbedder(img.config(), cache_dir=root / "cache")
    spy = _Spy(embedder)
    embedder.fit(cohort)
    fit_paths = list(spy.paths)
    out, report = embedder.transform(cohort)
    return {"root": root, "cohort": cohort, "embedder": embedder, "fit_paths": fit_paths, "out": out, "report": report}


def _images(cohort: Cohort) -> pl.DataFrame:
    return cohort.events.filter(pl.col("code") == "IMAGE//ct")


def _copy_cohort(cohort: Cohort, folder: Path) -> Cohort:
    """The same cohort with every study file copied into ``folder`` (so tests may change them)."""
    folder.mkdir(parents=True)
    paths = cohort.events["image_path"].to_list()
    new = [None if p is None else str(folder / Path(p).name) for p in paths]
    for old, dst in zip(paths, new, strict=True):
        if old is not None and dst is not None:
            shutil.copy(old, dst)
    return cohort.with_events(cohort.events.with_columns(image_path=pl.Series(new, dtype=pl.String)))


def test_precomputed_is_a_no_op_that_reads_nothing(img: Any, built: dict[str, Any]) -> None:
    cohort = built["cohort"]
    embedder = ImageEmbedder(ImagingConfig(), cache_dir=built["root"] / "unused").fit(cohort)
    out, report = embedder.transform(cohort)
    assert out is cohort and report.n_studies == _images(cohort).height and report.n_read == 0
    assert embedder.reader.reads == 0 and not (built["root"] / "unused").exists()


def test_fit_reads_only_train_subjects_and_transform_embeds_every_study(built: dict[str, Any]) -> None:
    cohort, out, report = built["cohort"], built["out"], built["report"]
    train = set(cohort.subject_ids("train"))
    subject_of = dict(zip(_images(cohort)["image_path"], _images(cohort)["subject_id"], strict=True))
    assert built["fit_paths"] and {subject_of[p] for p in built["fit_paths"]} <= train
    assert len(set(built["fit_paths"])) == built["embedder"].fit_report.n_embedded
    images = _images(out)
    assert images.height == _images(cohort).height == report.n_studies == report.n_embedded
    assert images["embedding"].list.len().unique().to_list() == [4]
    assert report.n_skipped == 0 and report.n_read == report.n_studies  # every file is distinct
    others = pl.col("code") != "IMAGE//ct"
    assert out.events.filter(others).equals(cohort.events.filter(others))
    assert out.subjects.equals(cohort.subjects)


def test_a_second_fit_and_transform_read_no_volume_and_a_changed_file_is_read_again(
    img: Any, built: dict[str, Any], tmp_path: Path
) -> None:
    cohort = _copy_cohort(built["cohort"], tmp_path / "vol")  # same contents elsewhere: still cache hits
    again = ImageEmbedder(img.config(), cache_dir=built["root"] / "cache")
    again.fit(cohort)
    out, report = again.transform(cohort)
    assert again.fit_report is not None and again.fit_report.fitted_from_cache
    assert again.reader.reads == 0 and report.n_from_cache == report.n_studies
    assert again.identity == built["embedder"].identity
    assert out.events["embedding"].equals(built["out"].events["embedding"])

    held = _images(cohort).join(cohort.splits, on="subject_id").filter(pl.col("split") == "held_out")
    changed = held["image_path"][0]
    img.nifti(Path(changed), img.lesion(3.5, seed=999))
    out2, report2 = again.transform(cohort)
    assert again.reader.reads == 1 and report2.n_read == 1 and report2.n_hashed == 1
    differs = (
        _images(out2)
        .select("image_path", "embedding")
        .join(_images(out).select("image_path", pl.col("embedding").alias("before")), on="image_path")
        .filter(pl.col("embedding") != pl.col("before"))
    )
    assert differs["image_path"].to_list() == [changed]


def test_the_cache_is_safe_to_delete(img: Any, built: dict[str, Any], tmp_path: Path) -> None:
    cohort = _copy_cohort(built["cohort"], tmp_path / "vol")
    embedder = ImageEmbedder(img.config(), cache_dir=tmp_path / "cache").fit(cohort)
    first, _ = embedder.transform(cohort)
    shutil.rmtree(tmp_path / "cache")
    second, report = embedder.transform(cohort)
    assert report.n_from_cache == 0 and report.n_read == report.n_studies
    np.testing.assert_allclose(
        np.asarray(_images(second)["embedding"].to_list()), np.asarray(_images(first)["embedding"].to_list()), atol=1e-6
    )


def test_held_out_volumes_do_not_change_the_fitted_encoder(img: Any, built: dict[str, Any], tmp_path: Path) -> None:
    cohort = _copy_cohort(built["cohort"], tmp_path / "vol")
    config = img.config(use_cache=False)
    reference = ImageEmbedder(config).fit(cohort)
    ids = cohort.subject_ids("tuning") + cohort.subject_ids("held_out")
    others = _images(cohort).filter(pl.col("subject_id").is_in(ids))["image_path"].to_list()
    for k, path in enumerate(others):
        img.nifti(Path(path), img.lesion(0.5, seed=10_000 + k))  # different content for every non-train study
    refit = ImageEmbedder(config).fit(cohort)
    assert reference.network is not None and refit.network is not None
    for name, tensor in reference.network.weights().items():
        assert torch.equal(tensor, refit.network.weights()[name]), name
    assert refit.identity == reference.identity
    train_path = _images(cohort).filter(~pl.col("subject_id").is_in(ids))["image_path"][0]
    img.nifti(Path(train_path), img.lesion(0.5, seed=123))
    assert ImageEmbedder(config).fit(cohort).identity != reference.identity  # a train volume does matter


def test_a_missing_file_raises_naming_subject_time_and_path(img: Any, built: dict[str, Any], tmp_path: Path) -> None:
    cohort = _copy_cohort(built["cohort"], tmp_path / "vol")
    embedder = built["embedder"]
    study = (
        _images(cohort).join(cohort.splits, on="subject_id").filter(pl.col("split") == "held_out").row(0, named=True)
    )
    Path(study["image_path"]).unlink()
    message = (
        rf"subject {study['subject_id']}, time {study['time']}, code 'IMAGE//ct': cannot read image_path "
        rf"'{study['image_path']}' \(FileNotFoundError.*on_missing_image='skip'"
    )
    with pytest.raises(ImageReadError, match=message):
        embedder.transform(cohort)
    train_study = (
        _images(cohort).join(cohort.splits, on="subject_id").filter(pl.col("split") == "train").row(0, named=True)
    )
    Path(train_study["image_path"]).write_bytes(b"corrupt")
    with pytest.raises(ImageReadError, match=r"ImageFileError.*while fitting the image encoder"):
        ImageEmbedder(img.config(use_cache=False)).fit(cohort)


def test_skip_drops_unreadable_studies_with_one_warning_and_counts_them(
    img: Any, built: dict[str, Any], tmp_path: Path
) -> None:
    cohort = _copy_cohort(built["cohort"], tmp_path / "vol")
    held = _images(cohort).join(cohort.splits, on="subject_id").filter(pl.col("split") == "held_out")
    missing, corrupt = held["image_path"][0], held["image_path"][1]
    Path(missing).unlink()
    Path(corrupt).write_bytes(b"\x00" * 100)
    embedder = ImageEmbedder(img.config(on_missing_image="skip"), cache_dir=built["root"] / "cache")
    embedder.fit(cohort)
    with pytest.warns(MigptTrajWarning, match=r"Dropped 2 imaging studies .*first: subject") as caught:
        out, report = embedder.transform(cohort)
    assert len([w for w in caught if issubclass(w.category, MigptTrajWarning)]) == 1
    assert report.n_skipped == 2 and sorted(report.skipped["image_path"].to_list()) == sorted([missing, corrupt])
    assert out.events.height == cohort.events.height - 2
    assert not out.events["image_path"].is_in([missing, corrupt]).any()
    assert report.n_embedded == report.n_studies - 2


def test_a_dicom_series_study_is_embedded_and_cached(img: Any, built: dict[str, Any], tmp_path: Path) -> None:
    cohort = built["cohort"]
    held = _images(cohort).join(cohort.splits, on="subject_id").filter(pl.col("split") == "held_out")
    target = held["image_path"][0]
    vol = (img.lesion(2.5, seed=5) * 1000).astype(np.int16)
    series = img.dicom_series(tmp_path / "series", vol)
    events = cohort.events.with_columns(
        image_path=pl.when(pl.col("image_path") == target).then(pl.lit(str(series))).otherwise(pl.col("image_path"))
    )
    dicom = cohort.with_events(events)
    embedder = built["embedder"]
    reads = embedder.reader.reads
    out, report = embedder.transform(dicom)
    assert embedder.reader.reads == reads + 1 and report.n_from_cache == report.n_studies - 1
    row = _images(out).filter(pl.col("image_path") == str(series))
    assert row.height == 1 and len(row["embedding"][0]) == 4
    _, again = embedder.transform(dicom)
    assert again.n_read == 0


def test_user_weights_replace_training_and_must_fit(img: Any, built: dict[str, Any], tmp_path: Path) -> None:
    cohort, embedder = built["cohort"], built["embedder"]
    path = embedder.save(tmp_path / "enc")
    user = ImageEmbedder(img.config(weights=str(path), use_cache=False))
    user.fit(cohort)
    assert user.reader.reads == 0  # nothing trained
    out, _ = user.transform(cohort)
    np.testing.assert_allclose(
        np.asarray(_images(out)["embedding"].to_list()),
        np.asarray(_images(built["out"])["embedding"].to_list()),
        atol=1e-6,
    )
    with pytest.raises(ConfigError, match=r"does not fit the configured network: .*shape of"):
        ImageEmbedder(img.config(weights=str(path), widths=(3, 4))).fit(cohort)
    fake = tmp_path / "pickled.safetensors"
    fake.write_bytes(b"\x80\x04 this is a pickle, not safetensors")
    with pytest.raises(ConfigError, match="is not a readable safetensors file"):
        ImageEmbedder(img.config(weights=str(fake))).fit(cohort)


def test_save_load_round_trip_embeds_identically(built: dict[str, Any], tmp_path: Path) -> None:
    embedder = built["embedder"]
    embedder.save(tmp_path / "enc")
    loaded = ImageEmbedder.load(tmp_path / "enc", cache_dir=tmp_path / "cache")
    assert loaded.identity == embedder.identity and loaded.config == embedder.config
    out, report = loaded.transform(built["cohort"])
    assert report.n_read == report.n_studies  # a fresh cache
    assert out.events["embedding"].equals(built["out"].events["embedding"])
    with pytest.raises(ModelStateError, match="No saved image encoder"):
        ImageEmbedder.load(tmp_path / "nothing")


def test_a_cohort_without_studies_passes_through(built: dict[str, Any]) -> None:
    cohort = built["cohort"]
    plain = cohort.with_events(cohort.events.drop("image_path"))
    out, report = built["embedder"].transform(plain)
    assert report.n_studies == 0 and report.n_embeddings_dropped == _images(plain).height
    assert _images(out)["embedding"].null_count() == _images(plain).height  # foreign embeddings removed


def test_fit_fails_clearly_when_no_train_study_is_readable(img: Any, built: dict[str, Any], tmp_path: Path) -> None:
    cohort = _copy_cohort(built["cohort"], tmp_path / "vol")
    train = _images(cohort).filter(pl.col("subject_id").is_in(cohort.subject_ids("train")))
    for path in train["image_path"].to_list():
        Path(path).write_bytes(b"garbage")
    embedder = ImageEmbedder(img.config(on_missing_image="skip", use_cache=False))
    with pytest.warns(MigptTrajWarning, match="Dropped"), pytest.raises(ConfigError, match=r"0 of .* could be read"):
        embedder.fit(cohort)


def test_transform_before_fit_raises(img: Any, built: dict[str, Any]) -> None:
    with pytest.raises(ModelStateError, match=r"not fitted; call fit\(cohort\) first"):
        ImageEmbedder(img.config()).transform(built["cohort"])


def test_foreign_embeddings_without_a_path_are_removed(img: Any, built: dict[str, Any]) -> None:
    cohort = built["cohort"]
    first = _images(cohort)["image_path"][0]
    events = cohort.events.with_columns(
        image_path=pl.when(pl.col("image_path") == first).then(None).otherwise(pl.col("image_path"))
    )
    out, report = built["embedder"].transform(cohort.with_events(events))
    assert report.n_embeddings_dropped == 1 and report.n_studies == _images(cohort).height - 1
    assert _images(out)["embedding"].null_count() == 1


def test_survival_encoder_learns_on_train_studies(img: Any, built: dict[str, Any]) -> None:
    config = img.config(encoder="survival", network="densenet", widths=(4, 4), epochs=4, lr=5e-3, use_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MigptTrajWarning)
        embedder = ImageEmbedder(config).fit(built["cohort"])
        cohort, report = embedder.transform(built["cohort"])
    assert embedder.fit_report is not None
    loss = embedder.fit_report.training_loss
    assert len(loss) == 4 and loss[-1] < loss[0]  # the survival likelihood improves on the train studies
    assert report.n_embedded == report.n_studies and report.identity is not None
    assert report.identity.startswith("survival-") and len(embedder.edges) >= 2
    assert _images(cohort)["embedding"].list.len().unique().to_list() == [4]
    same, _ = embed_images(built["cohort"], config)
    assert same.events["embedding"].equals(cohort.events["embedding"])  # deterministic
