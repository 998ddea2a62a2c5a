"""Vectorised generator of one block of synthetic subjects: latent table and MEDS events.

One code path serves :func:`~migpt_traj.datasets.synthetic.make_synthetic` (in memory) and
:func:`~migpt_traj.datasets.synthetic.stream_synthetic` (shard by shard). No per-subject Python loop: every
quantity is drawn for the whole block at once and expanded with ``np.repeat``. The order of the random draws is
part of the model (see ``SIMULATOR_VERSION``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from migpt_traj.datasets._sim_model import (
    LATENT_COLUMNS,
    hazard_base,
    loghaz,
    option_cdf,
    path_inverse,
    realized_z1,
    start_prob,
    treated_line,
    z_image,
    z_symptom,
)
from migpt_traj.datasets._sim_params import CAUSES, DAYS_PER_YEAR, SimulatorParams

__all__ = ["NOTE_TEMPLATES", "draw_decisions", "draw_latent", "draw_outcomes", "simulate_block"]

DAY_US = 86_400_000_000
_YEAR_US = DAYS_PER_YEAR * DAY_US

_OPENERS = ("Follow-up visit.", "Routine clinic review.", "Seen in hepatology clinic.")
#: Symptom phrases by level (0 = none ... 3 = severe), two wordings each.
_SYMPTOMS = (
    ("Patient reports no complaints.", "Feels well, no new symptoms."),
    ("Reports mild fatigue, otherwise well.", "Occasional tiredness, appetite preserved."),
    ("Persistent fatigue and generalised pruritus.", "Ongoing itching and poor sleep due to fatigue."),
    ("Severe fatigue and jaundice; abdominal swelling noted.", "Marked jaundice, severe fatigue and confusion."),
)
_PLANS = ("Plan: continue current management.", "Plan: repeat labs at next visit.", "Plan: review in clinic.")
#: Every note text, indexed ((level * 2 + wording) * 3 + opener) * 3 + plan.
NOTE_TEMPLATES: tuple[str, ...] = tuple(
    f"{opener} {symptom} {plan}"
    for wordings in _SYMPTOMS
    for symptom in wordings
    for opener in _OPENERS
    for plan in _PLANS
)


def _us(date: str) -> int:
    return int((dt.datetime.fromisoformat(date) - dt.datetime(1970, 1, 1)).total_seconds()) * 1_000_000


def draw_latent(
    rng: np.random.Generator, *, n: int, first_id: int, params: SimulatorParams, confounding: float
) -> dict[str, np.ndarray]:
    """Baseline latent parameters, censoring and the potential treatment start of ``n`` subjects."""
    probs = np.asarray(params.subtype_probs) / np.sum(params.subtype_probs)
    subtype = rng.choice(len(params.subtypes), size=n, p=probs).astype(np.int64)
    lat: dict[str, np.ndarray] = {
        "subject_id": np.arange(first_id, first_id + n, dtype=np.int64),
        "subtype": subtype,
        "female": (rng.random(n) < params.female_prob).astype(np.float64),
        "age_at_entry": np.clip(rng.normal(params.age_mean, params.age_sd, n), 18.0, 95.0),
        "z1_level": np.asarray(params.z1_level_mean)[subtype] + params.z1_level_sd * rng.standard_normal(n),
        "z1_slope": np.asarray(params.z1_slope_mean)[subtype] + params.z1_slope_sd * rng.standard_normal(n),
        "z2_level": params.z2_level_sd * rng.standard_normal(n),
        "z2_slope": params.z2_slope_mean + params.z2_slope_sd * rng.standard_normal(n),
        "z3_level": params.z3_level_sd * rng.standard_normal(n),
        "z3_slope": params.z3_slope_sd * rng.standard_normal(n),
    }
    start_us, end_us = _us(params.entry_start), _us(params.entry_end)
    entry_day = np.floor(rng.random(n) * (end_us - start_us) / DAY_US).astype(np.int64)
    lat["entry_us"] = start_us + entry_day * DAY_US
    admin = (_us(params.study_end) - lat["entry_us"]) / _YEAR_US
    lat["censor_years"] = np.minimum(admin, rng.exponential(1.0 / params.dropout_rate, n))
    draw_decisions(rng, lat, params, confounding)
    return lat


def draw_decisions(
    rng: np.random.Generator, lat: dict[str, np.ndarray], params: SimulatorParams, confounding: float
) -> None:
    """Potential treatment start (first review with a start) and option, on the untreated line, in place.

    Decisions are drawn at every scheduled review up to the latest possible end of follow-up, whether or not
    the subject is still in follow-up then; only starts before the end of follow-up are recorded as events.
    """
    n = lat["z1_level"].size
    subtype = lat["subtype"]
    span = (_us(params.study_end) - _us(params.entry_start)) / _YEAR_US
    n_reviews = int(np.ceil(span / params.review_interval_years))
    tau = params.review_interval_years * np.arange(1, n_reviews + 1)
    z1_tau = lat["z1_level"][:, None] + lat["z1_slope"][:, None] * tau[None, :]
    hit = rng.random((n, n_reviews)) < start_prob(params, confounding, z1_tau)
    started = hit.any(axis=1)
    lat["start_years"] = np.where(started, tau[np.argmax(hit, axis=1)], np.inf)
    choice = 1 + (rng.random(n)[:, None] > option_cdf(params)[subtype]).sum(axis=1)
    lat["start_option"] = np.where(started, choice, 0).astype(np.int64)


def draw_outcomes(rng: np.random.Generator, lat: dict[str, np.ndarray], params: SimulatorParams) -> None:
    """Latent first event time and cause on each subject's potential path (exact inversion), in place."""
    base = hazard_base(lat, params)
    sub, opt = lat["subtype"], lat["start_option"]
    start = lat["start_years"]
    a0, b0 = loghaz(base.a, base.b, base.beta1, lat["z1_level"][:, None], lat["z1_slope"][:, None], 0.0)
    line_i, line_s = treated_line(
        lat["z1_level"],
        lat["z1_slope"],
        np.where(np.isfinite(start), start, 0.0),
        params.slope_effects()[sub, opt],
    )
    a1, b1 = loghaz(base.a, base.b, base.beta1, line_i[:, None], line_s[:, None], params.log_hr()[sub, opt])
    latent_times = path_inverse(a0, b0, a1, b1, start[:, None], rng.exponential(size=(lat["z1_level"].size, 2)))
    lat["event_years"] = latent_times.min(axis=1)
    lat["event_cause"] = np.where(np.isfinite(lat["event_years"]), latent_times.argmin(axis=1), -1)


