"""Realized and estimated (CBPE) performance of the served model, by prediction-time cohort.

Pure numpy (no scipy: a serving install has none): it runs inside the serving workers (GET /performance,
the gauges) and the offline report.

Realized, over labelled rows (phat, label 0/1), each metric with an interval at `confidence`:
- auc: the Mann-Whitney statistic on midranks (a tied phat counts one half, as `roc_auc_score`); interval
  from DeLong's variance in its O(n log n) form (Sun & Xu), normal, clipped to [0, 1].
- log_loss (phat clipped to [eps, 1 - eps], eps the float64 machine epsilon, as scikit-learn does) and
  brier: means of per-row losses, normal (CLT) interval.
- observed_rate, positive_rate (phat > cutoff, the scorer's business outcome), precision and recall at the
  cutoff: proportions with Wilson score intervals.
- mean_phat: the mean with a normal (CLT) interval, the sampling error of the cohort's mean phat.
- calibration_slope and calibration_intercept: logistic regression of the label on logit(phat) (phat
  clipped as for log loss), both fitted jointly by Newton's method (the recalibration model of Cox); Wald
  intervals from the inverse Fisher information. A calibrated model has slope 1 and intercept 0. The
  calibration in the large as a rate is observed_rate against mean_phat.

Estimated (CBPE: no labels, phat assumed calibrated) is each metric's expectation when every label is an
independent Bernoulli(phat): auc from the expected ROC curve (expected true and false positives at each
distinct phat, trapezoid), precision = mean phat of the predicted positives, recall = their share of the
sum of phat, observed_rate = mean phat, brier = mean phat (1 - phat), log_loss = mean binary entropy;
positive_rate needs no label and is exact (its interval is the value). The interval is the band a
calibrated model's realized metric falls in for these phats (labels ~ Bernoulli(phat)): the sampling error
the gap is judged against. All those realized metrics are functions of five sums linear in the labels
(positives, their phat-rank sum, true positives, and the label terms of the Brier and log-loss sums), whose
mean and covariance are exact. With label counts large enough to be normal (their variance, over all rows
and over the predicted positives, at least EXACT_VARIANCE) the band is the delta method's normal interval
on those sums; below that (few labels: discrete, skewed) it is a parametric bootstrap, the quantiles of the
realized metric over DRAWS label vectors drawn from Bernoulli(phat) with a fixed seed. Either way the same
phats give the same band, and a million rows cost a few vector passes.

`evaluate` splits a frame of logged predictions into cohorts (UTC day or hour and version, version, or
everything) and gives each the estimated metrics over all its predictions, the estimated metrics over its
labelled rows only (what the realized metrics are compared with: the gap), the realized metrics and a
reliability diagram (equal-width phat bins over [0, 1], so bins line up across cohorts and over time).

Degenerate inputs (no rows, one class only, no predicted positive) give NaN, never an exception or a warning.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

_NORMAL = NormalDist()

EPS = float(np.finfo(np.float64).eps)
SEED = 14  # the parametric bootstrap's fixed seed: the same phats give the same bands
DRAWS = 1_000
# the bootstrap draws labels when a label count's variance is below EXACT_VARIANCE (discrete, skewed) and
# there are at most EXACT_MAX_ROWS rows; otherwise the five sums are normal (module doc)
EXACT_VARIANCE = 25.0
EXACT_MAX_ROWS = 20_000
NEWTON_ITERATIONS = 100
NEWTON_TOL = 1e-10
LOGLIK_ROUNDING = 1e-12
NAN = float("nan")

Cohorting = Literal["day", "hour", "version", "all"]
PERIOD_SECONDS = {"day": 86_400, "hour": 3_600}
PERIOD_FORMAT = {"day": "%Y-%m-%d", "hour": "%Y-%m-%dT%H"}
ALL = "all"

REALIZED_METRICS = (
    "auc",
    "log_loss",
    "brier",
    "observed_rate",
    "mean_phat",
    "calibration_slope",
    "calibration_intercept",
    "positive_rate",
    "precision",
    "recall",
)
ESTIMATED_METRICS = ("auc", "precision", "recall", "positive_rate", "observed_rate", "brier", "log_loss")
GAP_METRICS = ("auc", "precision", "recall", "observed_rate")


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass(frozen=True)
class Interval:
    value: float
    lower: float
    upper: float

    @classmethod
    def nan(cls) -> Interval:
        return cls(NAN, NAN, NAN)

    @classmethod
    def exact(cls, value: float) -> Interval:
        return cls(value, value, value)

    def excludes(self, x: float) -> bool:
        """x lies outside [lower, upper] (never when any of them is NaN)."""
        return bool(x < self.lower or x > self.upper)

    def to_dict(self) -> dict[str, float | None]:
        return {
            "value": _finite_or_none(self.value),
            "lower": _finite_or_none(self.lower),
            "upper": _finite_or_none(self.upper),
        }


@dataclass(frozen=True, eq=False)
class PredictionFrame:
    """Logged predictions, one entry per scored row (the prediction store's `frame`)."""

    scored_at: np.ndarray  # float64 epoch seconds
    version: np.ndarray  # object array of str
    phat: np.ndarray  # float64
    outcome: np.ndarray  # int8, the business outcome served
    label: np.ndarray  # float64 0.0 / 1.0, NaN while no label has come back

    def __post_init__(self) -> None:
        coerce = {
            "scored_at": np.float64,
            "version": object,
            "phat": np.float64,
            "outcome": np.int8,
            "label": np.float64,
        }
        for name, dtype in coerce.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype).reshape(-1))
        if len({getattr(self, name).shape[0] for name in coerce}) > 1:
            raise ValueError("the columns of a PredictionFrame differ in length")

    def __len__(self) -> int:
        return int(self.phat.shape[0])

    @classmethod
    def empty(cls) -> PredictionFrame:
        return cls(np.empty(0), np.empty(0, dtype=object), np.empty(0), np.empty(0), np.empty(0))


