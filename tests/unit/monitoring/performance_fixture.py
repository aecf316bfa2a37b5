"""Inputs for the performance report's tests: a GET /performance dict of the shape
`PerformanceReport.to_dict()` gives, built by hand (every field under the test's control: edge cases,
hostile strings), and a synthetic prediction log (seeded) for `evaluate` itself."""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from service.monitoring.performance import PredictionFrame

DAY = 86_400.0
START = 1_796_083_200.0  # 2026-12-01T00:00:00Z
CUTOFF = 0.2187


def interval(value: float, half: float) -> dict[str, float | None]:
    if math.isnan(value):
        return {"value": None, "lower": None, "upper": None}
    return {"value": value, "lower": value - half, "upper": value + half}


def cohort(
    name: str, version: str, start: float, end: float, predictions: int, labelled: int, min_labels: int
) -> dict[str, Any]:
    rng = np.random.default_rng(zlib.crc32(f"{name}/{version}".encode()))
    half = 1.0 / math.sqrt(max(labelled, 1))
    auc = 0.8 + rng.normal(0, 0.01)
    metrics = {
        "auc": auc,
        "brier": 0.1,
        "log_loss": 0.33,
        "observed_rate": 0.12,
        "mean_phat": 0.12,
        "calibration_slope": 1.0 + rng.normal(0, 0.05),
        "calibration_intercept": 0.0,
        "positive_rate": 0.25,
        "precision": 0.3,
        "recall": 0.6,
    }
    estimated = {k: interval(metrics[k], 0.02) for k in ("auc", "precision", "recall", "positive_rate")}
    estimated |= {k: interval(metrics[k], 0.01) for k in ("observed_rate", "brier", "log_loss")}
    realized = {k: interval(v, half * 0.3) for k, v in metrics.items()} if labelled else None
    gap = {
        m: {"value": (0.01 if labelled else None), "significant": False}
        for m in ("auc", "precision", "recall", "observed_rate")
    }
    bins = [
        {
            "lower": i / 10,
            "upper": (i + 1) / 10,
            "count": labelled // 10,
            "mean_phat": i / 10 + 0.05 if labelled else None,
            "observed": i / 10 + 0.05 + rng.normal(0, 0.01) if labelled else None,
            "observed_lower": i / 10 if labelled else None,
            "observed_upper": i / 10 + 0.1 if labelled else None,
        }
        for i in range(10)
    ]
    return {
        "cohort": name,
        "version": version,
        "start": start,
        "end": end,
        "predictions": predictions,
        "labelled": labelled,
        "coverage": interval(labelled / predictions, 0.01),
        "estimated": estimated,
        "estimated_on_labelled": estimated,
        "realized": realized,
        "enough_labels": labelled >= min_labels,
        "gap": gap,
        "reliability": bins,
    }


def report(versions: tuple[str, ...] = ("v1",), days: int = 5, min_labels: int = 100) -> dict[str, Any]:
    """Day cohorts: the last day has no labels yet, the one before it too few."""
    cohorts = []
    for version in versions:
        for d in range(days):
            labelled = [2000, 1500, 1200, 40, 0][d % 5] if days > 1 else 2000
            day = f"2026-12-{d + 1:02d}"
            cohorts.append(
                cohort(day, version, START + d * DAY, START + (d + 1) * DAY, 5000, labelled, min_labels)
            )
        total = sum(c["labelled"] for c in cohorts if c["version"] == version)
        cohorts.append(cohort("all", version, START, START + days * DAY, 5000 * days, total, min_labels))
    return {
        "cutoff": CUTOFF,
        "by": "day",
        "confidence": 0.95,
        "min_labels": min_labels,
        "since": START,
        "until": START + days * DAY,
        "cohorts": cohorts,
    }


def synthetic_frame(n: int = 20_000, days: int = 5, seed: int = 14) -> PredictionFrame:
    """Logged predictions over `days` days from v1 (70%) and v2, labels drawn from phat (a calibrated
    model), fewer of them the more recent the prediction (label delay): the last day has few."""
    rng = np.random.default_rng(seed)
    scored = START + rng.uniform(0, days * DAY, n)
    phat = 1 / (1 + np.exp(-rng.normal(-2, 1.2, n)))
    label = (rng.uniform(size=n) < phat).astype(np.float64)
    age_days = (START + days * DAY - scored) / DAY
    label[rng.uniform(size=n) > np.clip(age_days / 3, 0, 1) * 0.8] = np.nan
    version = np.where(rng.uniform(size=n) < 0.7, "v1", "v2").astype(object)
    outcome = (phat > CUTOFF).astype(np.int8)
    return PredictionFrame(scored_at=scored, version=version, phat=phat, outcome=outcome, label=label)
