"""DDP on CPU (gloo): a 2-process fit matches a 1-process fit with the same global batch; scale config fields.

Why the results match and how closely. With ``devices=2, batch_size=16`` step ``k`` of the DDP run trains on exactly
the 32 samples of step ``k`` of the one-process ``batch_size=32`` run (``tests/data/test_datamodule.py``), both
start from the same seeded weights, and dropout is 0, so the only difference is the gradient's weighting: DDP
averages the two ranks' per-query means, one process takes the mean over all the step's queries; the two agree
when both halves hold as many labelled queries, and differ by a few percent of the gradient otherwise (plus the
summation order of gloo's all-reduce). Measured on PBC2, 3 epochs: max |risk difference| 0.004 (mean 0.0003), tuning
losses within 0.0005; changing only the seed of a one-process fit moves risks by up to 0.15 (mean 0.007). The test
asks for less than 0.01 and less than a quarter of the seed-to-seed difference, the same best epoch, and tuning
losses within 0.01. Training on unsharded data (both ranks seeing every sample) fails it (0.05).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import migpt_traj as mt
from migpt_traj.config import TrajectoryConfig
from migpt_traj.errors import ConfigError

CONFIGS = Path(mt.__file__).parent / "configs"
SETTINGS: dict[str, Any] = {
    "d_model": 16,
    "n_layers": 1,
    "n_heads": 2,
    "dropout": 0.0,
    "max_epochs": 3,
    "patience": 3,
    "batch_size": 32,
    "use_notes": False,
    "progress": False,
    "seed": 0,
}
LANDMARKS = [0.0, 365.25]
HORIZONS = [365.25, 1095.75]

# Every rank runs this script (Lightning's ddp launcher re-runs the command for rank 1); rank 0 writes the results.
_SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
import migpt_traj as mt
settings, out = json.loads(sys.argv[1]), sys.argv[2]
cohort = mt.datasets.load_pbc2()
model = mt.TrajectoryModel(**settings).fit(cohort)
if model.history["global_rank"] == 0:
    risk = model.predict_risk(cohort, landmarks={landmarks}, horizons={horizons}, split="held_out")
    risk.write_parquet(out + ".parquet")
    with open(out + ".json", "w") as fh:
        json.dump(model.history, fh)
"""


def _fit_here(cohort: mt.Cohort, **changes: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
    model = mt.TrajectoryModel(**{**SETTINGS, **changes}).fit(cohort)
    risk = model.predict_risk(cohort, landmarks=LANDMARKS, horizons=HORIZONS, split="held_out")
    return risk, model.history


def _fit_ddp(tmp_path: Path, **changes: Any) -> tuple[pl.DataFrame, dict[str, Any]]:
    script = tmp_path / "ddp_fit.py"
    script.write_text(_SCRIPT.format(landmarks=LANDMARKS, horizons=HORIZONS))
    out = tmp_path / "ddp"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # a fresh launch
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(script), json.dumps({**SETTINGS, **changes}), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return pl.read_parquet(f"{out}.parquet"), json.loads(Path(f"{out}.json").read_text())


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    cohort = mt.datasets.load_pbc2()
    one, one_history = _fit_here(cohort)
    reseeded, _ = _fit_here(cohort, seed=1)
    ddp, ddp_history = _fit_ddp(tmp_path, devices=2, strategy="ddp", batch_size=16, accelerator="cpu")

    assert ddp_history["world_size"] == 2 and one_history["world_size"] == 1
    assert ddp.select("subject_id", "prediction_time", "event", "horizon_days").equals(
        one.select("subject_id", "prediction_time", "event", "horizon_days")
    )
    gap = np.abs(ddp["risk"].to_numpy() - one["risk"].to_numpy()).max()
    seed_gap = np.abs(reseeded["risk"].to_numpy() - one["risk"].to_numpy()).max()
    assert gap < 0.01, gap
    assert gap < 0.25 * seed_gap, (gap, seed_gap)
    # Early stopping sees the same tuning loss on every rank, so the best epoch and its weights are the same.
    assert ddp_history["best_epoch"] == one_history["best_epoch"]
    np.testing.assert_allclose(ddp_history["val_loss"], one_history["val_loss"], atol=0.01)
    assert ddp_history["train_samples"] == one_history["train_samples"]


# -------------------------------------------------------------------------------------------- config fields
@pytest.mark.parametrize(
    ("name", "devices", "nodes"),
    [("ddp_2gpu", 2, 1), ("slurm_2x4gpu", 4, 2)],
)
def test_bundled_scale_configs_load_and_validate(name: str, devices: int, nodes: int) -> None:
    config = TrajectoryConfig.from_yaml(CONFIGS / f"{name}.yaml")
    assert (config.accelerator, config.strategy, config.devices, config.num_nodes) == ("gpu", "ddp", devices, nodes)
    assert config.outcomes == ("MEDS_DEATH", "TRANSPLANT")
    assert config.replace(accelerator="cpu", devices=1, num_nodes=1).devices == 1  # the override a CPU run uses


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "ddp_spawn"}, r"'strategy' = 'ddp_spawn' is not supported.*Spawn/fork launchers.*use 'ddp'"),
        ({"strategy": "ddp_notebook"}, r"'strategy' = 'ddp_notebook' is not supported.*Spawn/fork"),
        ({"strategy": "dp"}, r"'strategy' = 'dp' is not supported; use one of \['auto', 'ddp'"),
        ({"strategy": "dpp"}, r"Did you mean 'ddp'"),
        ({"strategy": "fsdp"}, r"'strategy' = 'fsdp' is not supported.*Sharded training is not offered yet"),
        ({"accelerator": "gpus"}, r"'accelerator' = 'gpus' is not supported.*Did you mean 'gpu'"),
        ({"num_nodes": 0}, r"'num_nodes' = 0 is invalid; it must be an integer >= 1"),
        ({"devices": "2"}, r"'devices' = '2' is invalid; it must be an integer >= 1"),
        ({"devices": True}, r"'devices' = True is invalid"),
    ],
)
def test_invalid_scale_options(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrajectoryConfig(**changes)
    with pytest.raises(ConfigError, match=message):
        TrajectoryConfig.from_dict({"train": changes})