def _cumcount(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c-1 for each count c, concatenated."""
    total = int(counts.sum())
    return np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)


def _visits(
    rng: np.random.Generator, lat: dict[str, np.ndarray], params: SimulatorParams, t_obs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visits sorted by subject then time: (subject index, years, kind 0 = entry / 1 = review / 2 = unscheduled).

    All visits are strictly before the end of follow-up ``t_obs``.
    """
    n = t_obs.size
    n_rev = np.maximum(np.ceil(t_obs / params.review_interval_years).astype(np.int64) - 1, 0)
    rev_idx = np.repeat(np.arange(n), n_rev)
    rev_u = params.review_interval_years * (1 + _cumcount(n_rev))
    n_cand = rng.poisson(params.visit_rate_high * t_obs)
    cand_idx = np.repeat(np.arange(n), n_cand)
    cand_u = rng.random(cand_idx.size) * t_obs[cand_idx]
    z1 = realized_z1(lat, params, cand_idx, cand_u)
    rate = params.visit_rate_low + (params.visit_rate_high - params.visit_rate_low) / (
        1.0 + np.exp(-params.visit_rate_scale * (z1 - params.visit_rate_center))
    )
    keep = rng.random(cand_idx.size) * params.visit_rate_high < rate
    idx = np.concatenate([np.arange(n), rev_idx, cand_idx[keep]])
    u = np.concatenate([np.zeros(n), rev_u, cand_u[keep]])
    kind = np.concatenate([np.zeros(n, np.int64), np.ones(rev_idx.size, np.int64), np.full(int(keep.sum()), 2)])
    order = np.lexsort((u, idx))
    return idx[order], u[order], kind[order]


def _masked(values: np.ndarray, valid: np.ndarray) -> pl.Series:
    """A polars series from numpy values with nulls where ``valid`` is false."""
    return pl.from_arrow(pa.array(values, mask=~valid))  # type: ignore[return-value]


@dataclass(frozen=True)
class _VisitItems:
    """What each visit records: item columns are the labs (in ``params.labs`` order), note, image, start."""

    present: np.ndarray  # (V, L + 3) bool
    values: np.ndarray  # (V, L + 3) float32, lab values (nan elsewhere)
    template: np.ndarray  # (V,) index into NOTE_TEMPLATES
    note_delay: np.ndarray  # (V,) days
    image_delay: np.ndarray  # (V,) days
    embedding: np.ndarray  # (V, dim) float32


def _draw_items(
    rng: np.random.Generator,
    lat: dict[str, np.ndarray],
    params: SimulatorParams,
    idx: np.ndarray,
    u: np.ndarray,
    kind: np.ndarray,
) -> _VisitItems:
    n_visits, n_labs = idx.size, len(params.labs)
    z1 = realized_z1(lat, params, idx, u)
    present = np.zeros((n_visits, n_labs + 3), dtype=bool)
    values = np.full((n_visits, n_labs + 3), np.nan, dtype=np.float32)
    for j, lab in enumerate(params.labs):
        present[:, j] = rng.random(n_visits) >= lab.missing_prob
        values[:, j] = lab.observe(z1, rng.standard_normal(n_visits))
    present[:, n_labs] = rng.random(n_visits) < np.asarray(params.note_prob)[kind]
    score = z_symptom(lat, idx, u) + params.note_noise_sd * rng.standard_normal(n_visits)
    level = np.searchsorted(np.asarray(params.note_cutpoints), score)
    wording, opener, plan = rng.integers(0, 2, n_visits), rng.integers(0, 3, n_visits), rng.integers(0, 3, n_visits)
    lo, hi = params.note_delay_days
    note_delay = lo + (hi - lo) * rng.random(n_visits)
    present[:, n_labs + 1] = rng.random(n_visits) < np.asarray(params.image_prob)[kind]
    loading, offset = params.embedding_map()
    z_img = np.stack([z1, z_image(lat, idx, u)], axis=1).astype(np.float32)
    embedding = rng.standard_normal((n_visits, loading.shape[0]), dtype=np.float32)
    embedding *= np.float32(params.embedding_noise_sd)
    embedding += z_img @ loading.T.astype(np.float32) + offset.astype(np.float32)
    image_delay = rng.gamma(2.0, params.image_delay_mean_days / 2.0, n_visits)
    present[:, n_labs + 2] = (kind == 1) & (u == lat["start_years"][idx])
    template = ((level * 2 + wording) * 3 + opener) * 3 + plan
    return _VisitItems(present, values, template, note_delay, image_delay, embedding)


def _codes(params: SimulatorParams) -> list[str]:
    """Every code in the order used for integer code indices while assembling."""
    return [
        "SEX//male",
        "SEX//female",
        *(f"SUBTYPE//{g}" for g in params.subtypes),
        "MEDS_BIRTH",
        *(lab.code for lab in params.labs),
        params.note_code,
        params.image_code,
        *(f"TREATMENT//{o}" for o in params.options),
        *CAUSES,
        "END_OF_FOLLOWUP",
    ]


def _assemble(
    lat: dict[str, np.ndarray],
    params: SimulatorParams,
    idx: np.ndarray,
    u: np.ndarray,
    items: _VisitItems,
    t_obs: np.ndarray,
    observed: np.ndarray,
) -> pl.DataFrame:
    """MEDS events, each row scattered straight into its final (sorted) position."""
    n, n_labs = t_obs.size, len(params.labs)
    codes = _codes(params)
    c_subtype, c_birth = 2, 2 + len(params.subtypes)
    c_item = c_birth + 1  # labs, note, image follow in order
    c_treat = c_item + n_labs + 2
    c_cause = c_treat + len(params.options)
    item_code = np.broadcast_to(c_item + np.arange(n_labs + 3), items.present.shape).copy()
    item_code[:, n_labs + 2] = c_treat + lat["start_option"][idx] - 1

    # Row of an item: its subject's first row + 3 fixed rows + rows of the subject's earlier visits + its rank.
    per_visit = items.present.sum(axis=1)
    visit_rows = np.bincount(idx, weights=per_visit, minlength=n).astype(np.int64)
    rows = 3 + visit_rows + observed + 1
    start = np.cumsum(rows) - rows
    before_visit = np.cumsum(per_visit) - per_visit - (np.cumsum(visit_rows) - visit_rows)[idx]
    vi, ji = np.nonzero(items.present)
    item_pos = start[idx[vi]] + 3 + before_visit[vi] + (np.cumsum(items.present, axis=1) - 1)[vi, ji]
    ev = np.flatnonzero(observed)
    outcome_pos, end_pos = start[ev] + rows[ev] - 2, start + rows - 1
    total = int(rows.sum())

    def place(*parts: tuple[np.ndarray, np.ndarray | int], fill: float | int, dtype: type) -> np.ndarray:
        out: np.ndarray = np.full(total, fill, dtype=dtype)
        for where, what in parts:
            out[where] = what
        return out

    def us(years: np.ndarray) -> np.ndarray:
        return np.round(years * _YEAR_US).astype(np.int64)

    entry = lat["entry_us"]
    code = place(
        (start, lat["female"].astype(np.int64)),
        (start + 1, c_subtype + lat["subtype"]),
        (start + 2, c_birth),
        (item_pos, item_code[vi, ji]),
        (outcome_pos, c_cause + lat["event_cause"][ev]),
        (end_pos, len(codes) - 1),
        fill=0,
        dtype=np.int64,
    )
    time = place(
        (start + 2, entry - us(lat["age_at_entry"])),
        (item_pos, entry[idx[vi]] + us(u[vi])),
        (outcome_pos, entry[ev] + us(lat["event_years"][ev])),
        (end_pos, entry + us(t_obs)),
        fill=0,
        dtype=np.int64,
    )
    is_note, is_image = ji == n_labs, ji == n_labs + 1
    delay_days = np.where(is_note, items.note_delay[vi], np.where(is_image, items.image_delay[vi], 0.0))
    available = time.copy()
    available[item_pos] += np.round(delay_days * DAY_US).astype(np.int64)
    timed = np.ones(total, dtype=bool)
    timed[start], timed[start + 1] = False, False
    numeric = place((item_pos, items.values[vi, ji]), fill=np.nan, dtype=np.float32)
    note = place((item_pos[is_note], items.template[vi[is_note]]), fill=-1, dtype=np.int64)
    image = place((item_pos[is_image], 1), fill=0, dtype=np.int64).astype(bool)
    offsets = np.concatenate([[0], np.cumsum(image * items.embedding.shape[1])]).astype(np.int64)
    flat = items.embedding[vi[is_image]].reshape(-1)
    return pl.DataFrame(
        {
            "subject_id": pl.Series(np.repeat(lat["subject_id"], rows), dtype=pl.Int64),
            "time": _masked(time, timed).cast(pl.Datetime("us")),
            "code": pl.Series(codes, dtype=pl.String).gather(pl.Series(code, dtype=pl.UInt32)),
            "numeric_value": pl.Series(numeric, dtype=pl.Float32, nan_to_null=True),
            "text_value": pl.Series(NOTE_TEMPLATES, dtype=pl.String).gather(
                _masked(np.maximum(note, 0).astype(np.uint32), note >= 0)
            ),
            "embedding": pl.from_arrow(
                pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat), mask=pa.array(~image))
            ).cast(pl.List(pl.Float32)),
            "available_time": _masked(available, timed).cast(pl.Datetime("us")),
        }
    )