# ---- shared pieces ------------------------------------------------------------------------------------


def z_score(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence!r}")
    return _NORMAL.inv_cdf(0.5 + confidence / 2.0)


def _check_phat(phat: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(phat, dtype=np.float64).reshape(-1)
    if not np.all((p >= 0.0) & (p <= 1.0)):  # NaN fails too
        raise ValueError("phat must be probabilities in [0, 1]")
    return p


def _check_label(label: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(label, dtype=np.float64).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"{y.shape[0]} labels for {n} phats")
    if not np.all((y == 0.0) | (y == 1.0) | np.isnan(y)):
        raise ValueError("labels must be 0, 1 or NaN (no label)")
    return y


def _wilson(successes: float, n: float, z: float) -> Interval:
    if n <= 0:
        return Interval.nan()
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: np.ndarray, z: float) -> Interval:
    n = values.shape[0]
    if n == 0:
        return Interval.nan()
    mean = float(values.mean())
    if n == 1:
        return Interval(mean, NAN, NAN)
    half = z * float(values.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half)


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product without BLAS: its threads oversubscribe a host of busy serving workers."""
    return float(np.einsum("i,i->", a, b))


def _clipped(phat: np.ndarray) -> np.ndarray:
    return np.clip(phat, EPS, 1.0 - EPS)


def _group_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Index of the first entry of each run of equal values in a sorted array."""
    if sorted_values.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])


def _midranks(sorted_values: np.ndarray) -> np.ndarray:
    """1-based ranks of a sorted array, ties sharing their mean rank."""
    n = sorted_values.shape[0]
    starts = _group_starts(sorted_values)
    ends = np.r_[starts[1:], n]
    return np.repeat((starts + ends + 1) / 2.0, ends - starts)


# ---- realized -----------------------------------------------------------------------------------------


def _auc_delong(phat: np.ndarray, positive: np.ndarray, z: float) -> Interval:
    order = np.argsort(phat)
    v, pos = phat[order], positive[order]
    m = int(pos.sum())
    k = pos.shape[0] - m
    if m == 0 or k == 0:
        return Interval.nan()
    rank_all = _midranks(v)
    # placements: a positive's share of negatives below it, a negative's share of positives above it
    v10 = (rank_all[pos] - _midranks(v[pos])) / k
    v01 = 1.0 - (rank_all[~pos] - _midranks(v[~pos])) / m
    auc = float(v10.mean())
    if m < 2 or k < 2:
        return Interval(auc, NAN, NAN)
    half = z * math.sqrt(float(v10.var(ddof=1)) / m + float(v01.var(ddof=1)) / k)
    return Interval(auc, max(0.0, auc - half), min(1.0, auc + half))


