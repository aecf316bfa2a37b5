"""A challenger judged on labelled live rows before it serves anyone: the rows shadow scoring compared
(table shadow_predictions) that got a label, scored by both models, side by side.

Per (served, shadow) pair of versions: the rows compared, those the challenger refused, those labelled
and scored by both; on exactly those labelled rows each model's realized metrics (service/monitoring/
performance.py: AUC with DeLong's interval, log loss, Brier, calibration, precision and recall of the
business outcome each model gave, so each at its own cutoff); and what differs, paired row by row: the
mean difference of the per-row log loss and Brier score (shadow minus served, a normal interval: the same
rows, so their noise cancels) and the labelled rows whose business outcome flips, by which model the
label sided with. A verdict names the better model on log loss only when that interval excludes 0 and
there are at least `min_labels` labelled rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.monitoring.performance import log_losses, mean_interval, realized, z_score
from service.monitoring.prediction_store import ShadowFrame


def _pairs(frame: ShadowFrame) -> list[tuple[str, str]]:
    return sorted({(str(a), str(b)) for a, b in zip(frame.served_version, frame.shadow_version, strict=True)})


def judge(frame: ShadowFrame, *, min_labels: int = 100, confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per pair of versions in `frame`, the challenger beside the served model on the same labelled rows
    (JSON-ready: NaN and infinities are null)."""
    z = z_score(confidence)
    out = []
    for served_version, shadow_version in _pairs(frame):
        pair = (frame.served_version == served_version) & (frame.shadow_version == shadow_version)
        refused = pair & np.isnan(frame.shadow_phat)
        both = pair & ~refused
        rows = both & ~np.isnan(frame.label)
        y = frame.label[rows]
        served_phat, shadow_phat = frame.served_phat[rows], frame.shadow_phat[rows]
        served_out, shadow_out = frame.served_outcome[rows], frame.shadow_outcome[rows]
        labelled = int(rows.sum())
        served = realized(served_phat, y, np.nan, confidence, outcome=served_out)
        shadow = realized(shadow_phat, y, np.nan, confidence, outcome=shadow_out)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_loss = mean_interval(log_losses(shadow_phat, y) - log_losses(served_phat, y), z)
            brier = mean_interval((shadow_phat - y) ** 2 - (served_phat - y) ** 2, z)
        flips = served_out != shadow_out
        enough = labelled >= min_labels
        out.append(
            {
                "served_version": served_version,
                "shadow_version": shadow_version,
                "compared": int(pair.sum()),
                "refused": int(refused.sum()),
                "labelled": labelled,
                "enough_labels": enough,
                "served": {k: v.to_dict() for k, v in served.items()},
                "shadow": {k: v.to_dict() for k, v in shadow.items()},
                "difference": {
                    "auc": _finite(shadow["auc"].value - served["auc"].value),
                    "log_loss": log_loss.to_dict(),
                    "brier": brier.to_dict(),
                },
                "flips": {
                    "labelled": int(flips.sum()),
                    "shadow_right": int((flips & (shadow_out == y)).sum()),
                    "served_right": int((flips & (served_out == y)).sum()),
                },
                "better_on_log_loss": _better(log_loss.lower, log_loss.upper) if enough else None,
            }
        )
    return out


def _better(lower: float, upper: float) -> str | None:
    """Which model's log loss is lower, when the paired interval (shadow - served) excludes 0."""
    if upper < 0:
        return "shadow"
    if lower > 0:
        return "served"
    return None


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def describe(pairs: list[dict[str, Any]]) -> list[str]:
    """Lines for a terminal: per pair, the counts, both AUCs and log losses, and the verdict."""
    if not pairs:
        return ["no shadow-scored rows in the period (is shadow scoring on, and the prediction log?)"]
    lines = []
    for p in pairs:
        head = (
            f"{p['shadow_version']} (shadow) beside {p['served_version']} (served): {p['compared']:,} rows "
            f"compared, {p['refused']:,} refused by the shadow, {p['labelled']:,} labelled"
        )
        lines.append(head)
        for metric in ("auc", "log_loss", "brier", "precision", "recall"):
            lines.append(
                f"  {metric:<10} served {_shown(p['served'][metric])}  shadow {_shown(p['shadow'][metric])}"
            )
        ll = p["difference"]["log_loss"]
        flips = p["flips"]
        lines.append(
            f"  log loss shadow - served {_num(ll['value'])} [{_num(ll['lower'])}, {_num(ll['upper'])}]; "
            f"{flips['labelled']:,} labelled outcome flips: shadow right {flips['shadow_right']:,}, "
            f"served right {flips['served_right']:,}"
        )
        verdict = p["better_on_log_loss"]
        if not p["enough_labels"]:
            lines.append("  too few labelled rows to judge")
        else:
            lines.append(f"  better on log loss: {verdict or 'neither (the interval holds 0)'}")
    return lines


def _shown(interval: dict[str, Any]) -> str:
    return f"{_num(interval['value'])} [{_num(interval['lower'])}, {_num(interval['upper'])}]"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
