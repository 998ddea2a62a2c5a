"""``EvaluationReport``: the tables of an evaluation, their JSON form and a self-contained HTML report.

The HTML file needs nothing else: CSS is inline and the figures (matplotlib, Agg canvas) are embedded as base64
PNG. The JSON file holds every table column by column (NaN written as null, datetimes as ISO strings) and reads back
to equal frames with :meth:`EvaluationReport.from_json`.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from migpt_traj.errors import DataReadError
from migpt_traj.evaluation import _figures as figs
from migpt_traj.evaluation.leakage import LeakageAudit

__all__ = ["EvaluationReport"]

_FORMAT = "migpt_traj.evaluation_report"
_VERSION = 1
_TABLES = (
    "metrics",
    "comparisons",
    "calibration",
    "decision_curves",
    "subgroups",
    "description",
    "flow",
    "missingness",
    "predictions",
)
_DTYPES: dict[str, Any] = {
    "String": pl.String,
    "Float64": pl.Float64,
    "Int64": pl.Int64,
    "Boolean": pl.Boolean,
    "Datetime": pl.Datetime("us"),
}
_ISO = "%Y-%m-%dT%H:%M:%S%.6f"
_SUMMARY_METRICS = ("auc", "c_index", "brier", "ibs", "calibration_slope", "ici")


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Everything :func:`~migpt_traj.evaluation.harness.evaluate` measured (polars frames; days; risk up = worse).

    Attributes:
        metrics: ``model, landmark_days, horizon_days, event, metric, value, lower, upper, n_at_risk, n_events,
            status, detail``; metrics ``auc``, ``c_index``, ``brier``, ``ibs`` (at the last horizon, integrated over
            all), ``calibration_in_the_large``, ``calibration_intercept``, ``calibration_slope``, ``ici``,
            ``observed_risk``, ``mean_risk``. ``status`` is ``ok`` or why the value is NaN (``few_events``,
            ``not_estimable``, ``no_predictions``, ...), ``detail`` the explanation (and CI notes).
        comparisons: model − baseline per cell and metric: ``difference, lower, upper`` (paired bootstrap),
            ``favours`` (``model``/``baseline``/``neither`` by the CI; Brier, IBS and ICI: lower is better).
        calibration: Risk groups (``kind = "group"``: mean predicted, observed, n) and smoothed curves.
        decision_curves: Net benefit of each model, treat-all and treat-none per threshold.
        subgroups: As ``metrics`` plus ``subgroup, level`` (codes present at time zero, age bands).
        description: :meth:`Cohort.describe` per split.
        flow: Subjects at risk per split and landmark, and their outcomes by each horizon.
        missingness: Share of at-risk subjects with no value of each measurement code by the landmark.
        predictions: Every prediction scored, with the observed outcome: ``model, subject_id, prediction_time,
            landmark_days, horizon_days, event, risk, duration_days, observed``.
        leakage: The :class:`~migpt_traj.evaluation.leakage.LeakageAudit`.
        settings: Options of the run (landmarks, horizons, split, bootstrap, seed, ...).
    """

    metrics: pl.DataFrame
    comparisons: pl.DataFrame
    calibration: pl.DataFrame
    decision_curves: pl.DataFrame
    subgroups: pl.DataFrame
    description: pl.DataFrame
    flow: pl.DataFrame
    missingness: pl.DataFrame
    predictions: pl.DataFrame
    leakage: LeakageAudit
    settings: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def models(self) -> list[str]:
        """The model under study first, then the baselines."""
        return [str(self.settings.get("model", "model")), *[str(b) for b in self.settings.get("baselines", [])]]

    def summary(self, metrics: tuple[str, ...] = _SUMMARY_METRICS, *, digits: int = 3) -> pl.DataFrame:
        """A wide table, one row per (model, event, landmark, horizon): ``"value (lower–upper)"`` per metric, or
        ``"— (status)"`` where it is NaN."""
        fmt = f"{{:.{digits}f}}"
        m = self.metrics.filter(pl.col("metric").is_in(list(metrics)))
        cells = [
            _cell(v, lo, hi, st, fmt) for v, lo, hi, st in m.select("value", "lower", "upper", "status").iter_rows()
        ]
        wide = m.with_columns(cell=pl.Series(cells, dtype=pl.String)).pivot(
            on="metric", index=["model", "event", "landmark_days", "horizon_days"], values="cell"
        )
        order = {name: i for i, name in enumerate(self.models)}
        present = [c for c in metrics if c in wide.columns]
        return (
            wide.with_columns(_o=pl.col("model").replace_strict(order, default=len(order)))
            .sort("_o", "event", "landmark_days", "horizon_days")
            .select("model", "event", "landmark_days", "horizon_days", *present)
            .with_columns(pl.col(present).fill_null(""))  # e.g. the IBS, reported at the last horizon only
        )

    def estimable(self, event: str) -> bool:
        """Whether any metric cell of outcome ``event`` was scored (status ``ok``)."""
        return bool(self.metrics.filter((pl.col("event") == event) & (pl.col("status") == "ok")).height)

    def __repr__(self) -> str:
        ok = self.metrics.filter(pl.col("status") == "ok").height
        verdict = "passed" if self.leakage.passed else ("not run" if not self.leakage.checks.height else "FAILED")
        return (
            f"EvaluationReport({self.settings.get('dataset', '?')!r}, split={self.settings.get('split')!r}, "
            f"models={self.models}, {ok}/{self.metrics.height} metric cells estimable, leakage audit {verdict})"
        )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        tables = {name: _frame_to_json(getattr(self, name)) for name in _TABLES}
        leakage = {"checks": _frame_to_json(self.leakage.checks), "codes": _frame_to_json(self.leakage.codes)}
        return {"format": _FORMAT, "version": _VERSION, "settings": self.settings, "tables": tables, "leakage": leakage}

    def to_json(self, path: str | Path) -> Path:
        """Write the report as JSON (NaN as null); :meth:`from_json` reads it back."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), allow_nan=False))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> EvaluationReport:
        """Read a report written by :meth:`to_json`.

        Raises:
            DataReadError: the file is unreadable or not an evaluation report of this format.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataReadError(f"Cannot read an evaluation report at {str(path)!r}: {err}") from err
        if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("version") != _VERSION:
            raise DataReadError(f"{str(path)!r} is not a {_FORMAT} version {_VERSION} file.")
        tables = {name: _frame_from_json(data["tables"][name]) for name in _TABLES}
        audit = LeakageAudit(_frame_from_json(data["leakage"]["checks"]), _frame_from_json(data["leakage"]["codes"]))
        return cls(**tables, leakage=audit, settings=data["settings"])

    # ------------------------------------------------------------------ figures and HTML
    def figures(self) -> dict[str, bytes]:
        """The report's figures as PNG bytes, by file name (per scored outcome)."""
        lms = [float(s) for s in self.settings.get("landmarks_days", [])]
        hs = [float(h) for h in self.settings.get("horizons_days", [])]
        out: dict[str, bytes] = {}
        for k, event in enumerate(self.settings.get("outcomes", [])):
            if not self.estimable(event):
                continue
            tag = _tag(k, event)
            for metric in ("auc", "brier"):
                out[f"{metric}_{tag}.png"] = figs.metric_png(
                    self.metrics, metric=metric, event=event, models=self.models, horizons=hs
                )
            out[f"calibration_{tag}.png"] = figs.calibration_png(
                self.calibration, event=event, models=self.models, landmarks=lms, horizons=hs
            )
            out[f"decision_curves_{tag}.png"] = figs.decision_png(
                self.decision_curves, event=event, models=self.models, landmarks=lms, horizons=hs
            )
            out[f"risk_distribution_{tag}.png"] = figs.risk_distribution_png(
                self.predictions, event=event, model=self.models[0], landmarks=lms, horizons=hs
            )
        return out

    def to_html(self, path: str | Path, *, figures: Mapping[str, bytes] | None = None) -> Path:
        """Write a self-contained HTML report (inline CSS, base64 PNG figures)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_render(self, figures if figures is not None else self.figures()), encoding="utf-8")
        return path

    def save(self, directory: str | Path) -> Path:
        """Write ``report.html``, ``report.json`` and ``figures/*.png`` into ``directory`` (created)."""
        root = Path(directory)
        (root / "figures").mkdir(parents=True, exist_ok=True)
        images = self.figures()
        for name, png in images.items():
            (root / "figures" / name).write_bytes(png)
        self.to_json(root / "report.json")
        self.to_html(root / "report.html", figures=images)
        return root


# ---------------------------------------------------------------------------------------------------- JSON frames
def _dtype_name(dtype: pl.DataType) -> str:
    if dtype.is_float():
        return "Float64"
    if dtype.is_integer():
        return "Int64"
    if isinstance(dtype, pl.Datetime):
        return "Datetime"
    if dtype == pl.Boolean:
        return "Boolean"
    return "String"


def _frame_to_json(frame: pl.DataFrame) -> dict[str, Any]:
    names = {c: _dtype_name(t) for c, t in frame.schema.items()}
    columns: dict[str, list[Any]] = {}
    for c, kind in names.items():
        col = frame[c]
        if kind == "Float64":
            col = col.cast(pl.Float64).fill_nan(None)
        elif kind == "Datetime":
            col = col.dt.strftime(_ISO)
        elif kind == "String":
            col = col.cast(pl.String)
        columns[c] = col.to_list()
    return {"schema": names, "columns": columns}


def _frame_from_json(data: Mapping[str, Any]) -> pl.DataFrame:
    schema = {c: _DTYPES[k] for c, k in data["schema"].items()}
    raw = {
        c: pl.Series(c, data["columns"][c], dtype=pl.String if k == "Datetime" else schema[c])
        for c, k in data["schema"].items()
    }
    cols = []
    for c, k in data["schema"].items():
        s = raw[c]
        if k == "Datetime":
            s = s.str.to_datetime(_ISO, time_unit="us")
        elif k == "Float64":
            s = s.fill_null(float("nan"))
        cols.append(s)
    return pl.DataFrame(cols) if cols else pl.DataFrame()


# ---------------------------------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;color:#222;
line-height:1.4;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}
h2{font-size:19px;border-bottom:2px solid #1f4e79;padding-bottom:3px;margin-top:34px}
h3{font-size:15px;margin-top:20px}.meta{color:#555;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:8px 0 14px 0}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#eef2f7;position:sticky;top:0}td.t,th.t{text-align:left}
tr:nth-child(even) td{background:#fafbfc}.pass{color:#116329;font-weight:600}.fail{color:#b00020;font-weight:600}
.na{color:#888}.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:600;font-size:13px}
.badge.pass{background:#dafbe1}.badge.fail{background:#ffebe9}img{max-width:100%;border:1px solid #eee;margin:6px 0}
.scroll{max-height:460px;overflow:auto;border:1px solid #eee}details{margin:8px 0}summary{cursor:pointer;color:#1f4e79}
.note{font-size:12px;color:#555;max-width:980px}
"""


def _cell(value: float | None, lo: float | None, hi: float | None, status: str, fmt: str) -> str:
    if value is None or value != value:
        return f"— ({status})"
    if lo is None or hi is None or lo != lo or hi != hi:
        return fmt.format(value)
    return f"{fmt.format(value)} ({fmt.format(lo)}–{fmt.format(hi)})"


def _fmt(value: Any, column: str = "") -> str:
    if value is None:
        return '<span class="na">—</span>'
    if isinstance(value, bool):
        return '<span class="pass">pass</span>' if value else '<span class="fail">FAIL</span>'
    if isinstance(value, float):
        if value != value:
            return '<span class="na">NaN</span>'
        if column.endswith("_days"):
            return f"{value:.6g}"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    return html.escape(str(value))


def _table(frame: pl.DataFrame, *, scroll: bool = False, max_rows: int = 2000) -> str:
    if frame.height == 0:
        return '<p class="na">(empty)</p>'
    text_cols = {c for c, t in frame.schema.items() if t == pl.String or isinstance(t, pl.Datetime)}
    head = "".join(f'<th class="{"t" if c in text_cols else ""}">{html.escape(c)}</th>' for c in frame.columns)
    body = []
    for row in frame.head(max_rows).iter_rows():
        tds = "".join(
            f'<td class="{"t" if c in text_cols else ""}">{_fmt(v, c)}</td>'
            for c, v in zip(frame.columns, row, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    more = (
        f'<p class="note">… {frame.height - max_rows} more rows in report.json</p>' if frame.height > max_rows else ""
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return (f'<div class="scroll">{table}</div>' if scroll else table) + more


def _img(figures: Mapping[str, bytes], name: str, alt: str) -> str:
    png = figures.get(name)
    if png is None:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text).strip("_").lower()


def _render(report: EvaluationReport, figures: Mapping[str, bytes]) -> str:
    st = report.settings
    audit = report.leakage
    verdict = "pass" if audit.passed else "fail"
    verdict_text = (
        "Leakage audit passed"
        if audit.passed
        else ("Leakage audit not run" if not audit.checks.height else "Leakage audit FAILED")
    )
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Evaluation: {html.escape(str(st.get('model')))} on {html.escape(str(st.get('dataset')))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Evaluation of {html.escape(str(st.get('model')))} on {html.escape(str(st.get('dataset')))}</h1>",
        f"<p class='meta'>{_meta(st)}</p>",
        f"<p><span class='badge {verdict}'>{verdict_text}</span></p>",
        "<h2>1. Discrimination, accuracy and calibration</h2>",
        "<p class='note'>td-AUC: cumulative/dynamic, IPCW with the train split's censoring at the landmark; C: Uno's "
        "IPCW concordance truncated at the horizon; Brier: IPCW at the horizon (lower is better); IBS: integrated over "
        "the horizons (reported at the last); calibration slope 1 and ICI 0 are ideal. Values: estimate (95% CI); "
        "— (status) where not estimable.</p>",
        _table(report.summary()),
    ]
    for k, event in enumerate(st.get("outcomes", [])):
        tag = _tag(k, event)
        parts += [
            f"<h3>{html.escape(event)}: td-AUC and Brier score over the horizon</h3>",
            _img(figures, f"auc_{tag}.png", f"AUC {event}") or _not_scored(report, event),
            _img(figures, f"brier_{tag}.png", f"Brier {event}"),
        ]
    parts += ["<h2>2. Comparison with the baselines</h2>"]
    parts.append(
        "<p class='note'>Model − baseline per cell, with a paired bootstrap CI (the same replicates for both); "
        "'favours' follows the CI (for Brier, IBS and ICI lower is better).</p>"
    )
    parts.append(_table(report.comparisons.drop("detail"), scroll=True))
    parts.append("<h2>3. Calibration</h2>")
    cal = report.metrics.filter(
        pl.col("metric").is_in(["calibration_in_the_large", "calibration_slope", "ici", "observed_risk", "mean_risk"])
    )
    for k, event in enumerate(st.get("outcomes", [])):
        parts += [
            f"<h3>{html.escape(event)}</h3>",
            _img(figures, f"calibration_{_tag(k, event)}.png", f"calibration {event}") or _not_scored(report, event),
        ]
    parts.append(
        _table(
            cal.select(
                "model", "event", "landmark_days", "horizon_days", "metric", "value", "lower", "upper", "status"
            ),
            scroll=True,
        )
    )
    parts.append("<h2>4. Clinical utility: decision curves</h2>")
    for k, event in enumerate(st.get("outcomes", [])):
        parts += [
            f"<h3>{html.escape(event)}</h3>",
            _img(figures, f"decision_curves_{_tag(k, event)}.png", f"DCA {event}") or _not_scored(report, event),
        ]
    parts.append(f"<h2>5. Predicted risk by observed outcome ({html.escape(report.models[0])})</h2>")
    for k, event in enumerate(st.get("outcomes", [])):
        parts += [
            f"<h3>{html.escape(event)}</h3>",
            _img(figures, f"risk_distribution_{_tag(k, event)}.png", f"risk distribution {event}")
            or _not_scored(report, event),
        ]
    parts += [
        "<h2>6. Leakage audit</h2>",
        "<p class='note'>(a) predictions unchanged when every later event is removed or changed; (b) no input code "
        "whose timing or value is derived from the outcome or the end of follow-up; (c) disjoint splits and a "
        "vocabulary/normalisers fitted on train subjects only.</p>",
        _table(audit.checks),
        "<details><summary>Per-code statistics of the outcome-derived scan</summary>",
        _table(audit.codes, scroll=True),
        "</details>",
        "<h2>7. Cohort</h2><h3>Subjects and events per split</h3>",
        _table(report.description),
        "<h3>Flow: subjects at risk at each landmark and their outcomes by each horizon</h3>",
        _table(report.flow, scroll=True),
        "<h3>Missing measurements at each landmark (share of at-risk subjects with no value by then)</h3>",
        _table(_missing_wide(report.missingness), scroll=True),
        "<h2>8. Subgroups</h2>",
        _table(report.subgroups.drop("detail"), scroll=True),
        "<h2>9. All metrics</h2><details><summary>Long table with status and details</summary>",
        _table(report.metrics, scroll=True),
        "</details>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _meta(st: Mapping[str, Any]) -> str:
    def days(values: Any) -> str:
        return ", ".join(f"{d:g} d ({d / 365.25:.3g} y)" for d in values)

    scored = list(st.get("outcomes", []))
    competing = [o for o in st.get("cohort_outcomes", []) if o not in scored]
    items = [
        f"split <b>{html.escape(str(st.get('split')))}</b>",
        f"landmarks {days(st.get('landmarks_days', []))}",
        f"horizons {days(st.get('horizons_days', []))}",
        f"outcomes {html.escape(', '.join(scored))}"
        + (
            f" (also competing: {html.escape(', '.join(competing))})"
            if competing
            else " (each competing with the others)"
        ),
        f"baselines {html.escape(', '.join(st.get('baselines', [])) or 'none')} (fitted on the train split)",
        f"{st.get('n_bootstrap')} subject-level bootstrap replicates (seed {st.get('seed')}), "
        f"{100 * float(st.get('confidence', 0.95)):g}% percentile intervals",
        f"cells with fewer than {st.get('min_events')} events by the horizon are not scored",
    ]
    return " · ".join(items)


def _not_scored(report: EvaluationReport, event: str) -> str:
    counts = report.metrics.filter(pl.col("event") == event).group_by("status").len().sort("status")
    why = ", ".join(f"{status}: {n}" for status, n in counts.iter_rows())
    return f"<p class='note'>No cell of {html.escape(event)} could be scored ({html.escape(why)} metric cells).</p>"


def _tag(k: int, event: str) -> str:
    return f"{k + 1}_{_slug(event)}"


def _missing_wide(missing: pl.DataFrame) -> pl.DataFrame:
    if missing.height == 0:
        return missing
    return (
        missing.with_columns(column=pl.format("{} @ {} d", pl.col("split"), pl.col("landmark_days").round(2)))
        .pivot(on="column", index="code", values="share_missing")
        .sort("code")
    )
