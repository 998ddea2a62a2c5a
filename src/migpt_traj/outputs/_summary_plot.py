"""The timeline figure of a patient state (matplotlib's Agg canvas, no pyplot: no global state is touched).

Rows, all on one time axis in years after time zero: the labs as small multiples (latest value and trend window
marked, forecast mean and band after the prediction time when the state has forecasts), a strip of treatments,
imaging studies and notes, and the risk of every outcome at the first horizon over the past.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from migpt_traj.data.cohort import DAY_US
from migpt_traj.durations import DAYS_PER_YEAR
from migpt_traj.outputs._summary_text import date, horizon

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from migpt_traj.outputs.summary import PatientState

__all__ = ["timeline_figure"]

_MAX_LABS = 12
_COLS = 3
_COLORS = ("#1f4e79", "#c55a11", "#548235", "#7030a0", "#bf9000", "#2e75b6", "#7f7f7f")
_KINDS = (("treatment", "s", "#548235"), ("image", "D", "#7030a0"), ("note", "o", "#bf9000"))


def _years(t: dt.datetime, tz: dt.datetime) -> float:
    return (t - tz) / dt.timedelta(microseconds=1) / DAY_US / DAYS_PER_YEAR


def _lab_panel(ax: Any, state: PatientState, index: int) -> None:
    lab = state.labs[index]
    tz, now = state.time_zero, state.days_since_time_zero / DAYS_PER_YEAR
    xs = [_years(t, tz) for t in lab.times]
    ax.plot(xs, lab.values, "-o", color=_COLORS[0], markersize=2.5, linewidth=1)
    ax.axvspan(now - lab.trend_window_days / DAYS_PER_YEAR, now, color="#dddddd", alpha=0.5, linewidth=0)
    if lab.forecast:
        fx = [xs[-1]] + [now + f.target_days / DAYS_PER_YEAR for f in lab.forecast]
        fm = [lab.latest_value] + [f.mean for f in lab.forecast]
        ax.plot(fx, fm, "--", color=_COLORS[1], linewidth=1)
        band = [f for f in lab.forecast if f.lower is not None and f.upper is not None]
        if band:
            ax.fill_between(
                [now + f.target_days / DAYS_PER_YEAR for f in band],
                [f.lower for f in band],
                [f.upper for f in band],
                color=_COLORS[1],
                alpha=0.25,
                linewidth=0,
            )
    ax.axvline(now, color="#444444", linewidth=0.8, linestyle=":")
    trend = f", {lab.trend_per_year:+.3g}/y" if lab.trend_per_year is not None else ""
    ax.set_title(f"{lab.code} ({lab.latest_value:.4g}{trend})", fontsize=8)
    ax.tick_params(labelsize=7)


def _events_panel(ax: Any, state: PatientState) -> None:
    tz = state.time_zero
    labels = []
    for row, (kind, marker, color) in enumerate(_KINDS):
        xs = [_years(e.time, tz) for e in state.timeline if e.kind == kind]
        ax.scatter(xs, [row] * len(xs), marker=marker, color=color, s=18)
        labels.append(f"{kind} ({len(xs)})")
    for e in state.timeline:
        if e.kind == "treatment":
            ax.annotate(
                e.code.split("//")[-1], (_years(e.time, tz), 0), fontsize=6, xytext=(2, 4), textcoords="offset points"
            )
    ax.set_yticks(range(len(_KINDS)), labels, fontsize=7)
    ax.set_ylim(-0.7, len(_KINDS) - 0.3)
    ax.axvline(state.days_since_time_zero / DAYS_PER_YEAR, color="#444444", linewidth=0.8, linestyle=":")
    ax.tick_params(labelsize=7)


def _risk_panel(ax: Any, state: PatientState) -> None:
    h = state.horizons_days[0]
    for k, event in enumerate(state.outcomes):
        pts = [p for p in state.trajectory if p.event == event and p.horizon_days == h]
        ax.step(
            [p.days / DAYS_PER_YEAR for p in pts],
            [100 * p.risk for p in pts],
            where="post",
            color=_COLORS[k % len(_COLORS)],
            label=event,
            linewidth=1.2,
        )
    ax.axvline(state.days_since_time_zero / DAYS_PER_YEAR, color="#444444", linewidth=0.8, linestyle=":")
    ax.set_ylabel(f"risk within {horizon(h)} (%)", fontsize=8)
    ax.set_xlabel(f"years after time zero ({date(state.time_zero)}); dotted: prediction time", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    ax.tick_params(labelsize=7)


def timeline_figure(state: PatientState) -> Figure:
    """The figure (module docstring); at most 12 lab panels, the most measured labs first when there are more."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ranked = sorted(range(len(state.labs)), key=lambda i: (-state.labs[i].n_measurements, state.labs[i].code))
    shown = sorted(ranked[:_MAX_LABS])
    lab_rows = -(-len(shown) // _COLS)
    fig = Figure(figsize=(10, 2.0 * lab_rows + 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(lab_rows + 2, _COLS, height_ratios=[1.0] * lab_rows + [0.8, 1.4])
    first = None
    for n, i in enumerate(shown):
        ax = fig.add_subplot(grid[n // _COLS, n % _COLS], sharex=first)
        first = first or ax
        _lab_panel(ax, state, i)
    events_ax = fig.add_subplot(grid[lab_rows, :], sharex=first)
    _events_panel(events_ax, state)
    risk_ax = fig.add_subplot(grid[lab_rows + 1, :], sharex=events_ax)
    _risk_panel(risk_ax, state)
    omitted = len(state.labs) - len(shown)
    more = f"; {omitted} less measured labs not shown" if omitted else ""
    fig.suptitle(
        f"Subject {state.subject_id} as of {date(state.prediction_time)} (model-based estimate{more})", fontsize=10
    )
    return fig
