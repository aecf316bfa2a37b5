"""Holdout evaluation of binary probability models: AUC with a bootstrap interval, log loss, Brier score,
calibration by decile, calibration slope and intercept, and the share of business outcomes that flip
between two models.

Calibration slope and intercept (the "weak calibration" of Van Calster et al., 2016), on the logit
lp = log(p / (1 - p)) of each row's probability:
- slope b of the logistic fit y ~ a + b * lp (1 = calibrated; below 1: predictions too extreme, above 1:
  too timid);
- intercept a of y ~ offset(lp) + a, the slope held at 1 (calibration-in-the-large: 0 = calibrated; the
  log-odds shift that would make the mean prediction match the observed rate).

The bootstrap is paired (every model is scored on the same resamples) and seeded, so a comparison is
reproducible and the interval of a difference accounts for the correlation between the models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.stats import rankdata

SEED = 26
CONFIDENCE = 0.95
PROB_CLIP = 1e-15
BOOTSTRAP_BLOCK = 100  # resamples ranked at once
NEWTON_STEPS = 50
NEWTON_TOLERANCE = 1e-10


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half); equals sklearn's roc_auc_score."""
    y = np.asarray(y, dtype=bool)
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both classes in y")
    ranks = rankdata(p)
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _auc_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUC of each row of (y, p) matrices (resamples); NaN where a resample has one class."""
    ranks = rankdata(p, axis=1)
    positives = y.sum(axis=1)
    negatives = y.shape[1] - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = ((ranks * y).sum(axis=1) - positives * (positives + 1) / 2) / (
            positives * negatives
        )
    return out


def bootstrap_auc(
    y: np.ndarray, scores: Mapping[str, np.ndarray], resamples: int = 1_000, seed: int = SEED
) -> dict[str, np.ndarray]:
    """AUC of every model on the same `resamples` bootstrap resamples of the rows."""
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {name: [] for name in scores}
    done = 0
    while done < resamples:
        block = min(BOOTSTRAP_BLOCK, resamples - done)
        index = rng.integers(0, y.size, size=(block, y.size))
        yb = y[index]
        for name, p in scores.items():
            out[name].append(_auc_rows(yb, np.asarray(p, dtype=np.float64)[index]))
        done += block
    return {name: np.concatenate(parts) if parts else np.array([]) for name, parts in out.items()}


def interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of the finite samples."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return (float(low), float(high))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(np.asarray(p, dtype=np.float64), PROB_CLIP, 1 - PROB_CLIP)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def calibration_by_decile(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Rows sorted by phat, cut into `bins` equal-count groups: mean predicted vs observed rate per group."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    table = []
    for i, part in enumerate(np.array_split(order, bins)):
        if part.size == 0:
            continue
        table.append(
            {
                "decile": i + 1,
                "rows": int(part.size),
                "mean_phat": float(p[part].mean()),
                "observed_rate": float(y[part].mean()),
            }
        )
    return table


def calibration_error(table: list[dict[str, float]]) -> float:
    """Row-weighted mean |mean phat - observed rate| over the deciles (expected calibration error)."""
    rows = sum(t["rows"] for t in table)
    return float(sum(t["rows"] * abs(t["mean_phat"] - t["observed_rate"]) for t in table) / rows)


@dataclass(frozen=True)
class LogisticLine:
    """The maximum-likelihood fit of y ~ Bernoulli(sigmoid(intercept + slope * x)), with the standard
    errors and covariance of the two parameters (inverse observed information)."""

    intercept: float
    slope: float
    intercept_se: float
    slope_se: float
    covariance: float
    rows: int
    converged: bool
    log_likelihood: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "intercept": self.intercept,
            "slope": self.slope,
            "intercept_se": self.intercept_se,
            "slope_se": self.slope_se,
            "covariance": self.covariance,
            "rows": self.rows,
            "converged": self.converged,
            "log_likelihood": self.log_likelihood,
        }


def _bernoulli_llf(y: np.ndarray, eta: np.ndarray) -> float:
    """sum of y * eta - log(1 + e^eta), computed without overflow."""
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def fit_logistic_line(x: np.ndarray, y: np.ndarray, start: tuple[float, float] = (0.0, 1.0)) -> LogisticLine:
    """Newton's method with step halving on the log likelihood (it never decreases). `converged` is false
    when the steps do not settle (e.g. separated classes, where the slope runs off to infinity)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    design = np.column_stack([np.ones_like(x), x])
    beta = np.array(start, dtype=np.float64)
    llf = _bernoulli_llf(y, design @ beta)
    converged = False
    for _ in range(NEWTON_STEPS):
        p = 1.0 / (1.0 + np.exp(-(design @ beta)))
        w = p * (1 - p)
        information = design.T @ (design * w[:, None])
        try:
            step = np.linalg.solve(information, design.T @ (y - p))
        except np.linalg.LinAlgError:
            break
        for _ in range(30):
            candidate = beta + step
            new_llf = _bernoulli_llf(y, design @ candidate)
            if new_llf >= llf - 1e-12:
                break
            step = step / 2
        beta, llf = candidate, new_llf
        if float(np.max(np.abs(step))) < NEWTON_TOLERANCE:
            converged = True
            break
    p = 1.0 / (1.0 + np.exp(-(design @ beta)))
    information = design.T @ (design * (p * (1 - p))[:, None])
    try:
        cov = np.linalg.inv(information)
    except np.linalg.LinAlgError:
        cov = np.full((2, 2), np.nan)
    return LogisticLine(
        intercept=float(beta[0]),
        slope=float(beta[1]),
        intercept_se=float(np.sqrt(cov[0, 0])) if cov[0, 0] >= 0 else float("nan"),
        slope_se=float(np.sqrt(cov[1, 1])) if cov[1, 1] >= 0 else float("nan"),
        covariance=float(cov[0, 1]),
        rows=int(y.size),
        converged=converged,
        log_likelihood=llf,
    )


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), PROB_CLIP, 1 - PROB_CLIP)
    out: np.ndarray = np.log(p) - np.log1p(-p)
    return out


