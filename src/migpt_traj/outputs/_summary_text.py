"""The words of a patient state: one deterministic paragraph and a Markdown page with the tables behind it.

Rounding is fixed: risks in percent with one decimal, lab values and forecasts with 4 significant digits, trends,
distances and attributions with 3 significant digits; dates ISO 8601 (``YYYY-MM-DD``, with ``Thh:mm`` when the
time is not midnight); horizons in years when a whole or half number of years (a year is 365.25 days), else in
days. The same state always gives the same text.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from migpt_traj.durations import DAYS_PER_YEAR
from migpt_traj.outputs._summary_records import LabSummary, RiskPoint, TokenAttribution

if TYPE_CHECKING:
    from migpt_traj.outputs.summary import PatientState

__all__ = ["date", "horizon", "markdown", "paragraph", "percent"]

_TOP = 5


def percent(p: float) -> str:
    return f"{100 * p:.1f} %"


def horizon(days: float) -> str:
    years = days / DAYS_PER_YEAR
    if abs(2 * years - round(2 * years)) < 1e-9 and years > 0:
        return f"{years:g} y"
    return f"{days:g} days"


def date(t: dt.datetime | None) -> str:
    if t is None:
        return "static"
    if (t.hour, t.minute, t.second, t.microsecond) == (0, 0, 0, 0):
        return t.date().isoformat()
    return t.isoformat(timespec="minutes")


def _num(v: float) -> str:
    return f"{v:.4g}"


def _signed(v: float) -> str:
    return f"{v:+.3g}"


def _token(a: TokenAttribution) -> str:
    when = date(a.time)
    if a.kind == "note":
        snippet = (a.text or "")[:40]
        return f'{a.code} note ({when}) "{snippet}"'
    if a.kind == "image":
        return f"{a.code} study ({when})"
    if a.value is not None:
        return f"{a.code} = {_num(a.value)} ({when})"
    return f"{a.code} ({when})"


def _risk_sentence(state: PatientState) -> str:
    parts = []
    for h in state.horizons_days:
        each = ", ".join(f"{r.event} {percent(r.risk)}" for r in state.risks if r.horizon_days == h)
        parts.append(f"within {horizon(h)}: {each}")
    return "Risk " + "; ".join(parts) + "."


def _trajectory_sentence(state: PatientState) -> str:
    event, h = state.outcomes[0], state.horizons_days[0]
    points: Sequence[RiskPoint] = [p for p in state.trajectory if p.event == event and p.horizon_days == h]
    if len(points) < 2:
        return f"No earlier risk to compare with (the record has no input event before {date(state.prediction_time)})."
    first, last = points[0], points[-1]
    peak = max(points, key=lambda p: (p.risk, -p.days))
    return (
        f"Over {len(points) - 1} updates since {date(first.time)}, the risk of {event} within {horizon(h)} went "
        f"from {percent(first.risk)} to {percent(last.risk)} (highest {percent(peak.risk)} on {date(peak.time)})."
    )


def _lab(lab: LabSummary, level: float | None) -> str:
    text = f"{lab.code} {_num(lab.latest_value)} on {date(lab.latest_time)}"
    if lab.trend_per_year is not None:
        text += f" (trend {_signed(lab.trend_per_year)} per year over {lab.trend_points} points in the last year)"
    else:
        text += f" (no trend: {lab.trend_points} point{'s' if lab.trend_points != 1 else ''} in the last year)"
    if lab.forecast and level is not None:
        f = lab.forecast[-1]
        interval = f" [{_num(f.lower)}, {_num(f.upper)}]" if f.lower is not None and f.upper is not None else ""
        text += f", forecast in {horizon(f.target_days)} {_num(f.mean)}{interval}"
    return text


def _labs_sentence(state: PatientState) -> str:
    if not state.labs:
        return "No lab measured by the prediction time."
    level = state.forecast_level
    head = "Labs (latest value"
    head += f"; forecasts with {100 * level:g} % intervals)" if level is not None else ")"
    return head + ": " + "; ".join(_lab(lab, level) for lab in state.labs) + "."


def _imaging_sentence(state: PatientState) -> str:
    studies = [e for e in state.timeline if e.kind == "image"]
    if not studies:
        return ""
    text = f"Imaging: {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}"
    if state.imaging_changes:
        c = max(state.imaging_changes, key=lambda c: c.to_time)
        cos = f", cosine distance {c.cosine:.3g}" if c.cosine is not None else ""
        text += (
            f"; latest change ({c.code}, {date(c.from_time)} to {date(c.to_time)}): embedding distance "
            f"{c.euclidean:.3g}{cos}"
        )
    return text + "."


def _treatment_sentence(state: PatientState) -> str:
    treatments = [e for e in state.timeline if e.kind == "treatment"]
    if not treatments:
        return ""
    items = [
        f"{e.code} on {date(e.time)}" + (f" (dose {_num(e.value)})" if e.value is not None else "") for e in treatments
    ]
    return "Treatments started: " + ", ".join(items) + "."


def _attribution_sentence(state: PatientState) -> str:
    a = state.attribution
    target = f"the log risk of {a.event} within {horizon(a.horizon_days)}"
    top = [t for t in a.top(_TOP) if t.attribution != 0.0]
    if not top:
        return f"No value, image or note input moved {target}."
    items = "; ".join(f"{_token(t)} {_signed(t.attribution)}" for t in top)
    return (
        f"Most influential inputs for {target} (integrated gradients; positive raises the risk): {items}. With every "
        f"value, image and note at its typical level the risk would be {percent(math.exp(a.baseline_log_risk))} "
        f"instead of {percent(math.exp(a.log_risk))}; codes present and times are not attributed."
    )


def paragraph(state: PatientState) -> str:
    """The summary paragraph (module docstring for the rounding rules)."""
    age = f", age {state.age_years:.1f} y" if state.age_years is not None else ""
    opening = (
        f"Model-based estimate for subject {state.subject_id} as of {date(state.prediction_time)} "
        f"({state.days_since_time_zero:.1f} days after time zero, {date(state.time_zero)}{age})."
    )
    interval = "No intervals (single model fit)." if all(r.lower is None for r in state.risks) else ""
    in_sample = "The model was trained on this subject (train split): an in-sample estimate."
    sentences = [
        opening,
        in_sample if state.split == "train" else "",
        _risk_sentence(state),
        interval,
        _trajectory_sentence(state),
        _labs_sentence(state),
        _imaging_sentence(state),
        _treatment_sentence(state),
        _attribution_sentence(state),
    ]
    return " ".join(s for s in sentences if s)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(state: PatientState) -> str:
    """A Markdown page: title, paragraph, then risk, lab, imaging-change and attribution tables."""
    parts = [
        f"# Patient state: subject {state.subject_id} as of {date(state.prediction_time)}",
        "",
        paragraph(state),
        "",
        f"*Model-based estimate.* {state.interval_note} {state.forecast_note}",
        "",
        "## Risks",
        "",
        _table(
            ["event", "horizon", "risk", "interval"],
            [
                [r.event, horizon(r.horizon_days), percent(r.risk), "none" if r.lower is None else "yes"]
                for r in state.risks
            ],
        ),
    ]
    if state.labs:
        rows = []
        for lab in state.labs:
            trend = _signed(lab.trend_per_year) if lab.trend_per_year is not None else "n/a"
            fc = lab.forecast[-1] if lab.forecast else None
            forecast = f"{_num(fc.mean)} in {horizon(fc.target_days)}" if fc is not None else "n/a"
            rows.append(
                [lab.code, _num(lab.latest_value), date(lab.latest_time), trend, str(lab.trend_points), forecast]
            )
        parts += [
            "",
            "## Labs",
            "",
            _table(["code", "latest", "date", "trend / year", "points (1 y)", "forecast"], rows),
        ]
    if state.imaging_changes:
        rows = [
            [
                c.code,
                date(c.from_time),
                date(c.to_time),
                f"{c.euclidean:.3g}",
                "n/a" if c.cosine is None else f"{c.cosine:.3g}",
            ]
            for c in state.imaging_changes
        ]
        parts += ["", "## Imaging change", "", _table(["code", "from", "to", "Euclidean", "cosine distance"], rows)]
    a = state.attribution
    rows = [[_token(t).replace("|", "/"), t.kind, _signed(t.attribution)] for t in a.top(10)]
    title = f"integrated gradients, {a.steps} steps, log risk of {a.event} within {horizon(a.horizon_days)}"
    parts += [
        "",
        f"## Attributions ({title})",
        "",
        _table(["input", "kind", "attribution"], rows) if rows else "No value, image or note inputs.",
        "",
        f"f(input) = {a.log_risk:.4f}, f(baseline) = {a.baseline_log_risk:.4f}, sum of attributions = {a.total:.4f} "
        f"(completeness gap {a.completeness_gap:.2e}).",
        "",
    ]
    return "\n".join(parts)