def simulate_block(
    *, seed: int, block: int, n: int, first_id: int, params: SimulatorParams, confounding: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Simulate ``n`` subjects with ids ``first_id, first_id + 1, ...`` from the seed ``[seed, block]``.

    Rows are placed straight into their final order (no sort): per subject, ``SEX//…``, ``SUBTYPE//…`` (null
    time), ``MEDS_BIRTH``, then each visit in time order with its labs (in ``params.labs`` order), note,
    imaging study and, at a review where one starts, the ``TREATMENT//…`` row, then the outcome (if observed)
    and ``END_OF_FOLLOWUP``.

    Returns:
        ``(events, latent)``: MEDS events with ``available_time`` and ``embedding`` columns, and the latent
        table with :data:`LATENT_COLUMNS`.
    """
    rng = np.random.default_rng([seed, block])
    lat = draw_latent(rng, n=n, first_id=first_id, params=params, confounding=confounding)
    draw_outcomes(rng, lat, params)
    t_obs = np.minimum(lat["event_years"], lat["censor_years"])
    observed = lat["event_years"] <= lat["censor_years"]
    idx, u, kind = _visits(rng, lat, params, t_obs)
    items = _draw_items(rng, lat, params, idx, u, kind)
    events = _assemble(lat, params, idx, u, items, t_obs, observed)
    return events, pl.DataFrame({c: lat[c] for c in LATENT_COLUMNS})