def log_losses(phat: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = _clipped(phat)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p))


@dataclass(frozen=True)
class _Fit:
    """The recalibration model's log-likelihood, score and Fisher information at one (intercept, slope)."""

    beta: np.ndarray
    loglik: float
    score: np.ndarray
    information: np.ndarray

    @classmethod
    def at(cls, beta: np.ndarray, x: np.ndarray, y: np.ndarray) -> _Fit:
        eta = beta[0] + beta[1] * x
        p = expit(eta)
        w = p * (1.0 - p)
        residual = y - p
        sw, swx, swxx = float(w.sum()), _dot(w, x), _dot(w * x, x)
        return cls(
            beta=beta,
            loglik=_dot(y, eta) - float(np.logaddexp(0.0, eta).sum()),
            score=np.array([float(residual.sum()), _dot(residual, x)]),
            information=np.array([[sw, swx], [swx, swxx]]),
        )

    def newton_step(self) -> np.ndarray | None:
        det = float(np.linalg.det(self.information))
        if not math.isfinite(det) or det <= 0.0:
            return None
        step = np.linalg.solve(self.information, self.score)
        return step if bool(np.all(np.isfinite(step))) else None


def _fit_recalibration(x: np.ndarray, y: np.ndarray) -> _Fit | None:
    """MLE of (intercept, slope) in logit P(y=1) = a + b x, from the calibrated (0, 1); None if none."""
    fit = _Fit.at(np.array([0.0, 1.0]), x, y)
    for _ in range(NEWTON_ITERATIONS):
        step = fit.newton_step()
        if step is None:
            return None
        if float(np.abs(step).max()) <= NEWTON_TOL * (1.0 + float(np.abs(fit.beta).max())):
            return _Fit.at(fit.beta + step, x, y)
        # step halving keeps every iterate an ascent (a far start can overshoot); a fall within rounding
        # of the log-likelihood is no fall (near the optimum it is all rounding)
        t = 1.0
        candidate = _Fit.at(fit.beta + step, x, y)
        floor = fit.loglik - LOGLIK_ROUNDING * (1.0 + abs(fit.loglik))
        while candidate.loglik < floor:
            t /= 2.0
            if t < 1e-9:
                return fit  # no ascent left: the optimum, to rounding
            candidate = _Fit.at(fit.beta + t * step, x, y)
        fit = candidate
    return None  # no convergence: (quasi-)separation, the MLE does not exist


def _calibration(phat: np.ndarray, y: np.ndarray, z: float) -> tuple[Interval, Interval]:
    x = logit(_clipped(phat))
    if y.shape[0] < 3 or np.all(y == y[0]) or np.all(x == x[0]):
        return Interval.nan(), Interval.nan()
    fit = _fit_recalibration(x, y)
    if fit is None or not float(np.linalg.det(fit.information)) > 0.0:
        return Interval.nan(), Interval.nan()
    se = np.sqrt(np.diag(np.linalg.inv(fit.information)))
    a, b = float(fit.beta[0]), float(fit.beta[1])
    slope = Interval(b, b - z * float(se[1]), b + z * float(se[1]))
    intercept = Interval(a, a - z * float(se[0]), a + z * float(se[0]))
    return slope, intercept


def realized(
    phat: Sequence[float] | np.ndarray,
    label: Sequence[float] | np.ndarray,
    cutoff: float,
    confidence: float = 0.95,
    *,
    outcome: np.ndarray | None = None,
) -> dict[str, Interval]:
    """The metrics of REALIZED_METRICS over the labelled rows (rows with a NaN label are left out).
    `outcome`: the business outcome each row got, where it is known (it is phat > cutoff; a shadow row's
    is its challenger's, whose cutoff the log does not keep)."""
    z = z_score(confidence)
    p = _check_phat(phat)
    y = _check_label(label, p.shape[0])
    keep = ~np.isnan(y)
    p, y = p[keep], y[keep]
    n = p.shape[0]
    positive = y == 1.0
    predicted = p > cutoff if outcome is None else np.asarray(outcome)[keep] == 1
    true_positives = int((predicted & positive).sum())
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        slope, intercept = _calibration(p, y, z)
        return {
            "auc": _auc_delong(p, positive, z),
            "log_loss": mean_interval(log_losses(p, y), z),
            "brier": mean_interval((p - y) ** 2, z),
            "observed_rate": _wilson(int(positive.sum()), n, z),
            "mean_phat": mean_interval(p, z),
            "calibration_slope": slope,
            "calibration_intercept": intercept,
            "positive_rate": _wilson(int(predicted.sum()), n, z),
            "precision": _wilson(true_positives, int(predicted.sum()), z),
            "recall": _wilson(true_positives, int(positive.sum()), z),
        }


