"""Imaging benchmark: does a volume encoder recover the risk signal of the simulator's lesions?

One synthetic cohort (``make_synthetic(n, volumes=True)``: a 32^3 NIfTI volume per imaging study whose lesion
radius grows with the latent state z1 + z2) is re-split by subject 50 / 10 / 40 % (train / tuning / held out, so
the held-out cells have enough deaths). The trajectory model (``configs/synthetic.yaml``, notes off, few epochs)
is fitted through the public API on the same events with the imaging studies represented in different ways:

* ``labs_only``: no imaging events at all (the floor);
* ``true_embedding``: the simulator's 16-d embedding ``b + W (z1, z2) + noise`` (the "precomputed" path);
* ``true_radius``: the exact lesion radius (1-d), i.e. exactly what the volumes show;
* ``survival_densenet`` / ``survival_resnet``: a MONAI 3D DenseNet / ResNet pretrained on the train volumes with
  the piecewise-exponential survival likelihood (two-stage), its 16 outputs as the embedding;
* ``autoencoder``: a MONAI variational autoencoder trained on the train volumes only, its latent mean.

Two risk models read each variant: a landmark Cox model (``LandmarkCox``: last available value of every lab and
of every embedding entry, as numeric codes ``IMGEMB//k``), which measures how much risk signal the embedding
carries, and the trajectory transformer, which is what the library ships.

td-AUC (:func:`migpt_traj.evaluation.cumulative_dynamic_auc`; death primary, transplant competing, IPCW from the
train split's labels at the landmark) on held-out subjects at risk at each landmark, with a 95 % percentile
interval from 300 subject-level bootstrap resamples (one row per subject per cell). The true risk
(``SyntheticTruth.risk``) gives the ceiling. Embedding throughput: volumes per second of ``transform`` on CPU,
cold (empty cache: hash, read, transform, encode) and cached (second call, new embedder, same files).

Usage:
    .venv/bin/python benchmarks/imaging.py [--subjects 500] [--seed 0] [--max-epochs 10] [--encoder-epochs 8]
        [--threads 1] [--variants ...] [--out benchmarks/results/imaging.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from _common import REPO, git_state, machine_info, markdown_table, package_versions, write_json

import migpt_traj as mt
from migpt_traj.data.cohort import Cohort, seeded_split
from migpt_traj.datasets._sim_volumes import study_lesions
from migpt_traj.errors import ValueRangeError
from migpt_traj.evaluation import cumulative_dynamic_auc
from migpt_traj.evaluation.baselines import LandmarkCox
from migpt_traj.imaging import ImageEmbedder, ImagingConfig

LANDMARKS = (365.25, 730.5)
HORIZONS = (365.25, 1095.75)
PRIMARY = "MEDS_DEATH"
IMAGE = "IMAGE//ct"
VARIANTS = ("labs_only", "true_embedding", "true_radius", "survival_densenet", "survival_resnet", "autoencoder")
ENCODERS: dict[str, dict[str, Any]] = {
    "survival_densenet": {"encoder": "survival", "network": "densenet", "widths": [4, 8, 16]},
    "survival_resnet": {"encoder": "survival", "network": "resnet", "widths": [4, 8, 16, 32]},
    "autoencoder": {"encoder": "autoencoder", "widths": [4, 8, 16]},
}
DEFAULT_OUT = REPO / "benchmarks" / "results" / "imaging.json"
VERSIONS = ("migpt-traj", "torch", "monai", "nibabel", "pydicom", "polars", "numpy")
N_BOOT = 300


def _codes(labels: pl.DataFrame, outcomes: tuple[str, ...]) -> np.ndarray:
    return labels["event"].replace_strict({o: i + 1 for i, o in enumerate(outcomes)}, default=0).to_numpy()


def _auc_cell(held: pl.DataFrame, train: pl.DataFrame, risk: pl.DataFrame, h: float, seed: int) -> dict[str, Any]:
    outcomes = (PRIMARY, "TRANSPLANT")
    t, e = held["duration_days"].to_numpy(), _codes(held, outcomes)
    r = held.select("subject_id").join(risk, on="subject_id", how="left", maintain_order="left")["risk"].to_numpy()
    train_t, train_e = train["duration_days"].to_numpy(), _codes(train, outcomes)
    out: dict[str, Any] = {"n_at_risk": held.height, "n_deaths": int(((e == 1) & (t <= h)).sum())}

    def auc(idx: np.ndarray) -> float:
        return cumulative_dynamic_auc(t[idx], e[idx], r[idx], h, cause=1, train_time=train_t, train_event=train_e)

    try:
        out["auc"] = auc(np.arange(t.size))
    except ValueRangeError as err:
        return {**out, "auc": None, "status": f"not estimable: {err}"}
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(N_BOOT):
        try:
            boot.append(auc(rng.integers(0, t.size, t.size)))
        except ValueRangeError:
            continue
    out["lower"], out["upper"] = (
        (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))) if boot else (None, None)
    )
    return {**out, "status": "ok"}


def _variant_cohort(name: str, base: Cohort, embedded: dict[str, Cohort], lesions: pl.DataFrame) -> Cohort:
    ev = base.events.drop("image_path")
    if name == "labs_only":
        return base.with_events(ev.filter(pl.col("code") != IMAGE).drop("embedding"))
    if name == "true_embedding":
        return base.with_events(ev)
    if name == "true_radius":
        radius = lesions.select("subject_id", "time", pl.concat_list(pl.col("radius").cast(pl.Float32)).alias("_r"))
        ev = ev.join(radius, on=["subject_id", "time"], how="left", maintain_order="left")
        ev = ev.with_columns(embedding=pl.when(pl.col("code") == IMAGE).then(pl.col("_r"))).drop("_r")
        return base.with_events(ev.with_columns(pl.col("embedding").cast(pl.List(pl.Float32))))
    return embedded[name]


def _throughput(name: str, cohort: Cohort, args: argparse.Namespace, cache: Path) -> tuple[Cohort, dict[str, Any]]:
    options = {**ENCODERS[name], "epochs": args.encoder_epochs, "threads": args.threads, "seed": args.seed}
    config = ImagingConfig.from_dict(options)
    start = time.perf_counter()
    embedder = ImageEmbedder(config, cache_dir=cache).fit(cohort)
    fit_s = time.perf_counter() - start
    out, cold = embedder.transform(cohort)
    start = time.perf_counter()
    again = ImageEmbedder(config, cache_dir=cache).fit(cohort)
    refit_s = time.perf_counter() - start
    _, warm = again.transform(cohort)
    assert again.reader.reads == 0, "the second fit + transform read volumes"
    fit = embedder.fit_report
    assert fit is not None
    record = {
        "config": config.to_dict(),
        "identity": embedder.identity,
        "train_volumes": fit.n_embedded,
        "fit_s": fit_s,
        "training_loss": list(fit.training_loss),
        "refit_from_cache_s": refit_s,
        "studies": cold.n_studies,
        "cold": {"seconds": cold.seconds, "volumes_per_s": cold.volumes_per_second, "read": cold.n_read},
        "cached": {"seconds": warm.seconds, "volumes_per_s": warm.volumes_per_second, "read": warm.n_read},
    }
    print(
        f"  {name:<18s} fit {fit_s:6.1f} s on {fit.n_embedded} train volumes; embed cold "
        f"{cold.volumes_per_second:6.1f} vol/s, cached {warm.volumes_per_second:8.1f} vol/s",
        flush=True,
    )
    return out, record


def _as_numeric(cohort: Cohort) -> Cohort:
    """Each study's embedding as numeric events ``IMGEMB//k`` (entry k, same time and availability), so that the
    landmark Cox baseline (last available value of every numeric code) sees it."""
    ev = cohort.events
    if "embedding" not in ev.columns:
        return cohort
    keep = ["subject_id", "time", "code", "numeric_value", "text_value", "available_time"]
    studies = ev.filter((pl.col("code") == IMAGE) & pl.col("embedding").is_not_null())
    long = (
        studies.select("subject_id", "time", "available_time", "embedding")
        .with_columns(k=pl.int_ranges(0, pl.col("embedding").list.len()))
        .explode(["embedding", "k"])
        .select(
            "subject_id",
            "time",
            pl.format("IMGEMB//{}", pl.col("k")).alias("code"),
            pl.col("embedding").alias("numeric_value"),
            pl.lit(None, dtype=pl.String).alias("text_value"),
            "available_time",
        )
    )
    events = pl.concat([ev.filter(pl.col("code") != IMAGE).select(keep), long], how="vertical_relaxed")
    events = events.sort("time", nulls_last=False, maintain_order=True).sort("subject_id", maintain_order=True)
    return cohort.with_events(events)


def _fit_and_score(
    name: str, cohort: Cohort, labels: dict[tuple[float, str], pl.DataFrame], args: argparse.Namespace, kind: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    overrides = {"use_notes": False, "progress": False, "seed": args.seed, "max_epochs": args.max_epochs}
    start = time.perf_counter()
    if kind == "cox":
        # No log transforms: LandmarkCox logs a column that is positive in train, and an embedding entry can be
        # <= 0 in a held-out subject (NaN risk); the same setting for every variant keeps them comparable.
        cohort = _as_numeric(cohort)
        model: Any = LandmarkCox(landmarks=LANDMARKS, penalizer=0.1, log_skew_threshold=float("inf")).fit(cohort)
    else:
        model = mt.TrajectoryModel.from_config(REPO / "configs" / "synthetic.yaml", **overrides).fit(cohort)
    fit_s = time.perf_counter() - start
    pred = model.predict_risk(cohort, landmarks=list(LANDMARKS), horizons=list(HORIZONS), split="held_out")
    pred = pred.filter(pl.col("event") == PRIMARY)
    rows = []
    for s in LANDMARKS:
        for h in HORIZONS:
            risk = pred.filter((pl.col("landmark_days") == s) & (pl.col("horizon_days") == h))
            cell = _auc_cell(labels[(s, "held_out")], labels[(s, "train")], risk.select("subject_id", "risk"), h, 1)
            rows.append({"model": kind, "variant": name, "landmark_days": s, "horizon_days": h, **cell})
    return rows, {"fit_s": fit_s, "history": getattr(model, "history", {})}


def _truth_rows(syn: Any, labels: dict[tuple[float, str], pl.DataFrame]) -> list[dict[str, Any]]:
    rows = []
    for s in LANDMARKS:
        held = labels[(s, "held_out")]
        truth = syn.truth.risk(held["subject_id"], held["prediction_time"], list(HORIZONS), event=PRIMARY)
        for h in HORIZONS:
            risk = truth.filter(pl.col("horizon_days") == h).select("subject_id", "risk")
            cell = _auc_cell(held, labels[(s, "train")], risk, h, 1)
            rows.append({"model": "truth", "variant": "truth", "landmark_days": s, "horizon_days": h, **cell})
    return rows


def _auc_table(result: dict[str, Any], model: str) -> str:
    cells = {(r["variant"], r["landmark_days"], r["horizon_days"]): r for r in result["auc"] if r["model"] == model}
    cells.update(
        {(r["variant"], r["landmark_days"], r["horizon_days"]): r for r in result["auc"] if r["model"] == "truth"}
    )
    variants = [v for v in (*result["settings"]["variants"], "truth") if any(k[0] == v for k in cells)]
    header = ["landmark (y)", "horizon (y)", "at risk", "deaths", *variants]
    rows = []
    for s in LANDMARKS:
        for h in HORIZONS:
            first = cells[("truth", s, h)]
            row = [f"{s / 365.25:g}", f"{h / 365.25:g}", first["n_at_risk"], first["n_deaths"]]
            for v in variants:
                c = cells.get((v, s, h))
                if c is None or c.get("auc") is None:
                    row.append("—")
                else:
                    ci = f" [{c['lower']:.2f}, {c['upper']:.2f}]" if c.get("lower") is not None else ""
                    row.append(f"{c['auc']:.3f}{ci}")
            rows.append(row)
    return markdown_table(header, rows)


def render(result: dict[str, Any]) -> str:
    speed = [
        [
            k,
            v["train_volumes"],
            f"{v['fit_s']:.0f}",
            f"{v['cold']['volumes_per_s']:.1f}",
            f"{v['cached']['volumes_per_s']:.0f}",
        ]
        for k, v in result["encoders"].items()
    ]
    return "\n".join(
        [
            "td-AUC of death, held-out subjects at risk (95 % subject-bootstrap interval).",
            "",
            "Landmark Cox (lifelines, ridge 0.1, no log transforms) on the last available labs and image-embedding "
            "entries:",
            _auc_table(result, "cox"),
            "",
            f"migpt_traj.TrajectoryModel (configs/synthetic.yaml, notes off, max_epochs "
            f"{result['settings']['max_epochs']}):",
            _auc_table(result, "transformer"),
            "",
            "Embedding on CPU (volumes/s of transform; cold = empty cache, cached = second call):",
            markdown_table(["encoder", "train volumes", "fit (s)", "cold vol/s", "cached vol/s"], speed),
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-epochs", type=int, default=10, help="trajectory model max_epochs")
    parser.add_argument("--encoder-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the image encoders")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    variants = tuple(v for v in VARIANTS if v in args.variants.split(","))
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="migpt-imaging-") as tmp:
        start = time.perf_counter()
        syn = mt.datasets.make_synthetic(args.subjects, seed=args.seed, volumes=True, volume_dir=Path(tmp) / "vol")
        make_s = time.perf_counter() - start
        splits = seeded_split(syn.splits["subject_id"], seed=args.seed, fractions=(0.5, 0.1, 0.4))
        base = Cohort.from_events(syn.events, outcomes=syn.outcomes, splits=splits, conventions=syn.conventions)
        lesions = study_lesions(syn.events, syn.truth.subjects, syn.truth.params)
        n_studies = lesions.height
        print(f"{args.subjects} subjects, {n_studies} volumes written in {make_s:.0f} s", flush=True)
        labels = {(s, sp): base.labels(landmarks=[s], split=sp) for s in LANDMARKS for sp in ("train", "held_out")}
        embedded: dict[str, Cohort] = {}
        encoders: dict[str, Any] = {}
        for name in (v for v in variants if v in ENCODERS):
            embedded[name], encoders[name] = _throughput(name, base, args, Path(tmp) / "cache")
        auc: list[dict[str, Any]] = _truth_rows(syn, labels)
        fits: dict[str, Any] = {}
        for kind in ("cox", "transformer"):
            for name in variants:
                key = f"{kind}/{name}"
                try:
                    cohort = _variant_cohort(name, base, embedded, lesions)
                    rows, fits[key] = _fit_and_score(name, cohort, labels, args, kind)
                    auc += rows
                    print(f"  {key:<30s} fit {fits[key]['fit_s']:6.1f} s", flush=True)
                except Exception as err:  # one failed variant is reported, the others still run
                    fits[key] = {"error": "".join(traceback.format_exception_only(err)).strip()}
                    print(f"  {key:<30s} FAILED {fits[key]['error']}", flush=True)
    result: dict[str, Any] = {
        "benchmark": "imaging",
        "machine": machine,
        "versions": package_versions(VERSIONS),
        "git": git_state(),
        "command": " ".join(sys.argv if argv is None else ["imaging.py", *argv]),
        "settings": {
            "subjects": args.subjects,
            "seed": args.seed,
            "splits": "subject-level 50/10/40 (train/tuning/held_out), seeded",
            "volumes": n_studies,
            "volume_shape": [32, 32, 32],
            "trajectory_config": "configs/synthetic.yaml (use_notes=false)",
            "max_epochs": args.max_epochs,
            "encoder_epochs": args.encoder_epochs,
            "encoder_threads": args.threads,
            "landmarks_days": list(LANDMARKS),
            "horizons_days": list(HORIZONS),
            "variants": list(variants),
            "bootstrap": N_BOOT,
            "make_synthetic_s": make_s,
        },
        "encoders": encoders,
        "fits": fits,
        "auc": auc,
    }
    table = render(result)
    result["table"] = table
    print(table)
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
