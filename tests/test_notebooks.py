"""The notebooks run top to bottom on small settings, and are committed without outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_quickstart.ipynb", "02_cohort_evaluation.ipynb", "03_trajectories_and_treatments.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name: str) -> None:
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    assert [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None] == []
    assert "widgets" not in book.metadata  # no stale widget state either


@pytest.mark.slow  # 40-80 s each on a shared 2-core machine
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_small_settings(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("MIGPT_TRAJ_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MIGPT_TRAJ_CACHE", str(tmp_path / "cache"))  # no writes to the user's cache
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
