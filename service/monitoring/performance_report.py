"""`propensity performance-report`: the GET /performance JSON as one HTML page an analyst reads.

The input is `PerformanceReport.to_dict()` (service/monitoring/performance.py): cohorts by prediction period
(or version, or overall), each with label coverage, realized metrics (labelled rows) and estimated ones (CBPE,
from phat alone), every figure an interval. The page has a summary per model version, plots (AUC and
calibration over time, the reliability diagram, estimated vs realized, label coverage) and tables with the
intervals. Like the drift report it is self-contained: PNGs from matplotlib's Agg backend embedded as base64,
styles inline, no script, no external URL (an empty inline favicon, so a browser asks no server for one).
Every string that comes from the data (versions, cohort names) is HTML-escaped, and `$` is escaped before it
reaches matplotlib (which would read it as mathtext).
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

Report = Mapping[str, Any]
Cohort = Mapping[str, Any]

DEFAULT_TITLE = "Model performance report"
NO_VALUE = "-"
GOOD, BAD, MUTED = "#2e7d32", "#c62828", "#757575"
REALIZED_COLOR, ESTIMATED_COLOR, PHAT_COLOR = "#1565c0", "#ef6c00", "#6a1b9a"
MAX_TICKS = 16
# (metric, heading, as a percentage?)
REALIZED: tuple[tuple[str, str, bool], ...] = (
    ("auc", "AUC", False),
    ("brier", "Brier", False),
    ("log_loss", "log loss", False),
    ("observed_rate", "observed rate", True),
    ("mean_phat", "mean phat", True),
    ("calibration_slope", "calibration slope", False),
    ("calibration_intercept", "calibration intercept", False),
    ("positive_rate", "positive rate", True),
    ("precision", "precision", True),
    ("recall", "recall", True),
)
ESTIMATED: tuple[tuple[str, str, bool], ...] = (
    ("auc", "AUC", False),
    ("observed_rate", "expected rate (mean phat)", True),
    ("positive_rate", "positive rate", True),
    ("precision", "precision", True),
    ("recall", "recall", True),
    ("brier", "Brier", False),
    ("log_loss", "log loss", False),
)
GAPS: tuple[tuple[str, str, bool], ...] = (
    ("auc", "AUC", False),
    ("precision", "precision", True),
    ("recall", "recall", True),
    ("observed_rate", "observed rate", True),
)


@dataclass
class VersionCohorts:
    """The cohorts of one version: its overall row and its periods (by day or hour) in time order."""

    version: str
    summary: Cohort | None = None
    periods: list[Cohort] = field(default_factory=list)


def group_by_version(report: Report) -> list[VersionCohorts]:
    """The report's cohorts by version, in the order the versions first appear."""
    groups: dict[str, VersionCohorts] = {}
    overall = report.get("by") in ("version", "all")
    for cohort in report.get("cohorts") or []:
        version = str(cohort.get("version", ""))
        group = groups.setdefault(version, VersionCohorts(version))
        if overall or cohort.get("cohort") == "all":
            group.summary = cohort
        else:
            group.periods.append(cohort)
    for group in groups.values():
        group.periods.sort(key=lambda c: float(c.get("start") or 0.0))
    return list(groups.values())


# --- numbers as text ---
def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


def _fmt(value: object, pct: bool = False, digits: int = 3) -> str:
    number = _num(value)
    if number is None:
        return NO_VALUE
    return f"{100 * number:.1f}%" if pct else f"{number:.{digits}f}"


def _interval(iv: Mapping[str, Any] | None, pct: bool = False) -> str:
    """`0.812 [0.790, 0.833]`; a dash for what is not known."""
    if not iv or _num(iv.get("value")) is None:
        return NO_VALUE
    value = _fmt(iv.get("value"), pct)
    lower, upper = _fmt(iv.get("lower"), pct), _fmt(iv.get("upper"), pct)
    if lower == NO_VALUE and upper == NO_VALUE:
        return value
    return f'{value} <span class="ci">[{lower}, {upper}]</span>'


