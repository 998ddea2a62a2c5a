"""Projected future states: forecasts of every numeric measurement and of the image embedding after a prediction time.

The model's forecast head (:mod:`migpt_traj.model.forecast_head`) gives a Gaussian for each channel on the
preprocessor's normalised scale (a lab's normal score, an image dimension's train standardisation). This module turns
it into values in the code's **original units**: quantiles map exactly through the monotone inverse transform (so
``lower`` / ``upper`` are the central ``level`` predictive interval and ``median`` its median), and ``mean`` is the
mean of the transformed distribution (Gauss-Hermite quadrature; for skewed labs it sits above the median).

A forecast is of the value a measurement taken at ``t + d`` would show, given the subject is still in follow-up then
(the observations the head was trained on), from what was available at ``t`` (``<=``) only.

Baselines for evaluation, on the same as-of history: last value carried forward and the per-patient least-squares
linear trend in time (last value with fewer than two time points).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch
from scipy.special import ndtri

from migpt_traj.data.cohort import DAY_US, Cohort, Split
from migpt_traj.errors import ConfigError, ModelStateError, ValueRangeError, did_you_mean

if TYPE_CHECKING:
    from migpt_traj.api import TrajectoryModel

__all__ = ["forecast", "forecast_at", "future_observations", "last_value_forecast", "linear_trend_forecast"]

_KEYS = ["subject_id", "prediction_time", "code", "dim"]
_N_QUADRATURE = 24
_FIT_COLUMNS = ["n", "last", "mean_x", "mean_y", "sxy", "sxx", "slope"]


def _channel_table(model: TrajectoryModel, cohort: Cohort) -> pl.DataFrame:
    """``channel, code, dim`` of every forecast channel with train rows (image dimensions: ``dim`` 0..D-1)."""
    module = model._require_fit()
    head = module.forecast_head
    if head is None:
        raise ModelStateError("This model has no forecast head; fit it with this version of migpt_traj.")
    assert model.preprocessor is not None
    pre = model.preprocessor
    lab_ids = np.flatnonzero(module.channel_of_code.cpu().numpy() >= 0)
    lab_ids = lab_ids[np.argsort(module.channel_of_code.cpu().numpy()[lab_ids])]
    image_codes = sorted(c for c in pre.codes if c.startswith(cohort.conventions.image_prefix))
    image_code = "|".join(image_codes) if image_codes else cohort.conventions.image_prefix.rstrip("/")
    n_img = module.image_dim
    table = pl.DataFrame(
        {
            "channel": np.arange(lab_ids.size + n_img, dtype=np.int64),
            "code": [pre.codes[i] for i in lab_ids] + [image_code] * n_img,
            "dim": pl.Series([None] * lab_ids.size + list(range(n_img)), dtype=pl.Int64),
        }
    )
    return table.filter(pl.Series(head.n_train.cpu().numpy() > 0))


def _select_channels(channels: pl.DataFrame, codes: Sequence[str] | None) -> pl.DataFrame:
    if codes is None:
        return channels
    if isinstance(codes, str):
        codes = [codes]
    known = channels["code"].unique().to_list()
    for code in codes:
        if code not in known:
            raise ConfigError(
                f"Cannot forecast code {code!r}: the model forecasts {sorted(known)}.{did_you_mean(code, known)}"
            )
    return channels.filter(pl.col("code").is_in(list(codes)))


def _checked_days(at: Sequence[float]) -> np.ndarray:
    if isinstance(at, str | bytes):
        raise ConfigError(f"'at' must be a list of days after the prediction time, not the string {at!r}.")
    try:
        days = np.asarray(list(at), dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"'at' must be numbers of days; got {at!r} ({err}).") from err
    if days.ndim != 1 or days.size == 0:
        raise ConfigError(f"'at' must be a non-empty list of days; got {list(at)!r}.")
    bad = days[~np.isfinite(days) | (days < 0)]
    if bad.size:
        raise ValueRangeError(f"'at' must hold finite days >= 0 after the prediction time; got {bad[0]}.")
    return days


def _checked_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ValueRangeError(f"'level' must be in (0, 1), e.g. 0.8 for the 10 %-90 % interval; got {level}.")
    return float(level)


def _to_units(
    model: TrajectoryModel, rows: pl.DataFrame, mu: np.ndarray, sigma: np.ndarray, level: float
) -> pl.DataFrame:
    """Add ``mean, median, lower, upper`` in original units to ``rows`` (columns ``code, dim``)."""
    assert model.preprocessor is not None
    pre = model.preprocessor
    z = float(ndtri(0.5 + level / 2))
    is_img = rows["dim"].is_not_null().to_numpy()
    codes = rows["code"].to_numpy().astype(object)
    nodes, weights = np.polynomial.hermite.hermgauss(_N_QUADRATURE)
    out = {k: np.empty(mu.size) for k in ("mean", "median", "lower", "upper")}
    lab = ~is_img
    if lab.any():
        m, s, c = mu[lab], sigma[lab], codes[lab]
        grid = m[:, None] + np.sqrt(2.0) * s[:, None] * nodes[None, :]
        values = pre.denormalise_values(np.repeat(c, nodes.size), grid.reshape(-1)).reshape(grid.shape)
        out["mean"][lab] = values @ weights / np.sqrt(np.pi)
        trio = pre.denormalise_values(np.repeat(c, 3), np.column_stack([m, m - z * s, m + z * s]).reshape(-1))
        out["median"][lab], out["lower"][lab], out["upper"][lab] = trio.reshape(-1, 3).T
    if is_img.any():
        d = rows["dim"].to_numpy()[is_img].astype(np.int64)
        scale, shift = np.asarray(pre.image_std)[d], np.asarray(pre.image_mean)[d]
        m, s = mu[is_img] * scale + shift, sigma[is_img] * scale
        out["mean"][is_img] = out["median"][is_img] = m
        out["lower"][is_img], out["upper"][is_img] = m - z * s, m + z * s
    return rows.with_columns(**{k: pl.Series(v, dtype=pl.Float64) for k, v in out.items()})


@torch.inference_mode()
def _predict_rows(
    model: TrajectoryModel, cohort: Cohort, samples: pl.DataFrame, pairs: pl.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-scale ``(mu, sigma)`` for ``pairs`` (``sample, channel, target_days``) of ``samples``."""
    from migpt_traj.api import _sequential_batches

    module = model._require_fit()
    module.eval()
    table = model._tensorize(
        cohort, samples.select("subject_id", pl.col("prediction_time").alias("cutoff_time"))
    )  # one query per sample, at its prediction time
    sample = torch.from_numpy(pairs["sample"].to_numpy().astype(np.int64))
    channel = torch.from_numpy(pairs["channel"].to_numpy().astype(np.int64))
    delta = torch.from_numpy(pairs["target_days"].to_numpy().astype(np.float32))
    mu, sigma = np.empty(pairs.height), np.empty(pairs.height)
    order = torch.argsort(sample, stable=True)
    starts = torch.searchsorted(sample[order], torch.arange(table.n_samples + 1))
    threads = torch.get_num_threads()
    if table.n_samples <= 16:
        torch.set_num_threads(1)  # as in TrajectoryModel._predict_hazards: tiny tensors, no thread wake-ups
    try:
        for batch in _sequential_batches(table):
            rows = batch["q_row"]  # one query per sample: query row = sample index
            local = torch.cat([torch.full((int(starts[r + 1] - starts[r]),), i) for i, r in enumerate(rows.tolist())])
            picked = torch.cat([order[starts[r] : starts[r + 1]] for r in rows.tolist()])
            if picked.numel() == 0:
                continue
            m, log_s = module.forecast(batch, local, channel[picked], delta[picked])
            mu[picked.numpy()] = m.double().cpu().numpy()
            sigma[picked.numpy()] = log_s.double().exp().cpu().numpy()
    finally:
        torch.set_num_threads(threads)
    return mu, sigma


