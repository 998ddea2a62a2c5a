"""As-of for images: a study that becomes available after the prediction time never reaches the model.

The embedder fills the ``embedding`` of every study; the tensorizer (:func:`migpt_traj.data.tensorize.tensorize`)
then shows a study only once its ``available_time`` (else ``time``) is ``<=`` the cutoff. So changing the volume of
a study that is taken but not yet read at ``t`` must leave the model's inputs at ``t`` unchanged, while the same
change once it is available must change them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from migpt_traj.data.preprocess import Preprocessor
from migpt_traj.data.tensorize import TokenTable, tensorize
from migpt_traj.imaging import ImageEmbedder


def _arrays(table: TokenTable) -> dict[str, np.ndarray]:
    names = ("offsets", "code_id", "value", "modality", "time_days", "avail_days", "image_index", "images")
    return {n: np.asarray(getattr(table, n)) for n in names}


def test_a_study_available_after_the_cutoff_does_not_change_the_inputs(img: Any, tiny: Any, tmp_path: Path) -> None:
    cohort = img.cohort(tiny, tmp_path / "vol", n_subjects=20, lag_days=5.0)
    embedder = ImageEmbedder(img.config(use_cache=False)).fit(cohort)
    before, _ = embedder.transform(cohort)
    pre = Preprocessor.fit(before)
    held = set(cohort.subject_ids("held_out"))
    study = (
        before.events.filter((pl.col("code") == "IMAGE//ct") & pl.col("subject_id").is_in(list(held)))
        .sort("subject_id", "time")
        .row(2, named=True)  # not the subject's first study
    )
    assert study["available_time"] == study["time"] + dt.timedelta(days=5)
    img.nifti(Path(study["image_path"]), img.lesion(0.5 if study["embedding"][0] > 0 else 3.5, seed=77))
    after, _ = embedder.transform(cohort)
    changed = after.events.filter(pl.col("image_path") == study["image_path"])["embedding"][0].to_list()
    assert not np.allclose(changed, study["embedding"])  # the new volume gives a new embedding

    def inputs(events_cohort: Any, cutoff: dt.datetime) -> dict[str, np.ndarray]:
        samples = pl.DataFrame({"subject_id": [study["subject_id"]], "cutoff_time": [cutoff]})
        return _arrays(tensorize(events_cohort, samples, pre))

    taken_not_read = study["time"] + dt.timedelta(days=2)
    a, b = inputs(before, taken_not_read), inputs(after, taken_not_read)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    read = study["available_time"]  # inclusive: available at the cutoff counts
    a, b = inputs(before, read), inputs(after, read)
    assert a["images"].shape == b["images"].shape and not np.allclose(a["images"], b["images"])