def _when(ts: object) -> str:
    number = _num(ts)
    if number is None:
        return "now"
    return datetime.fromtimestamp(number, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _metric(cohort: Cohort, section: str, metric: str) -> Mapping[str, Any] | None:
    values = cohort.get(section) or {}
    iv: Mapping[str, Any] | None = values.get(metric)
    return iv


def labels_status(cohort: Cohort, min_labels: int) -> tuple[str, str]:
    """(css class, plain words) for how far a cohort's labels let it be judged."""
    labelled = int(cohort.get("labelled") or 0)
    if labelled == 0:
        return "none", "no labels yet: estimate only"
    if not cohort.get("enough_labels", labelled >= min_labels):
        return "few", f"too few labels ({labelled} < {min_labels}): intervals wide, no alarm"
    return "ok", f"{labelled} labels: judged"


def significant_gaps(cohort: Cohort) -> list[str]:
    gaps = cohort.get("gap") or {}
    return [name for metric, name, _ in GAPS if (gaps.get(metric) or {}).get("significant")]


# --- tables ---
def _realized_table(cohorts: Sequence[Cohort], min_labels: int) -> str:
    head = "".join(f"<th>{name}</th>" for _, name, _ in REALIZED)
    rows = []
    for c in cohorts:
        css, words = labels_status(c, min_labels)
        cells = "".join(f"<td>{_interval(_metric(c, 'realized', m), pct)}</td>" for m, _, pct in REALIZED)
        rows.append(
            f'<tr class="labels-{css}"><td>{_esc(c.get("cohort", ""))}</td>'
            f"<td>{int(c.get('predictions') or 0)}</td><td>{int(c.get('labelled') or 0)}</td>"
            f"<td>{_interval(c.get('coverage'), pct=True)}</td>{cells}"
            f'<td class="status-{css}">{_esc(words)}</td></tr>'
        )
    return (
        '<table class="realized"><thead><tr><th>cohort</th><th>predictions</th><th>labelled</th>'
        f"<th>label coverage</th>{head}<th>labels</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _gap_cell(cohort: Cohort, metric: str, pct: bool) -> str:
    gap = (cohort.get("gap") or {}).get(metric) or {}
    value = _num(gap.get("value"))
    if value is None:
        return f"<td>{NO_VALUE}</td>"
    text = f"{100 * value:+.1f} pt" if pct else f"{value:+.3f}"
    if gap.get("significant"):
        return f'<td class="alarm">{text} ⚠ significant</td>'
    return f"<td>{text}</td>"


def _estimated_table(cohorts: Sequence[Cohort]) -> str:
    head = "".join(f"<th>estimated {name}</th>" for _, name, _ in ESTIMATED)
    gap_head = "".join(f"<th>gap {name}</th>" for _, name, _ in GAPS)
    rows = []
    for c in cohorts:
        cells = "".join(f"<td>{_interval(_metric(c, 'estimated', m), pct)}</td>" for m, _, pct in ESTIMATED)
        gaps = "".join(_gap_cell(c, m, pct) for m, _, pct in GAPS)
        rows.append(f"<tr><td>{_esc(c.get('cohort', ''))}</td>{cells}{gaps}</tr>")
    return (
        f'<table class="estimated"><thead><tr><th>cohort</th>{head}{gap_head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _reliability_table(summary: Cohort) -> str:
    rows = []
    for b in summary.get("reliability") or []:
        observed = _interval(
            {"value": b.get("observed"), "lower": b.get("observed_lower"), "upper": b.get("observed_upper")},
            True,
        )
        rows.append(
            f"<tr><td>{_fmt(b.get('lower'))} to {_fmt(b.get('upper'))}</td>"
            f"<td>{int(b.get('count') or 0)}</td>"
            f"<td>{_fmt(b.get('mean_phat'), True)}</td><td>{observed}</td></tr>"
        )
    if not rows:
        return ""
    return (
        '<table class="reliability"><thead><tr><th>phat bin</th><th>labelled rows</th><th>mean phat</th>'
        f"<th>observed rate (Wilson interval)</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _overview_table(groups: Sequence[VersionCohorts], min_labels: int) -> str:
    rows = []
    for g in groups:
        c = g.summary
        if c is None:
            continue
        css, words = labels_status(c, min_labels)
        alarms = significant_gaps(c)
        alarm = (
            f'<td class="alarm">estimate vs realized: {_esc(", ".join(alarms))}</td>'
            if alarms
            else "<td>none</td>"
        )
        rows.append(
            f"<tr><td>{_esc(g.version)}</td><td>{int(c.get('predictions') or 0)}</td>"
            f"<td>{int(c.get('labelled') or 0)}</td><td>{_interval(c.get('coverage'), True)}</td>"
            f"<td>{_interval(_metric(c, 'realized', 'auc'))}</td>"
            f"<td>{_interval(_metric(c, 'estimated', 'auc'))}</td>"
            f"<td>{_interval(_metric(c, 'realized', 'observed_rate'), True)}</td>"
            f"<td>{_interval(_metric(c, 'estimated_on_labelled', 'observed_rate'), True)}</td>"
            f"<td>{_interval(_metric(c, 'realized', 'calibration_slope'))}</td>"
            f'{alarm}<td class="status-{css}">{_esc(words)}</td></tr>'
        )
    return (
        '<table class="overview"><thead><tr><th>version</th><th>predictions</th><th>labelled</th>'
        "<th>label coverage</th><th>realized AUC</th><th>estimated AUC</th><th>observed rate</th>"
        "<th>mean phat (labelled rows)</th><th>calibration slope</th><th>alarms</th><th>labels</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


# --- plots ---
def _pyplot() -> Any:
    # matplotlib (and its Agg backend choice) only when a report draws, not when the API imports this module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def mpl_text(text: str) -> str:
    """Text for matplotlib as it is: `$` would start mathtext (and an unbalanced one fails the draw)."""
    return text.replace("\\", "\\\\").replace("$", r"\$")


def _series(
    cohorts: Sequence[Cohort], section: str, metric: str
) -> tuple[list[float], list[float], list[float]]:
    """(values, lowers, uppers), NaN where a cohort has none."""
    values, lowers, uppers = [], [], []
    for c in cohorts:
        iv = _metric(c, section, metric) or {}
        values.append(_nan(iv.get("value")))
        lowers.append(_nan(iv.get("lower")))
        uppers.append(_nan(iv.get("upper")))
    return values, lowers, uppers


def _nan(value: object) -> float:
    number = _num(value)
    return math.nan if number is None else number


def _x_axis(ax: Any, cohorts: Sequence[Cohort]) -> None:
    labels = [mpl_text(str(c.get("cohort", ""))) for c in cohorts]
    step = max(1, math.ceil(len(labels) / MAX_TICKS))
    positions = list(range(0, len(labels), step))
    ax.set_xticks(positions, [labels[i] for i in positions], rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.grid(axis="y", color="#eceff1")


def _yerr(values: Sequence[float], lowers: Sequence[float], uppers: Sequence[float]) -> list[list[float]]:
    """matplotlib's asymmetric error bars from an interval; 0 where a bound is not known."""

    def below(v: float, lo: float) -> float:
        return 0.0 if math.isnan(v) or math.isnan(lo) else max(0.0, v - lo)

    return [
        [below(v, lo) for v, lo in zip(values, lowers, strict=True)],
        [below(hi, v) for v, hi in zip(values, uppers, strict=True)],
    ]


def _errorbars(
    ax: Any,
    cohorts: Sequence[Cohort],
    series: tuple[list[float], list[float], list[float]],
    *,
    color: str,
    label: str,
    offset: float = 0.0,
) -> None:
    """Points with their intervals; hollow where the cohort has too few labels to be judged."""
    values, lowers, uppers = series
    for enough in (True, False):
        idx = [i for i, c in enumerate(cohorts) if bool(c.get("enough_labels")) is enough]
        if not idx or all(math.isnan(values[i]) for i in idx):
            continue
        ax.errorbar(
            [i + offset for i in idx],
            [values[i] for i in idx],
            yerr=_yerr([values[i] for i in idx], [lowers[i] for i in idx], [uppers[i] for i in idx]),
            fmt="o",
            markersize=5,
            capsize=3,
            color=color,
            mfc=color if enough else "white",
            label=label if enough else f"{label} (too few labels)",
        )


def _legend(ax: Any, fontsize: int, loc: str = "best") -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, loc=loc)


def _band(ax: Any, series: tuple[list[float], list[float], list[float]], color: str, label: str) -> None:
    values, lowers, uppers = series
    x = list(range(len(values)))
    ax.plot(x, values, "--", color=color, label=label, linewidth=1.5)
    ax.fill_between(x, lowers, uppers, color=color, alpha=0.15, linewidth=0)


def plot_auc(periods: Sequence[Cohort]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    _band(ax, _series(periods, "estimated", "auc"), ESTIMATED_COLOR, "estimated (CBPE, all predictions)")
    _errorbars(ax, periods, _series(periods, "realized", "auc"), color=REALIZED_COLOR, label="realized")
    _x_axis(ax, periods)
    ax.set_ylabel("AUC")
    ax.set_title("AUC by prediction period, with intervals", fontsize=10)
    _legend(ax, 7, loc="lower left")
    return _png(fig)


def plot_calibration(periods: Sequence[Cohort]) -> str:
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    _band(top, _series(periods, "estimated", "observed_rate"), PHAT_COLOR, "mean phat (all predictions)")
    realized = _series(periods, "realized", "observed_rate")
    _errorbars(top, periods, realized, color=REALIZED_COLOR, label="observed rate (labelled rows)")
    top.set_ylabel("rate")
    top.set_title("Calibration by prediction period: observed rate vs mean phat", fontsize=10)
    _legend(top, 7)
    bottom.axhline(1.0, color=MUTED, linewidth=1, linestyle=":")
    slope = _series(periods, "realized", "calibration_slope")
    _errorbars(bottom, periods, slope, color=REALIZED_COLOR, label="calibration slope (1 = calibrated)")
    bottom.set_ylabel("slope")
    _legend(bottom, 7)
    _x_axis(top, periods)
    _x_axis(bottom, periods)
    return _png(fig)


def plot_reliability(summary: Cohort) -> str:
    plt = _pyplot()
    bins = [b for b in summary.get("reliability") or [] if _num(b.get("observed")) is not None]
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.plot([0, 1], [0, 1], ":", color=MUTED, label="perfect calibration")
    xs = [_nan(b.get("mean_phat")) for b in bins]
    ys = [_nan(b.get("observed")) for b in bins]
    err = _yerr(
        ys, [_nan(b.get("observed_lower")) for b in bins], [_nan(b.get("observed_upper")) for b in bins]
    )
    ax.errorbar(
        xs, ys, yerr=err, fmt="o-", color=REALIZED_COLOR, capsize=3, label="observed (Wilson interval)"
    )
    top = max([0.05, *xs, *[_nan(b.get("observed_upper")) for b in bins]], default=1.0)
    limit = min(1.0, 1.1 * top) if not math.isnan(top) else 1.0
    ax.set_xlim(0, limit)
    ax.set_ylim(0, limit)
    ax.set_xlabel("mean phat in the bin")
    ax.set_ylabel("observed rate")
    ax.set_title("Reliability diagram (labelled rows)", fontsize=10)
    _legend(ax, 7, loc="upper left")
    return _png(fig)


def plot_estimated_vs_realized(cohorts: Sequence[Cohort], cutoff: float | None) -> str:
    plt = _pyplot()
    metrics = (("precision", "precision"), ("recall", "recall"), ("positive_rate", "positive rate"))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, (metric, name) in zip(axes, metrics, strict=True):
        values, lowers, uppers = _series(cohorts, "estimated_on_labelled", metric)
        x = [i - 0.12 for i in range(len(cohorts))]
        err = _yerr(values, lowers, uppers)
        ax.errorbar(
            x, values, yerr=err, fmt="s", color=ESTIMATED_COLOR, capsize=3, markersize=4, label="estimated"
        )
        realized = _series(cohorts, "realized", metric)
        _errorbars(ax, cohorts, realized, color=REALIZED_COLOR, label="realized", offset=0.12)
        _x_axis(ax, cohorts)
        at = f" at phat > {cutoff:.4g}" if cutoff is not None else ""
        ax.set_title(f"{name}{at}", fontsize=9)
        _legend(ax, 6)
    fig.suptitle("Estimated (on the same labelled rows) vs realized", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_coverage(periods: Sequence[Cohort]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 2.8))
    coverage = [c.get("coverage") or {} for c in periods]
    values = [100 * _nan(iv.get("value")) for iv in coverage]
    err = _yerr(
        values,
        [100 * _nan(iv.get("lower")) for iv in coverage],
        [100 * _nan(iv.get("upper")) for iv in coverage],
    )
    x = list(range(len(periods)))
    ax.bar(x, [0.0 if math.isnan(v) else v for v in values], color="#90caf9")
    ax.errorbar(x, values, yerr=err, fmt="none", ecolor=REALIZED_COLOR, capsize=2)
    for i, c in enumerate(periods):
        if len(periods) <= 31:
            ax.annotate(f"{int(c.get('labelled') or 0)}", (i, 1), ha="center", fontsize=6, color="#37474f")
    _x_axis(ax, periods)
    ax.set_ylim(0, 105)
    ax.set_ylabel("label coverage (%)")
    ax.set_title("Label coverage by prediction period (labelled rows at the foot of each bar)", fontsize=10)
    return _png(fig)


def _figure(kind: str, key: int, png: str, caption: str) -> str:
    alt = _esc(caption)
    return (
        f'<figure id="plot-{kind}-{key}" class="plot-{kind}">'
        f'<img alt="{alt}" src="data:image/png;base64,{png}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


# --- the page ---
def _labels_note(rows: Sequence[Cohort], min_labels: int) -> str:
    few = sum(labels_status(c, min_labels)[0] == "few" for c in rows)
    none = sum(labels_status(c, min_labels)[0] == "none" for c in rows)
    words = []
    if few:
        words.append(
            f"{few} cohort(s) have fewer than {min_labels} labels: their intervals are wide and they raise "
            "no alarm."
        )
    if none:
        words.append(f"{none} cohort(s) have no labels yet: only the estimate is shown.")
    return f'<p class="labels-note">{" ".join(words)}</p>' if words else ""


def _figures(key: int, group: VersionCohorts, cutoff: float | None) -> list[str]:
    """The version's plots: over time when it has periods; estimated vs realized where labels came back."""
    name = f"version {group.version}"
    rows = group.periods or ([group.summary] if group.summary is not None else [])
    labelled = [c for c in rows if int(c.get("labelled") or 0) > 0]
    figures = []
    if group.periods:
        figures.append(_figure("auc", key, plot_auc(group.periods), f"AUC over time, {name}"))
        png = plot_calibration(group.periods)
        figures.append(_figure("calibration", key, png, f"Calibration over time, {name}"))
    if labelled:
        png = plot_estimated_vs_realized(labelled, cutoff)
        figures.append(_figure("estimated-vs-realized", key, png, f"Estimated vs realized, {name}"))
    if group.summary is not None and int(group.summary.get("labelled") or 0) > 0:
        png = plot_reliability(group.summary)
        figures.append(
            _figure("reliability", key, png, f"Reliability diagram, {name} (all its labelled rows)")
        )
    if group.periods:
        png = plot_coverage(group.periods)
        figures.append(_figure("coverage", key, png, f"Label coverage over time, {name}"))
    if not labelled:
        figures.append('<p class="labels-note">No labels for this version yet: nothing realized to plot.</p>')
    return figures


def _version_section(key: int, group: VersionCohorts, report: Report) -> str:
    """Plots first (what an analyst looks at), then the tables with every figure and its interval."""
    min_labels = int(report.get("min_labels") or 0)
    rows = [*group.periods, *([group.summary] if group.summary is not None else [])]
    parts = [
        f'<section class="version" id="version-{key}"><h2>Model version {_esc(group.version)}</h2>',
        _labels_note(rows, min_labels),
        "<h3>Plots</h3>",
        *_figures(key, group, _num(report.get("cutoff"))),
        "<h3>Realized performance (labelled rows)</h3>",
        _realized_table(rows, min_labels),
        "<h3>Estimated performance (CBPE, all predictions) and the gap to realized</h3>",
        _estimated_table(rows),
    ]
    bins = _reliability_table(group.summary) if group.summary is not None else ""
    if bins:
        parts.extend(["<h3>Reliability bins (all labelled rows)</h3>", bins])
    parts.append("</section>")
    return "\n".join(parts)


def _explanation(report: Report, notes: Iterable[str]) -> str:
    cutoff = _num(report.get("cutoff"))
    min_labels = int(report.get("min_labels") or 0)
    confidence = _num(report.get("confidence"))
    level = f"{100 * confidence:g}%" if confidence is not None else "the configured"
    cutoff_text = f"{cutoff:.6g}" if cutoff is not None else "unknown"
    items = [
        f'Cutoff: a prediction is positive when phat &gt; <b class="cutoff">{cutoff_text}</b>; precision, '
        "recall and positive rate are at this cutoff.",
        f"Intervals are {level} confidence intervals. Realized figures come from the labelled rows of a "
        "cohort; estimated ones (CBPE) from phat alone, assuming the model is calibrated: the band a "
        "calibrated model's realized metric falls in.",
        f"A cohort needs at least {min_labels} labels before the gap between estimate and realization can be "
        "flagged; with fewer, its intervals are wide and it raises no alarm. A gap is flagged "
        "(⚠ significant) when the realized value lies outside the estimate's band over the same labelled "
        "rows.",
        "Cohorts are by prediction time (UTC), not label time: a recent cohort fills up as labels arrive.",
        *(_esc(n) for n in notes),
    ]
    return '<ul class="explanation">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #212121; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #cfd8dc; padding: 3px 8px; text-align: left; font-size: 13px; }
th { background: #eceff1; }
.ci { color: #616161; font-size: 11px; }
.alarm { color: #c62828; font-weight: bold; }
.status-ok { color: #2e7d32; } .status-few { color: #ef6c00; } .status-none { color: #757575; }
.labels-note { color: #ef6c00; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 12px; color: #616161; }
section.version { border-top: 2px solid #cfd8dc; margin-top: 2em; }
"""


def render(
    report: Report,
    *,
    title: str = DEFAULT_TITLE,
    generated_at: float | None = None,
    notes: Iterable[str] = (),
) -> str:
    """The report (GET /performance's JSON) as one self-contained HTML page."""
    groups = group_by_version(report)
    min_labels = int(report.get("min_labels") or 0)
    generated = _when(time.time() if generated_at is None else generated_at)
    period = f"{_when(report.get('since'))} to {_when(report.get('until'))}"
    if groups:
        body = "\n".join(
            [
                "<h2>Summary by version</h2>",
                _overview_table(groups, min_labels),
                *(_version_section(i, g, report) for i, g in enumerate(groups)),
            ]
        )
    else:
        body = '<p class="empty">No predictions were logged in this period: nothing to report.</p>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style></head><body>
<h1>{_esc(title)}</h1>
<p>Predictions scored {period}, by {_esc(report.get("by", ""))}; generated {generated}.</p>
{_explanation(report, notes)}
{body}
</body></html>
"""


def write_report(report: Report, out: Path, **kwargs: Any) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report, **kwargs), encoding="utf-8")
    return out
