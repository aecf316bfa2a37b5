"""Drift statistics as pure functions, shared by the server's monitor and the offline report.

- Numeric inputs are binned on the reference decile edges (10 equal-mass bins of the training data; the
  outer bins are open-ended). PSI compares the present values' bin shares with the reference's; the
  missing rate is compared separately (a column can drift by going missing without changing shape).
- Categorical inputs are distributions over their levels plus "missing" and "unseen"; they get PSI and the
  Jensen-Shannon distance (base 2, in [0, 1]). For small shifts JS² ≈ PSI / (8 ln 2), so JS 0.13 / 0.19
  are the equivalents of PSI 0.1 / 0.2.
- Empty bins get EPSILON before the logarithms (the usual PSI convention), on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EPSILON = 1e-4
OK, WARN, ALERT = "ok", "warn", "alert"
STATUS_LEVEL = {OK: 0, WARN: 1, ALERT: 2}


def decile_bins(quantiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Reference quantile edges q0..qK -> (interior edges for searchsorted, reference share per bin).

    Bins are (-inf, e1), [e1, e2), ..., [eM, +inf) over the distinct interior edges, so values outside the
    reference range land in the outer bins. Tied edges (a point mass) merge bins; the quantile interval
    [q_k, q_k+1] (mass 1/K) belongs to the bin that holds q_k, which is exact for any reference.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 1 or q.size < 2 or not np.all(np.diff(q) >= 0):
        raise ValueError("quantiles must be at least two non-decreasing edges")
    edges = np.unique(q[1:-1])
    owner = np.searchsorted(edges, q[:-1], side="right")
    expected = np.bincount(owner, minlength=edges.size + 1).astype(np.float64) / (q.size - 1)
    return edges, expected


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin of the present (non-NaN) values; len(edges) + 1 bins."""
    present = values[~np.isnan(values)]
    return np.bincount(np.searchsorted(edges, present, side="right"), minlength=edges.size + 1)


def _shares(counts: np.ndarray | Sequence[float], eps: float) -> np.ndarray:
    arr = np.asarray(counts, dtype=np.float64)
    total = arr.sum()
    if total <= 0:
        raise ValueError("a distribution needs a positive total")
    return np.maximum(arr / total, eps)


def psi(
    expected: np.ndarray | Sequence[float], actual: np.ndarray | Sequence[float], eps: float = EPSILON
) -> float:
    """Population stability index Σ (a - e) ln(a / e) over bins; counts or shares on either side."""
    e = _shares(expected, eps)
    a = _shares(actual, eps)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(expected: np.ndarray | Sequence[float], actual: np.ndarray | Sequence[float]) -> float:
    """Jensen-Shannon distance, base 2 (0 = same distribution, 1 = disjoint): scipy's
    `jensenshannon(e, a, base=2)`, computed here so that a serving replica needs no scipy (a test holds
    the two together)."""
    e = _shares(expected, 0.0)
    a = _shares(actual, 0.0)
    if e.shape != a.shape:
        raise ValueError(f"bins differ: {e.shape} vs {a.shape}")
    m = (e + a) / 2.0
    divergence = _relative_entropy(e, m) + _relative_entropy(a, m)
    return float(np.sqrt(divergence / np.log(2.0) / 2.0))


def _relative_entropy(p: np.ndarray, m: np.ndarray) -> float:
    """Σ p ln(p / m), an empty bin of p adding 0 (m > 0 wherever p > 0: m is half p plus half another)."""
    full = p > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(full, p * np.log(np.where(full, p, 1.0) / np.where(full, m, 1.0)), 0.0)
    return float(np.sum(terms))


@dataclass(frozen=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_alert: float = 0.2
    js_warn: float = 0.13
    js_alert: float = 0.19
    missing_warn: float = 0.02
    missing_alert: float = 0.05
    unseen_warn: float = 0.001
    unseen_alert: float = 0.01

    @classmethod
    def from_settings(cls, settings: object) -> Thresholds:
        return cls(**{f: getattr(settings, f"drift_{f}") for f in cls.__dataclass_fields__})


def grade(value: float | None, warn: float, alert: float) -> str:
    if value is None or not np.isfinite(value):
        return OK
    return ALERT if value >= alert else WARN if value >= warn else OK


def worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=STATUS_LEVEL.__getitem__, default=OK)