def forecast(
    model: TrajectoryModel,
    cohort: Cohort,
    *,
    at: Sequence[float],
    landmarks: Sequence[float] | None = None,
    prediction_times: pl.DataFrame | None = None,
    codes: Sequence[str] | None = None,
    split: Split | None = None,
    level: float = 0.8,
) -> pl.DataFrame:
    """Forecast every numeric measurement (and the image embedding) ``at`` days after each prediction time.

    Args:
        model: a fitted :class:`~migpt_traj.TrajectoryModel`.
        cohort: the events; forecasts use those available at the prediction time (``<=``) only.
        at: days after the prediction time (>= 0); every sample gets every value.
        landmarks: days after time zero (every subject at risk there), or
        prediction_times: frame ``subject_id, prediction_time`` (each without an outcome at or before it).
        codes: measurement codes to forecast (default: every one the model learnt to forecast); the image code
            (e.g. ``"IMAGE//ct"``) selects every embedding dimension.
        split: restrict to one split's subjects.
        level: coverage of the central predictive interval ``[lower, upper]`` (0.8: 10 % to 90 % quantiles).

    Returns:
        polars frame ``subject_id, prediction_time, landmark_days, code, dim, target_days, mean, median, lower,
        upper``: values in the code's original units; ``dim`` is the image-embedding dimension (null for
        measurements); ``target_days`` = the ``at`` value (days after the prediction time).

    Raises:
        ConfigError: ``at`` is not a list of numbers, or a code is not forecast by the model.
        ValueRangeError: a day is negative or not finite, or ``level`` is not in (0, 1).
    """
    days = _checked_days(at)
    level = _checked_level(level)
    channels = _select_channels(_channel_table(model, cohort), codes)
    samples = model._prediction_samples(cohort, landmarks, prediction_times, split).with_row_index("sample")
    grid = samples.select("sample").join(channels, how="cross").join(pl.DataFrame({"target_days": days}), how="cross")
    mu, sigma = _predict_rows(model, cohort, samples, grid)
    rows = grid.join(samples, on="sample", how="left", maintain_order="left")
    out = _to_units(model, rows, mu, sigma, level)
    return out.select(
        "subject_id",
        "prediction_time",
        "landmark_days",
        "code",
        "dim",
        "target_days",
        "mean",
        "median",
        "lower",
        "upper",
    ).sort("subject_id", "prediction_time", "code", "dim", "target_days", nulls_last=False)