# ---- estimated (CBPE) ---------------------------------------------------------------------------------


def _expected_auc(v: np.ndarray) -> float:
    """AUC of the expected ROC curve of sorted phats: one step per distinct phat, trapezoid."""
    starts = _group_starts(v)
    if starts.shape[0] == 0:
        return NAN
    positives = np.add.reduceat(v, starts)
    negatives = np.add.reduceat(1.0 - v, starts)
    total_pos, total_neg = float(positives.sum()), float(negatives.sum())
    if total_pos <= 0.0 or total_neg <= 0.0:
        return NAN
    # walking the thresholds from the top: a step's negatives sit below every positive above it and
    # level with half of its own
    above = total_pos - np.cumsum(positives)
    return _dot(negatives, above + positives / 2.0) / (total_pos * total_neg)


@dataclass(frozen=True)
class _LinearSums:
    """Per row, the coefficients of the label in the five sums the realized metrics are made of."""

    columns: np.ndarray  # 5 x rows: 1, phat midrank, predicted positive, 1 - 2 phat, -logit(phat)
    brier_base: float  # sum of phat^2: the Brier sum's part without labels
    log_loss_base: float  # sum of -log(1 - phat)
    rows: int
    predicted: int

    @classmethod
    def of(cls, v: np.ndarray, cutoff: float) -> _LinearSums:
        c = _clipped(v)
        predicted = v > cutoff
        columns = np.stack([np.ones_like(v), _midranks(v), predicted, 1.0 - 2.0 * v, -logit(c)])
        return cls(columns, _dot(v, v), float(-np.log1p(-c).sum()), v.shape[0], int(predicted.sum()))

    def mean(self, v: np.ndarray) -> np.ndarray:
        """The five sums' means when labels ~ Bernoulli(phat)."""
        return np.array([_dot(column, v) for column in self.columns])

    def covariance(self, v: np.ndarray) -> np.ndarray:
        weighted = self.columns * (v * (1.0 - v))
        k = self.columns.shape[0]
        cov = np.empty((k, k))
        for i in range(k):
            for j in range(i + 1):
                cov[i, j] = cov[j, i] = _dot(weighted[i], self.columns[j])
        return cov

    def discrete(self, v: np.ndarray) -> bool:
        """Few enough rows, and a label count (all or predicted positive) too small to be normal."""
        if self.rows > EXACT_MAX_ROWS:
            return False
        w = v * (1.0 - v)
        spread = float(w.sum()) if self.predicted == 0 else min(float(w.sum()), _dot(w, self.columns[2]))
        return spread < EXACT_VARIANCE

    def metrics(self, sums: np.ndarray) -> dict[str, np.ndarray]:
        """The realized metrics of each row of sums (draws x 5)."""
        n = self.rows
        pos = np.clip(sums[:, 0], 0.0, n)
        return {
            "auc": np.clip((sums[:, 1] - pos * (pos + 1.0) / 2.0) / (pos * (n - pos)), 0.0, 1.0),
            "precision": np.clip(sums[:, 2] / self.predicted, 0.0, 1.0),
            "recall": np.clip(sums[:, 2] / pos, 0.0, 1.0),
            "observed_rate": pos / n,
            "brier": (self.brier_base + sums[:, 3]) / n,
            "log_loss": (self.log_loss_base + sums[:, 4]) / n,
        }

    def gradients(self, mean: np.ndarray) -> dict[str, np.ndarray]:
        """Each metric's gradient in the five sums, at their mean (the delta method)."""
        # numpy scalars: a zero count divides to inf or NaN (under the caller's errstate), not an exception
        n, predicted, (pos, rank_sum, tp) = np.float64(self.rows), np.float64(self.predicted), mean[:3]
        pairs = pos * (n - pos)
        mann_whitney = rank_sum - pos * (pos + 1.0) / 2.0
        d_auc = (-(pos + 0.5) * pairs - mann_whitney * (n - 2.0 * pos)) / pairs**2
        return {
            "auc": np.array([d_auc, 1.0 / pairs, 0.0, 0.0, 0.0]),
            "precision": np.array([0.0, 0.0, 1.0 / predicted, 0.0, 0.0]),
            "recall": np.array([-tp / pos**2, 0.0, 1.0 / pos, 0.0, 0.0]),
            "observed_rate": np.array([1.0 / n, 0.0, 0.0, 0.0, 0.0]),
            "brier": np.array([0.0, 0.0, 0.0, 1.0 / n, 0.0]),
            "log_loss": np.array([0.0, 0.0, 0.0, 0.0, 1.0 / n]),
        }

    def draws(self, v: np.ndarray) -> np.ndarray:
        """The five sums of DRAWS label vectors ~ Bernoulli(phat), seeded (no BLAS, see _dot)."""
        labels = (np.random.default_rng(SEED).random((DRAWS, self.rows)) < v).astype(np.float64)
        return np.stack([np.einsum("dn,n->d", labels, column) for column in self.columns], axis=1)


