"""PNG figures of an evaluation report (matplotlib's Agg canvas, no pyplot: no global state is touched).

Each function takes the report's tables and returns PNG bytes: metric over horizon with CI bands, calibration
curves, decision curves and predicted-risk distributions by observed outcome.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import polars as pl

__all__ = ["calibration_png", "decision_png", "metric_png", "risk_distribution_png"]

_DAYS_PER_YEAR = 365.25
_COLORS = ("#1f4e79", "#c55a11", "#548235", "#7030a0", "#bf9000", "#2e75b6", "#7f7f7f")
_LABELS = {"auc": "td-AUC", "c_index": "Uno's C (truncated)", "brier": "Brier score", "ici": "ICI"}


def _years(days: float) -> str:
    return f"{days / _DAYS_PER_YEAR:.3g} y"


def _figure(rows: int, cols: int, *, width: float = 3.6, height: float = 3.0) -> tuple[Any, np.ndarray]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(np.asarray(fig.subplots(rows, cols, squeeze=False)))
    return fig, axes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _color(models: Sequence[str], model: str) -> str:
    return _COLORS[list(models).index(model) % len(_COLORS)]


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#666666", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def metric_png(
    metrics: pl.DataFrame, *, metric: str, event: str, models: Sequence[str], horizons: Sequence[float]
) -> bytes:
    """One panel per landmark: ``metric`` against the horizon (years) per model, with its CI band."""
    data = metrics.filter((pl.col("metric") == metric) & (pl.col("event") == event))
    landmarks = sorted(set(data["landmark_days"].to_list()))
    years = np.asarray(horizons, dtype=np.float64) / _DAYS_PER_YEAR
    pad = 0.08 * max(float(np.ptp(years)), 1.0) if years.size else 0.5
    fig, axes = _figure(1, max(1, len(landmarks)))
    for ax, s in zip(axes[0], landmarks or [None], strict=False):
        if s is None:
            _empty(ax, "no cells")
            continue
        panel = data.filter(pl.col("landmark_days") == s).sort("horizon_days")
        drawn = False
        for model in models:
            m = panel.filter(pl.col("model") == model)
            x = m["horizon_days"].to_numpy() / _DAYS_PER_YEAR
            y, lo, hi = (m[c].to_numpy().astype(float) for c in ("value", "lower", "upper"))
            if not np.isfinite(y).any():
                continue
            drawn = True
            c = _color(models, model)
            ax.plot(x, y, marker="o", color=c, label=model)
            ax.fill_between(x, lo, hi, color=c, alpha=0.15, linewidth=0)
        if metric in ("auc", "c_index"):
            ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle=":")
        ax.set_title(f"{_LABELS.get(metric, metric)} · {event} · landmark {_years(s)}", fontsize=9)
        ax.set_xlabel("horizon (years after the landmark)")
        if years.size:
            ax.set_xlim(float(years.min()) - pad, float(years.max()) + pad)
            ax.set_xticks(years)
        if drawn:
            ax.legend(fontsize=7, loc="best")
        else:
            _empty(ax, "not estimable at any horizon\n(see the status column)")
    return _png(fig)


def _grid_keys(frame: pl.DataFrame) -> tuple[list[float], list[float]]:
    return sorted(set(frame["landmark_days"].to_list())), sorted(set(frame["horizon_days"].to_list()))


def _panels(
    data: pl.DataFrame, axes: Any, *, event: str, landmarks: Sequence[float], horizons: Sequence[float]
) -> Iterator[tuple[Any, pl.DataFrame]]:
    """The landmark × horizon grid: titles every axis, marks empty cells, yields ``(ax, rows)`` for the others."""
    for i, s in enumerate(landmarks):
        for j, h in enumerate(horizons):
            ax = axes[i, j]
            panel = data.filter((pl.col("landmark_days") == s) & (pl.col("horizon_days") == h))
            ax.set_title(f"{event} · landmark {_years(s)} · horizon {_years(h)}", fontsize=8)
            if panel.height == 0:
                _empty(ax, "not estimable\n(few events or no follow-up)")
                continue
            yield ax, panel


def calibration_png(
    calibration: pl.DataFrame,
    *,
    event: str,
    models: Sequence[str],
    landmarks: Sequence[float],
    horizons: Sequence[float],
) -> bytes:
    """Landmarks × horizons: observed (Aalen–Johansen) vs mean predicted risk by group, and the smoothed curve."""
    data = calibration.filter(pl.col("event") == event)
    fig, axes = _figure(len(landmarks), len(horizons), width=3.2, height=3.2)
    for ax, panel in _panels(data, axes, event=event, landmarks=landmarks, horizons=horizons):
        top = float(np.nanmax(panel.select(pl.max_horizontal("predicted", "observed")).to_series().to_numpy()))
        top = min(1.0, max(0.05, 1.1 * top))
        ax.plot([0, top], [0, top], color="#999999", linewidth=0.8, linestyle="--")
        for model in models:
            m = panel.filter(pl.col("model") == model)
            if m.height == 0:
                continue
            c = _color(models, model)
            groups, curve = m.filter(pl.col("kind") == "group"), m.filter(pl.col("kind") == "curve")
            ax.plot(curve["predicted"], curve["observed"], color=c, linewidth=1.2)
            ax.scatter(groups["predicted"], groups["observed"], color=c, s=18, label=model, zorder=3)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("predicted risk")
        ax.set_ylabel("observed risk")
        ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def decision_png(
    curves: pl.DataFrame, *, event: str, models: Sequence[str], landmarks: Sequence[float], horizons: Sequence[float]
) -> bytes:
    """Landmarks × horizons: net benefit against the threshold probability, with treat-all and treat-none."""
    data = curves.filter(pl.col("event") == event)
    fig, axes = _figure(len(landmarks), len(horizons), width=3.4, height=3.0)
    for ax, panel in _panels(data, axes, event=event, landmarks=landmarks, horizons=horizons):
        ref = panel.filter(pl.col("model") == panel["model"][0]).sort("threshold")
        ax.plot(ref["threshold"], ref["treat_all"], color="#7f7f7f", linestyle="--", linewidth=1, label="treat all")
        ax.axhline(0.0, color="#000000", linewidth=0.8, label="treat none")
        for model in models:
            m = panel.filter(pl.col("model") == model).sort("threshold")
            if m.height:
                ax.plot(m["threshold"], m["net_benefit"], color=_color(models, model), linewidth=1.4, label=model)
        top = float(panel.select(pl.max_horizontal("net_benefit", "treat_all")).to_series().max() or 0.0)  # type: ignore[arg-type]
        ax.set_ylim(-0.05 - 0.1 * max(top, 0.01), 1.15 * max(top, 0.01))
        ax.set_xlabel("threshold probability")
        ax.set_ylabel("net benefit")
        ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def risk_distribution_png(
    predictions: pl.DataFrame, *, event: str, model: str, landmarks: Sequence[float], horizons: Sequence[float]
) -> bytes:
    """Landmarks × horizons: histograms of ``model``'s predicted risk by what was observed by the horizon."""
    data = predictions.filter((pl.col("event") == event) & (pl.col("model") == model))
    fig, axes = _figure(len(landmarks), len(horizons), width=3.4, height=2.8)
    status_colors = {"event": "#c00000", "competing event": "#bf9000", "event-free": "#1f4e79", "censored": "#a6a6a6"}
    for i, s in enumerate(landmarks):
        for j, h in enumerate(horizons):
            ax = axes[i, j]
            panel = data.filter((pl.col("landmark_days") == s) & (pl.col("horizon_days") == h))
            ax.set_title(f"{model} · {event} · landmark {_years(s)} · horizon {_years(h)}", fontsize=7)
            if panel.height == 0 or not np.isfinite(panel["risk"].to_numpy()).any():
                _empty(ax, "no predictions")
                continue
            by_h = pl.col("duration_days") <= h
            status = (
                pl.when(by_h & (pl.col("observed") == event))
                .then(pl.lit("event"))
                .when(by_h & pl.col("observed").is_not_null())
                .then(pl.lit("competing event"))
                .when(by_h)
                .then(pl.lit("censored"))
                .otherwise(pl.lit("event-free"))
            )
            labelled = panel.with_columns(status=status)
            risk = labelled["risk"].to_numpy()
            bins = np.linspace(0.0, max(0.05, float(np.nanmax(risk))) * 1.02, 21)
            for name, color in status_colors.items():
                r = labelled.filter(pl.col("status") == name)["risk"].to_numpy()
                if r.size:
                    ax.hist(r, bins=bins, histtype="step", linewidth=1.4, color=color, label=f"{name} ({r.size})")
            ax.set_xlabel("predicted risk")
            ax.set_ylabel("subjects")
            ax.legend(fontsize=6, loc="upper right")
    return _png(fig)