@dataclass(frozen=True)
class Calibration:
    """Calibration slope (y ~ a + b * logit p) and intercept (y ~ offset(logit p) + a), with standard
    errors. Calibrated: slope 1, intercept 0."""

    slope: float
    slope_se: float
    intercept: float
    intercept_se: float
    converged: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "slope": self.slope,
            "slope_se": self.slope_se,
            "intercept": self.intercept,
            "intercept_se": self.intercept_se,
            "converged": self.converged,
        }


def calibration_in_the_large(lp: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, its standard error) with sum(sigmoid(lp + a)) = sum(y): the log-odds shift that matches the
    mean prediction to the observed rate. Infinite when y has a single class."""
    lp = np.asarray(lp, dtype=np.float64)
    target = float(np.sum(y))
    if target <= 0 or target >= lp.size:
        return (float("-inf") if target <= 0 else float("inf"), float("nan"))

    def excess(a: float) -> float:
        return float(np.sum(1.0 / (1.0 + np.exp(-(lp + a))))) - target

    low, high = -1.0, 1.0
    while excess(low) > 0:
        low *= 2
    while excess(high) < 0:
        high *= 2
    a = float(brentq(excess, low, high, xtol=1e-13))
    p = 1.0 / (1.0 + np.exp(-(lp + a)))
    return a, float(1.0 / np.sqrt(np.sum(p * (1 - p))))


def calibration(y: np.ndarray, p: np.ndarray) -> Calibration:
    """Calibration slope and intercept of probabilities p on labels y."""
    lp = logit(p)
    y = np.asarray(y, dtype=np.float64)
    line = fit_logistic_line(lp, y)
    intercept, intercept_se = calibration_in_the_large(lp, y)
    return Calibration(
        slope=line.slope,
        slope_se=line.slope_se,
        intercept=intercept,
        intercept_se=intercept_se,
        converged=line.converged,
    )


def flip_share(outcome_a: np.ndarray, outcome_b: np.ndarray) -> float:
    """Share of rows whose business outcome differs between two models."""
    a, b = np.asarray(outcome_a), np.asarray(outcome_b)
    return float(np.mean(a != b)) if a.size else 0.0


@dataclass(frozen=True)
class Evaluation:
    """One model on one holdout."""

    rows: int
    auc: float
    auc_ci: tuple[float, float]
    log_loss: float
    brier: float
    calibration: list[dict[str, float]]
    calibration_error: float
    positive_rate: float  # share of rows with business_outcome 1
    calibration_fit: Calibration | None = None

    def as_dict(self) -> dict[str, Any]:
        fit = self.calibration_fit
        return {
            "calibration_slope": fit.slope if fit else None,
            "calibration_slope_se": fit.slope_se if fit else None,
            "calibration_intercept": fit.intercept if fit else None,
            "calibration_intercept_se": fit.intercept_se if fit else None,
            "rows": self.rows,
            "auc": self.auc,
            "auc_ci95": list(self.auc_ci),
            "log_loss": self.log_loss,
            "brier": self.brier,
            "calibration_error": self.calibration_error,
            "calibration_by_decile": self.calibration,
            "outcome_positive_rate": self.positive_rate,
        }


def evaluate_models(
    y: np.ndarray,
    scores: Mapping[str, np.ndarray],
    outcomes: Mapping[str, np.ndarray],
    *,
    resamples: int = 1_000,
    seed: int = SEED,
    baseline: str | None = None,
) -> tuple[dict[str, Evaluation], dict[str, dict[str, Any]]]:
    """Evaluate several models on the same rows.

    scores: phat per model; outcomes: business_outcome (0/1) per model on the same rows. With a baseline,
    also each model's differences to it: AUC (point and paired-bootstrap interval), log loss, Brier, and
    the share of rows whose outcome flips.
    """
    y = np.asarray(y, dtype=np.int64)
    boot = bootstrap_auc(y, scores, resamples, seed) if resamples > 0 else {}
    results: dict[str, Evaluation] = {}
    for name, p in scores.items():
        p = np.asarray(p, dtype=np.float64)
        table = calibration_by_decile(y, p)
        results[name] = Evaluation(
            rows=int(y.size),
            auc=auc(y, p),
            auc_ci=interval(boot[name]) if boot else (float("nan"), float("nan")),
            log_loss=log_loss(y, p),
            brier=brier(y, p),
            calibration=table,
            calibration_error=calibration_error(table),
            positive_rate=float(np.mean(outcomes[name])),
            calibration_fit=calibration(y, p),
        )
    differences: dict[str, dict[str, Any]] = {}
    if baseline is not None:
        for name in scores:
            if name == baseline:
                continue
            diff = boot[name] - boot[baseline] if boot else np.array([])
            differences[name] = {
                "vs": baseline,
                "auc": results[name].auc - results[baseline].auc,
                "auc_ci95": list(interval(diff)),
                "log_loss": results[name].log_loss - results[baseline].log_loss,
                "brier": results[name].brier - results[baseline].brier,
                "outcome_flip_share": flip_share(outcomes[name], outcomes[baseline]),
            }
    return results, differences
