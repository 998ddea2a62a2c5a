"""Progress bars: the three-state switch (True / False / auto), auto-detection, and the bootstrap hook."""

from __future__ import annotations

import io

import numpy as np
import pytest

from migpt_traj._progress import progress, progress_enabled, track
from migpt_traj.evaluation import bootstrap as bs


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("MIGPT_TRAJ_PROGRESS", raising=False)


def test_explicit_switch_wins() -> None:
    assert progress_enabled(True, stream=io.StringIO())
    assert not progress_enabled(False, stream=_Tty())


def test_auto_draws_only_for_a_terminal_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    assert progress_enabled(None, stream=_Tty())
    assert not progress_enabled(None, stream=io.StringIO())  # a log file or a pipe
    monkeypatch.setenv("CI", "true")
    assert not progress_enabled(None, stream=_Tty())
    monkeypatch.setenv("CI", "false")
    assert progress_enabled(None, stream=_Tty())


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("yes", True), ("0", False), ("off", False)])
def test_environment_override_of_auto(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("MIGPT_TRAJ_PROGRESS", value)
    monkeypatch.setenv("CI", "true")  # the explicit variable beats CI detection
    assert progress_enabled(None, stream=io.StringIO()) is expected
    assert progress_enabled(False, stream=io.StringIO()) is False  # and never beats an explicit False


def test_bar_output_and_quiet_mode() -> None:
    out = io.StringIO()
    assert list(track(range(4), desc="counting", unit="step", enabled=True, stream=out)) == [0, 1, 2, 3]
    text = out.getvalue()
    assert "counting" in text and "4/4" in text
    quiet = io.StringIO()
    with progress(total=3, desc="silent", enabled=False, stream=quiet) as bar:
        bar.update(3)
        assert not bar.active
    assert quiet.getvalue() == ""
    auto = io.StringIO()
    assert list(track([1, 2], desc="auto", enabled=None, stream=auto)) == [1, 2]
    assert auto.getvalue() == ""  # auto on a non-terminal stream: nothing


def test_bootstrap_concordance_bar_changes_nothing_but_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    n = 60
    time = rng.uniform(10, 1000, n)
    event = rng.choice([0, 1, 2], size=n, p=[0.5, 0.35, 0.15])
    risk = rng.uniform(size=n)
    sample = bs.EvalSample.build(time, event, np.arange(n), train_time=time, train_event=event)
    w = bs.SubjectBootstrap.draw(np.arange(n), n_replicates=20, seed=0).weights(np.arange(n))
    quiet = bs.weighted_concordance(sample, risk, 800.0, 1, w, chunk=2 * n)
    assert "bootstrap C" not in capsys.readouterr().err
    shown = bs.weighted_concordance(sample, risk, 800.0, 1, w, chunk=2 * n, progress=True)
    assert "bootstrap C (cause 1, 800 d)" in capsys.readouterr().err
    np.testing.assert_array_equal(quiet.values, shown.values)
    single = bs.weighted_concordance(sample, risk, 800.0, 1, w, progress=True)  # one chunk: no bar
    assert "bootstrap C" not in capsys.readouterr().err
    np.testing.assert_allclose(single.values, quiet.values, rtol=1e-12)
