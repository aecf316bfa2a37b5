"""`propensity drift-report`: drift of a CSV, or of what the service scored recently, as one HTML file.

Two sources, one computation (service/monitoring/drift.py, the same code the server's gauges come from):
- a CSV of raw rows, parsed and scored by the compiled model of the followed version;
- the drift spool the serving workers write (closed window chunks), summed over the last DURATION.
The HTML is self-contained: plots are PNGs embedded as base64, styles inline, no external assets.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from service.errors import ArtifactError, DataValidationError
from service.monitoring.drift import (
    PHAT,
    CategoryBins,
    Counts,
    DriftReference,
    DriftSummary,
    FeatureDrift,
    NumericBins,
    assess,
    count_batch,
)
from service.monitoring.drift_spool import read_spool
from service.monitoring.drift_stats import ALERT, WARN, Thresholds

if TYPE_CHECKING:
    from service.model.registries import ModelRegistry
    from service.serving.scorer import CompiledModel

BATCH = 10_000
COLORS = {"ok": "#2e7d32", "warn": "#ef6c00", "alert": "#c62828"}


@dataclass
class DriftResult:
    reference: DriftReference
    counts: Counts
    summary: DriftSummary
    source: str
    notes: list[str] = field(default_factory=list)


def drift_of_csv(path: Path, model: CompiledModel, thresholds: Thresholds, min_rows: int) -> DriftResult:
    """Score a CSV of raw rows with the compiled model and bucket what it saw (rows that fail to parse are
    left out and counted in a note)."""
    ref = DriftReference.from_model(model)
    try:
        frame = pd.read_csv(path, low_memory=False, usecols=lambda c: c in set(model.used_columns))
    except FileNotFoundError:
        raise DataValidationError(f"{path}: no such file") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path}: not a readable CSV ({str(exc)[:200]})") from None
    absent = [c for c in model.used_columns if c not in frame.columns]
    if absent:
        raise DataValidationError(f"{path}: missing column(s) {', '.join(absent)}")
    total = Counts.empty(ref)
    bad = 0
    for start in range(0, len(frame), BATCH):
        rows = frame.iloc[start : start + BATCH].to_dict(orient="records")
        scored = model.score(rows)
        keep = None
        if scored.bad_rows:
            bad += len(scored.bad_rows)
            keep = np.ones(len(rows), dtype=bool)
            keep[sorted(scored.bad_rows)] = False
        phat = np.asarray(scored.phat, dtype=np.float64)
        total.add(count_batch(ref, scored.numeric_values, scored.category_codes, phat, keep=keep))
    notes = [f"{bad} row(s) could not be parsed and are left out"] if bad else []
    summary = assess(ref, total, thresholds, min_rows)
    return DriftResult(ref, total, summary, f"CSV {path} ({len(frame)} rows)", notes)


def drift_of_spool(
    spool_dir: Path, since_seconds: float, registry: ModelRegistry, thresholds: Thresholds, min_rows: int
) -> DriftResult:
    """Sum the spool's chunks of the last `since_seconds`, for the version that scored the most rows."""
    now = time.time()
    records = list(read_spool(spool_dir, now - since_seconds))
    if not records:
        raise DataValidationError(
            f"{spool_dir}: no drift records in the last {since_seconds:.0f}s "
            "(is PROPENSITY_DRIFT_SPOOL_DIR set on the servers, and has the service scored anything?)"
        )
    by_version: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_version[record.version].append(record.data)
    rows = {v: sum(int(r["rows"]) for r in recs) for v, recs in by_version.items()}
    version = max(rows, key=lambda v: rows[v])
    chosen = by_version[version]
    metadata = registry.metadata(version)
    layout = chosen[-1]["layout"]
    ref = DriftReference.build(
        version,
        str(chosen[-1].get("sha256", "")),
        layout["numeric"],
        layout["categorical"],
        metadata.get("reference_distributions") or {},
    )
    model_sha = str(((metadata.get("files") or {}).get("model.joblib") or {}).get("sha256", ""))
    if model_sha and ref.sha256 and model_sha != ref.sha256:
        raise ArtifactError(
            f"spool records of {version} name sha256 {ref.sha256[:12]}, the registry {model_sha[:12]}"
        )
    total = Counts.empty(ref)
    for data in chosen:
        total.add(Counts.from_record(data, ref))
    hosts = {r.path.name.split("-")[2] for r in records if r.version == version}
    notes = [
        f"{len(chosen)} window chunk(s) from {len(hosts)} host(s) in {spool_dir}",
        f"window {_when(total.start)} to {_when(total.end)}",
    ]
    others = {v: n for v, n in rows.items() if v != version}
    if others:
        notes.append("also scored in this period: " + ", ".join(f"{v} ({n} rows)" for v, n in others.items()))
    summary = assess(ref, total, thresholds, min_rows)
    hours = since_seconds / 3600
    return DriftResult(ref, total, summary, f"the service's last {hours:g} h (spool)", notes)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# --- plots ---
def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bars(title: str, labels: list[str], reference: np.ndarray, current: np.ndarray, xlabel: str) -> str:
    # matplotlib (and its Agg backend choice) only when a report draws a plot, not when a worker imports drift
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, reference, width=0.4, label="reference (training)", color="#90a4ae")
    ax.bar(x + 0.2, current, width=0.4, label="current", color="#1565c0")
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("share")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)