PROPORTIONS = frozenset({"auc", "precision", "recall", "observed_rate"})


def _quantile_band(draws: np.ndarray, value: float, confidence: float) -> Interval:
    """value with the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the finite draws."""
    finite = np.sort(draws[np.isfinite(draws)])
    if finite.shape[0] == 0 or not math.isfinite(value):
        return Interval(value, NAN, NAN)
    # np.quantile's default (linear) definition, without its per-call cost
    h = (finite.shape[0] - 1) * np.array([(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, finite.shape[0] - 1)
    lower, upper = finite[lo] + (h - lo) * (finite[hi] - finite[lo])
    return Interval(value, float(lower), float(upper))


def _bands(
    sums: _LinearSums, v: np.ndarray, values: dict[str, float], confidence: float
) -> dict[str, Interval]:
    if sums.discrete(v):
        draws = sums.metrics(sums.draws(v))
        return {name: _quantile_band(draws[name], values[name], confidence) for name in draws}
    mean = sums.mean(v)
    centre = {name: float(x[0]) for name, x in sums.metrics(mean[None, :]).items()}
    cov, z = sums.covariance(v), z_score(confidence)
    out = {}
    for name, g in sums.gradients(mean).items():
        half = z * math.sqrt(max(float(g @ cov @ g), 0.0)) if np.all(np.isfinite(g)) else NAN
        lower, upper = centre[name] - half, centre[name] + half
        if name in PROPORTIONS:
            lower, upper = max(lower, 0.0), min(upper, 1.0)
        out[name] = Interval(values[name], lower, upper) if math.isfinite(values[name]) else Interval.nan()
    return out


def estimated(
    phat: Sequence[float] | np.ndarray, cutoff: float, confidence: float = 0.95
) -> dict[str, Interval]:
    """The metrics of ESTIMATED_METRICS a calibrated model would realize on these phats (CBPE)."""
    z_score(confidence)
    v = np.sort(_check_phat(phat))
    if v.shape[0] == 0:
        return {name: Interval.nan() for name in ESTIMATED_METRICS}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        sums = _LinearSums.of(v, cutoff)
        # expectations are linear in the labels: the metrics of the expected sums, but for AUC (a ratio
        # of label-dependent counts), which is the expected ROC curve's
        values = {name: float(x[0]) for name, x in sums.metrics(sums.mean(v)[None, :]).items()}
        values["auc"] = _expected_auc(v)
        out = _bands(sums, v, values, confidence)
    out["positive_rate"] = Interval.exact(sums.predicted / sums.rows)
    return {name: out[name] for name in ESTIMATED_METRICS}


# ---- cohorts ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    value: float  # realized - estimated on the labelled rows
    significant: bool  # enough labels, and the realized value outside the estimated band

    def to_dict(self) -> dict[str, Any]:
        return {"value": _finite_or_none(self.value), "significant": self.significant}


@dataclass(frozen=True)
class ReliabilityBin:
    lower: float
    upper: float
    count: int  # labelled rows with phat in (lower, upper] ([0, upper] for the first bin)
    mean_phat: float
    observed: Interval  # their observed rate, Wilson interval

    def to_dict(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "mean_phat": _finite_or_none(self.mean_phat),
            "observed": _finite_or_none(self.observed.value),
            "observed_lower": _finite_or_none(self.observed.lower),
            "observed_upper": _finite_or_none(self.observed.upper),
        }


def _intervals(metrics: dict[str, Interval] | None) -> dict[str, Any] | None:
    return None if metrics is None else {k: v.to_dict() for k, v in metrics.items()}


@dataclass(frozen=True)
class CohortPerformance:
    cohort: str  # "2026-12-01", "2026-12-01T13", a version, or "all"
    version: str  # a version or "all"
    start: float | None  # epoch seconds; a period's bounds, else the report's since and until
    end: float | None
    predictions: int
    labelled: int
    coverage: Interval  # labelled / predictions, Wilson interval
    estimated: dict[str, Interval]
    estimated_on_labelled: dict[str, Interval]
    realized: dict[str, Interval] | None  # None without a label
    enough_labels: bool
    gap: dict[str, Gap]
    reliability: tuple[ReliabilityBin, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cohort": self.cohort,
            "version": self.version,
            "start": self.start,
            "end": self.end,
            "predictions": self.predictions,
            "labelled": self.labelled,
            "coverage": self.coverage.to_dict(),
            "estimated": _intervals(self.estimated),
            "estimated_on_labelled": _intervals(self.estimated_on_labelled),
            "realized": _intervals(self.realized),
            "enough_labels": self.enough_labels,
            "gap": {k: g.to_dict() for k, g in self.gap.items()},
            "reliability": [b.to_dict() for b in self.reliability],
        }


@dataclass(frozen=True)
class PerformanceReport:
    cutoff: float
    by: Cohorting
    confidence: float
    min_labels: int
    since: float | None
    until: float | None
    cohorts: tuple[CohortPerformance, ...]

    def to_dict(self) -> dict[str, Any]:
        """The GET /performance JSON: NaN and infinities are null."""
        return {
            "cutoff": self.cutoff,
            "by": self.by,
            "confidence": self.confidence,
            "min_labels": self.min_labels,
            "since": self.since,
            "until": self.until,
            "cohorts": [c.to_dict() for c in self.cohorts],
        }


def _reliability(phat: np.ndarray, y: np.ndarray, bins: int, z: float) -> tuple[ReliabilityBin, ...]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.searchsorted(edges[1:-1], phat, side="left")  # (lower, upper], as calibration_curve
    counts = np.bincount(index, minlength=bins)
    phat_sums = np.bincount(index, weights=phat, minlength=bins)
    positives = np.bincount(index, weights=y, minlength=bins)
    return tuple(
        ReliabilityBin(
            lower=float(edges[k]),
            upper=float(edges[k + 1]),
            count=int(counts[k]),
            mean_phat=float(phat_sums[k] / counts[k]) if counts[k] else NAN,
            observed=_wilson(float(positives[k]), int(counts[k]), z),
        )
        for k in range(bins)
    )


@dataclass(frozen=True)
class _Settings:
    cutoff: float
    min_labels: int
    confidence: float
    bins: int


def _cohort(
    frame: PredictionFrame,
    rows: np.ndarray,
    names: tuple[str, str, float | None, float | None],
    s: _Settings,
) -> CohortPerformance:
    phat, label = frame.phat[rows], frame.label[rows]
    labelled = ~np.isnan(label)
    phat_l, label_l = phat[labelled], label[labelled]
    n_labelled = int(phat_l.shape[0])
    on_labelled = estimated(phat_l, s.cutoff, s.confidence)
    real = realized(phat_l, label_l, s.cutoff, s.confidence) if n_labelled else None
    enough = n_labelled >= s.min_labels
    gap: dict[str, Gap] = {}
    for name in GAP_METRICS:
        value = real[name].value - on_labelled[name].value if real is not None else NAN
        significant = enough and real is not None and on_labelled[name].excludes(real[name].value)
        gap[name] = Gap(value, significant)
    z = z_score(s.confidence)
    cohort, version, start, end = names
    return CohortPerformance(
        cohort=cohort,
        version=version,
        start=start,
        end=end,
        predictions=int(phat.shape[0]),
        labelled=n_labelled,
        coverage=_wilson(n_labelled, int(phat.shape[0]), z),
        estimated=estimated(phat, s.cutoff, s.confidence),
        estimated_on_labelled=on_labelled,
        realized=real,
        enough_labels=enough,
        gap=gap,
        reliability=_reliability(phat_l, label_l, s.bins, z),
    )


def _version_codes(version: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct versions, sorted, and each row's index into them."""
    first_seen: dict[str, int] = {}
    codes = np.fromiter(
        (first_seen.setdefault(str(v), len(first_seen)) for v in version.tolist()),
        dtype=np.int64,
        count=version.shape[0],
    )
    names = sorted(first_seen)
    remap = np.array([names.index(v) for v in first_seen], dtype=np.int64)
    return names, remap[codes] if codes.shape[0] else codes


Cohort = tuple[np.ndarray, tuple[str, str, float | None, float | None]]


def _period_cohorts(
    frame: PredictionFrame, by: str, window: tuple[float | None, float | None]
) -> Iterator[Cohort]:
    """Per (version, UTC period) in time order, then the version's "all" row; versions in name order."""
    names, codes = _version_codes(frame.version)
    seconds = PERIOD_SECONDS[by]
    period = np.floor(frame.scored_at / seconds).astype(np.int64)
    span = int(period.max() - period.min()) + 1
    key = codes * span + (period - period.min())
    order = np.argsort(key, kind="stable")
    key_sorted = key[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(key_sorted)) + 1, key_sorted.shape[0]]
    version_start = 0
    for i in range(bounds.shape[0] - 1):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        code = int(codes[order[lo]])
        start = float(period[order[lo]] * seconds)
        label = datetime.fromtimestamp(start, tz=UTC).strftime(PERIOD_FORMAT[by])
        yield order[lo:hi], (label, names[code], start, start + seconds)
        if hi == key_sorted.shape[0] or int(codes[order[hi]]) != code:
            yield order[version_start:hi], (ALL, names[code], *window)
            version_start = hi


def _cohorts(frame: PredictionFrame, by: str, window: tuple[float | None, float | None]) -> Iterator[Cohort]:
    if by == ALL:
        yield np.arange(len(frame)), (ALL, ALL, *window)
    elif len(frame) == 0:
        return
    elif by == "version":
        names, codes = _version_codes(frame.version)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        for code, name in enumerate(names):
            yield order[bounds[code] : bounds[code + 1]], (name, name, *window)
    else:
        yield from _period_cohorts(frame, by, window)


def evaluate(
    frame: PredictionFrame,
    *,
    cutoff: float,
    by: Cohorting,
    min_labels: int = 100,
    confidence: float = 0.95,
    bins: int = 10,
    since: float | None = None,
    until: float | None = None,
) -> PerformanceReport:
    """Estimated, realized and their gap per cohort of `frame`.

    since/until: the window the frame was read for (the report's and the non-period cohorts' bounds);
    by default the first and the last prediction's time.
    """
    z_score(confidence)
    if by not in ("day", "hour", "version", ALL):
        raise ValueError(f"by must be day, hour, version or all, not {by!r}")
    if bins < 1 or min_labels < 0:
        raise ValueError("bins must be at least 1 and min_labels not negative")
    _check_phat(frame.phat)
    _check_label(frame.label, len(frame))
    if len(frame):
        since = float(frame.scored_at.min()) if since is None else since
        until = float(frame.scored_at.max()) if until is None else until
    settings = _Settings(cutoff, min_labels, confidence, bins)
    cohorts = tuple(
        _cohort(frame, rows, names, settings) for rows, names in _cohorts(frame, by, (since, until))
    )
    return PerformanceReport(cutoff, by, confidence, min_labels, since, until, cohorts)


def expit(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), without overflow for large |x| (scipy.special.expit's value; a test holds them)."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logit(p: np.ndarray) -> np.ndarray:
    """ln(p / (1 - p)) (scipy.special.logit's value; a test holds them)."""
    return np.log(p / (1.0 - p))
