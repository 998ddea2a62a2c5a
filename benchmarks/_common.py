"""Helpers shared by the benchmark scripts: machine description, intervals across splits, tables, JSON output.

Import from a script in this folder with ``from _common import ...`` (the scripts run as ``python benchmarks/X.py``,
which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "REPO",
    "git_state",
    "machine_info",
    "markdown_table",
    "mean_interval",
    "package_versions",
    "write_json",
]

REPO = Path(__file__).resolve().parent.parent


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (None if absent)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state() -> dict[str, Any]:
    """Commit and whether the working tree has uncommitted changes (read-only git commands)."""

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=20
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}


def machine_info() -> dict[str, Any]:
    """Where and when the benchmark ran: platform, CPUs, load, torch threads and accelerator, time (UTC)."""
    try:
        load: list[float] | None = list(os.getloadavg())
    except OSError:
        load = None
    info: dict[str, Any] = {
        "utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": load,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = bool(torch.cuda.is_available())
    except ImportError:
        pass
    return info


def mean_interval(
    values: Sequence[float], *, test_train_ratio: float | None = None, level: float = 0.95
) -> dict[str, Any]:
    """Mean of per-split values with a t interval across splits.

    With ``test_train_ratio`` (held-out / train size), the standard error uses the Nadeau & Bengio (2003)
    correction for repeated random splits, ``sd * sqrt(1 / J + n_test / n_train)``: the splits share training
    subjects, so the naive ``sd / sqrt(J)`` is too narrow. Fewer than two values give no interval.

    Returns:
        ``{"n", "mean", "sd", "lower", "upper"}`` (None where undefined).
    """
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "lower": None, "upper": None}
    mean = float(arr.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "sd": None, "lower": None, "upper": None}
    sd = float(arr.std(ddof=1))
    factor = 1.0 / n + (test_train_ratio if test_train_ratio is not None else 0.0)
    half = float(stats.t.ppf(0.5 + level / 2, df=n - 1)) * sd * math.sqrt(factor)
    return {"n": n, "mean": mean, "sd": sd, "lower": mean - half, "upper": mean + half}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (cells converted with ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON (NaN/inf become null, numpy scalars plain numbers); creates folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(data), indent=1, allow_nan=False) + "\n")
    return path