def _numeric_labels(b: NumericBins) -> list[str]:
    edges = [f"{e:.4g}" for e in b.edges]
    if not edges:
        return ["all"]
    return [
        f"< {edges[0]}",
        *[f"{a} to {z}" for a, z in itertools.pairwise(edges)],
        f"≥ {edges[-1]}",
    ]


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def _grade(f: FeatureDrift) -> str:
    return f"{f.status.upper()}, PSI {_fmt(f.psi)}" + (f", JS {_fmt(f.js)}" if f.js is not None else "")


def plot_numeric(b: NumericBins, counts: np.ndarray, f: FeatureDrift) -> str:
    title = f"{b.name} ({_grade(f)}): missing {_pct(b.missing_rate)} (reference) vs {_pct(f.missing_rate)}"
    return _bars(
        title, _numeric_labels(b), b.expected, _shares(counts[:-1]), "reference decile bins (present values)"
    )


def plot_categorical(b: CategoryBins, counts: np.ndarray, f: FeatureDrift) -> str:
    return _bars(f"{b.column} ({_grade(f)})", b.labels, b.expected, _shares(counts), "level (share of rows)")


def plot_phat(b: NumericBins, counts: np.ndarray, f: FeatureDrift) -> str:
    return _bars(
        f"phat ({_grade(f)})",
        _numeric_labels(b),
        b.expected,
        _shares(counts),
        "reference decile bins of phat",
    )


# --- HTML ---
def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_html(result: DriftResult) -> str:
    ref, counts, summary = result.reference, result.counts, result.summary
    t = summary.thresholds
    rows_html = []
    for f in summary.features:
        color = COLORS[f.status]
        rows_html.append(
            "<tr>"
            f"<td>{html.escape(f.feature)}</td><td>{f.kind}</td>"
            f'<td style="color:{color};font-weight:bold">{f.status}</td>'
            f"<td>{_fmt(f.psi)}</td><td>{_fmt(f.js)}</td>"
            f"<td>{_pct(f.reference_missing_rate)} → {_pct(f.missing_rate)}</td>"
            f"<td>{_pct(f.unseen_share)}</td><td>{html.escape('; '.join(f.reasons))}</td>"
            "</tr>"
        )
    plots = []
    for b in ref.numeric:
        plots.append((b.name, plot_numeric(b, counts.numeric[b.name], summary.feature(b.name))))
    for cb in ref.categorical:
        f = summary.feature(cb.column)
        plots.append((cb.column, plot_categorical(cb, counts.categorical[cb.column], f)))
    plots.append((PHAT, plot_phat(ref.phat, counts.phat, summary.feature(PHAT))))
    figures = "\n".join(
        f'<figure id="plot-{name}"><img alt="{name}: reference vs current" src="data:image/png;base64,{png}">'
        "</figure>"
        for name, png in plots
    )
    status_color = COLORS[summary.status]
    flagged = summary.flagged(WARN)
    headline = (
        f"{len(summary.flagged(ALERT))} alert(s), {len(flagged) - len(summary.flagged(ALERT))} warning(s)"
        + (f": {', '.join(flagged)}" if flagged else "")
    )
    if not summary.reporting:
        headline = f"only {summary.rows} rows (fewer than {summary.min_rows}): statistics are not graded"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {html.escape(ref.version)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #212121; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #cfd8dc; padding: 4px 10px; text-align: left; font-size: 14px; }}
th {{ background: #eceff1; }}
figure {{ display: inline-block; margin: 0.5em; }}
.status {{ color: {status_color}; font-weight: bold; }}
</style></head><body>
<h1>Drift report</h1>
<p>Model <b>{html.escape(ref.version)}</b> (sha256 {html.escape(ref.sha256[:12])}),
source: {html.escape(result.source)}, {summary.rows} rows scored,
generated {_when(time.time())}.</p>
<p>Overall: <span class="status">{summary.status}</span> — {html.escape(headline)}.
Rows with an unseen category level: {_pct(summary.unseen_share)}.</p>
<ul>{notes}</ul>
<h2>Statistics</h2>
<table><thead><tr><th>feature</th><th>kind</th><th>status</th><th>PSI</th><th>JS distance</th>
<th>missing (reference → current)</th><th>unseen</th><th>why</th></tr></thead>
<tbody>{"".join(rows_html)}</tbody></table>
<p>Thresholds: PSI warn {t.psi_warn} / alert {t.psi_alert}; JS distance warn {t.js_warn} / alert
{t.js_alert}; missing rate |Δ| warn {t.missing_warn} / alert {t.missing_alert}; unseen share warn
{t.unseen_warn} / alert {t.unseen_alert}. Numeric PSI uses the reference decile bins of present values;
categorical PSI and JS use levels plus missing and unseen. The reference is the model's training split
(for the approved model, synthetic data calibrated to it).</p>
<h2>Reference vs current</h2>
{figures}
</body></html>
"""


def write_report(result: DriftResult, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(result), encoding="utf-8")
    return out