def forecast_at(model: TrajectoryModel, cohort: Cohort, targets: pl.DataFrame, *, level: float = 0.8) -> pl.DataFrame:
    """Forecasts at arbitrary per-row times: for each row of ``targets`` (``subject_id, prediction_time, code, dim,
    target_days``; other columns are kept) the forecast of that code ``target_days`` after that prediction time.

    Rows whose code the model does not forecast, or whose subject had an outcome at or before the prediction
    time, are dropped. Columns ``mean, median, lower, upper`` as in :func:`forecast`.
    """
    level = _checked_level(level)
    channels = _channel_table(model, cohort)
    targets = targets.with_columns(pl.col("dim").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us")))
    keys = targets.select("subject_id", "prediction_time").unique().sort("subject_id", "prediction_time")
    samples = model._prediction_samples(cohort, None, keys, None).with_row_index("sample")
    pairs = targets.join(channels, on=["code", "dim"], how="inner", nulls_equal=True).join(
        samples.select("sample", "subject_id", "prediction_time"), on=["subject_id", "prediction_time"], how="inner"
    )
    mu, sigma = _predict_rows(model, cohort, samples, pairs)
    return _to_units(model, pairs, mu, sigma, level).drop("sample", "channel")


# ---------------------------------------------------------------------- observations and baselines
def _long_history(cohort: Cohort, codes: Sequence[str] | None) -> pl.DataFrame:
    """Timed numeric measurements and image-embedding dimensions: ``subject_id, code, dim, time, avail, value``
    (``dim`` -1 for measurements, internally, so that joins match)."""
    conv = cohort.conventions
    ev = cohort.events.filter(pl.col("time").is_not_null())
    avail = pl.coalesce("available_time", "time") if "available_time" in ev.columns else pl.col("time")
    non_lab = (conv.treatment_prefix, conv.image_prefix, conv.note_prefix)
    labs = ev.filter(
        pl.col("numeric_value").is_not_null() & ~pl.any_horizontal(pl.col("code").str.starts_with(p) for p in non_lab)
    ).select(
        "subject_id",
        "code",
        pl.lit(-1, dtype=pl.Int64).alias("dim"),
        "time",
        avail.alias("avail"),
        pl.col("numeric_value").cast(pl.Float64).alias("value"),
    )
    parts = [labs]
    if "embedding" in ev.columns:
        img = ev.filter(pl.col("embedding").is_not_null() & pl.col("code").str.starts_with(conv.image_prefix))
        parts.append(
            img.select("subject_id", "code", "time", avail.alias("avail"), pl.col("embedding").alias("value"))
            .with_columns(pl.int_ranges(0, pl.col("value").list.len(), dtype=pl.Int64).alias("dim"))
            .explode("value", "dim")
            .select("subject_id", "code", "dim", "time", "avail", pl.col("value").cast(pl.Float64))
        )
    history = pl.concat(parts)
    return history if codes is None else history.filter(pl.col("code").is_in(list(codes)))


def future_observations(
    cohort: Cohort,
    samples: pl.DataFrame,
    *,
    horizon_days: float = 1095.75,
    codes: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Observed values after each sample's prediction time: event time in ``(t, t + horizon_days]``.

    Args:
        samples: frame ``subject_id, prediction_time``.

    Returns:
        ``subject_id, prediction_time, code, dim, target_days, value`` (original units; ``dim`` null for
        measurements, the embedding dimension for images).
    """
    hist = _long_history(cohort, codes)
    keys = samples.select(pl.col("subject_id").cast(pl.Int64), pl.col("prediction_time").cast(pl.Datetime("us")))
    delta = (pl.col("time") - pl.col("prediction_time")).dt.total_microseconds() / DAY_US
    return (
        keys.join(hist, on="subject_id", how="inner")
        .with_columns(delta.alias("target_days"))
        .filter((pl.col("target_days") > 0) & (pl.col("target_days") <= horizon_days))
        .select(
            "subject_id",
            "prediction_time",
            "code",
            pl.when(pl.col("dim") >= 0).then(pl.col("dim")).alias("dim"),
            "target_days",
            "value",
        )
        .sort("subject_id", "prediction_time", "code", "dim", "target_days", nulls_last=False)
    )


def _as_of_fits(cohort: Cohort, targets: pl.DataFrame) -> pl.DataFrame:
    """Per ``(subject, prediction time, code, dim)``: the last value available at ``t`` and the least-squares line
    in days relative to ``t`` (``n, last, mean_x, mean_y, slope``)."""
    keys = targets.select(
        pl.col("subject_id").cast(pl.Int64),
        pl.col("prediction_time").cast(pl.Datetime("us")),
        "code",
        pl.col("dim").cast(pl.Int64).fill_null(-1),
    ).unique()
    hist = _long_history(cohort, keys["code"].unique().to_list())
    x = (pl.col("time") - pl.col("prediction_time")).dt.total_microseconds() / DAY_US
    seen = (
        keys.join(hist, on=["subject_id", "code", "dim"], how="inner")
        .filter(pl.col("avail") <= pl.col("prediction_time"))
        .with_columns(x.alias("x"))
    )
    fits = seen.group_by(["subject_id", "prediction_time", "code", "dim"]).agg(
        pl.len().alias("n"),
        pl.col("value").sort_by("time").last().alias("last"),
        pl.col("x").mean().alias("mean_x"),
        pl.col("value").mean().alias("mean_y"),
        ((pl.col("x") - pl.col("x").mean()) * (pl.col("value") - pl.col("value").mean())).sum().alias("sxy"),
        ((pl.col("x") - pl.col("x").mean()) ** 2).sum().alias("sxx"),
    )
    return fits.with_columns(
        pl.when(pl.col("sxx") > 1e-9).then(pl.col("sxy") / pl.col("sxx")).otherwise(None).alias("slope")
    )


def _with_fit(cohort: Cohort, targets: pl.DataFrame) -> pl.DataFrame:
    fits = _as_of_fits(cohort, targets)
    return (
        targets.with_columns(
            pl.col("prediction_time").cast(pl.Datetime("us")), pl.col("dim").cast(pl.Int64).fill_null(-1)
        )
        .join(fits, on=_KEYS, how="left", maintain_order="left")
        .with_columns(pl.when(pl.col("dim") >= 0).then(pl.col("dim")).alias("dim"))
    )


def last_value_forecast(cohort: Cohort, targets: pl.DataFrame) -> pl.DataFrame:
    """Last value carried forward: ``targets`` (``subject_id, prediction_time, code, dim, target_days``) plus
    ``prediction`` = the last value of that code available at the prediction time (``<=``; null when none)."""
    out = _with_fit(cohort, targets)
    return out.with_columns(pl.col("last").alias("prediction")).drop(
        "n", "last", "mean_x", "mean_y", "sxy", "sxx", "slope"
    )


def linear_trend_forecast(cohort: Cohort, targets: pl.DataFrame) -> pl.DataFrame:
    """Per-patient linear trend: the least-squares line of that code's available values (``<=`` the prediction
    time) against time, evaluated ``target_days`` after the prediction time; the last value where fewer than two
    distinct times were seen. Adds ``prediction`` to ``targets``."""
    out = _with_fit(cohort, targets)
    line = pl.col("mean_y") + pl.col("slope") * (pl.col("target_days") - pl.col("mean_x"))
    return out.with_columns(
        pl.when(pl.col("slope").is_not_null()).then(line).otherwise(pl.col("last")).alias("prediction")
    ).drop(_FIT_COLUMNS)
