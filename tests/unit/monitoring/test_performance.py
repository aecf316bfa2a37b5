"""Realized and estimated (CBPE) performance: the figures of scikit-learn and statsmodels, honest bands."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit
from scipy.stats import norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from service.monitoring import performance
from service.monitoring.performance import (
    ESTIMATED_METRICS,
    REALIZED_METRICS,
    Interval,
    PredictionFrame,
    estimated,
    evaluate,
    realized,
)

CUTOFF = 0.3
Z = float(norm.ppf(0.975))
DAY = 86_400.0
T0 = datetime(2026, 12, 1, tzinfo=UTC).timestamp()


def population(n: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """phat of a plausible propensity model and labels drawn from it (calibrated)."""
    rng = np.random.default_rng(seed)
    phat = expit(rng.normal(-1.2, 1.1, n))
    if ties:
        phat = np.round(phat, 2)
    return phat, (rng.random(n) < phat).astype(np.float64)


def shifted_labels(phat: np.ndarray, seed: int, *, intercept: float = 0.0, slope: float = 1.0) -> np.ndarray:
    truth = expit(intercept + slope * logit(phat))
    labels: np.ndarray = (np.random.default_rng(seed).random(phat.shape[0]) < truth).astype(np.float64)
    return labels


def frame_of(
    scored_at: np.ndarray, version: list[str] | np.ndarray, phat: np.ndarray, label: np.ndarray
) -> PredictionFrame:
    return PredictionFrame(
        scored_at, np.asarray(version, dtype=object), phat, (phat > CUTOFF).astype(np.int8), label
    )


# ---- realized: the same figures as scikit-learn and statsmodels ---------------------------------------


def sklearn_metrics(phat: np.ndarray, y: np.ndarray) -> dict[str, float]:
    predicted = (phat > CUTOFF).astype(int)
    return {
        "auc": float(roc_auc_score(y, phat)),
        "log_loss": float(log_loss(y, phat, labels=[0, 1])),
        "brier": float(brier_score_loss(y, phat)),
        "precision": float(precision_score(y, predicted)),
        "recall": float(recall_score(y, predicted)),
        "observed_rate": float(y.mean()),
        "mean_phat": float(phat.mean()),
        "positive_rate": float(predicted.mean()),
    }


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
def test_realized_equals_sklearn(ties: bool) -> None:
    phat, y = population(3_000, seed=1, ties=ties)
    got = realized(phat, y, CUTOFF)
    assert list(got) == list(REALIZED_METRICS)
    for name, want in sklearn_metrics(phat, y).items():
        assert got[name].value == pytest.approx(want, abs=1e-9), name


def test_realized_log_loss_clips_certain_phats_as_sklearn() -> None:
    phat = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.3, 0.3])
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    got = realized(phat, y, CUTOFF)
    assert got["log_loss"].value == pytest.approx(log_loss(y, phat), abs=1e-9)
    # phat at the cutoff is not a predicted positive: the scorer's outcome is phat > cutoff
    assert got["positive_rate"].value == pytest.approx(3 / 7)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10), st.booleans()), min_size=2, max_size=40).filter(
        lambda rows: len({y for _, y in rows}) == 2
    )
)
def test_realized_auc_and_losses_equal_sklearn_on_heavy_ties(rows: list[tuple[int, bool]]) -> None:
    phat = np.array([p / 10 for p, _ in rows])
    y = np.array([float(label) for _, label in rows])
    got = realized(phat, y, CUTOFF)
    assert got["auc"].value == pytest.approx(roc_auc_score(y, phat), abs=1e-9)
    assert got["brier"].value == pytest.approx(brier_score_loss(y, phat), abs=1e-9)
    assert got["log_loss"].value == pytest.approx(log_loss(y, phat), abs=1e-9)


def test_rows_without_a_label_are_left_out() -> None:
    phat, y = population(500, seed=2)
    label = y.copy()
    label[::3] = np.nan
    keep = ~np.isnan(label)
    assert realized(phat, label, CUTOFF) == realized(phat[keep], y[keep], CUTOFF)


def test_proportions_have_wilson_intervals_and_losses_clt_intervals() -> None:
    phat, y = population(800, seed=3)
    got = realized(phat, y, CUTOFF)
    predicted = phat > CUTOFF
    tp = int((predicted & (y == 1)).sum())
    for name, (count, n) in {
        "observed_rate": (int(y.sum()), y.shape[0]),
        "positive_rate": (int(predicted.sum()), y.shape[0]),
        "precision": (tp, int(predicted.sum())),
        "recall": (tp, int(y.sum())),
    }.items():
        lower, upper = proportion_confint(count, n, alpha=0.05, method="wilson")
        assert (got[name].lower, got[name].upper) == pytest.approx((lower, upper), abs=1e-12), name
    clipped = np.clip(phat, np.finfo(np.float64).eps, 1 - np.finfo(np.float64).eps)
    per_row = {
        "brier": (phat - y) ** 2,
        "log_loss": -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)),
        "mean_phat": phat,
    }
    for name, values in per_row.items():
        half = Z * values.std(ddof=1) / math.sqrt(values.shape[0])
        want = (values.mean() - half, values.mean() + half)
        assert (got[name].lower, got[name].upper) == pytest.approx(want, abs=1e-12), name


@pytest.mark.parametrize(("intercept", "slope"), [(0.0, 1.0), (0.8, 0.6), (-0.5, 1.7)])
def test_calibration_slope_and_intercept_equal_statsmodels_logit(intercept: float, slope: float) -> None:
    phat, _ = population(4_000, seed=4)
    y = shifted_labels(phat, seed=5, intercept=intercept, slope=slope)
    fit = sm.Logit(y, sm.add_constant(logit(phat))).fit(disp=0)
    got = realized(phat, y, CUTOFF)
    for name, k in (("calibration_intercept", 0), ("calibration_slope", 1)):
        value, se = float(fit.params[k]), float(fit.bse[k])
        assert got[name].value == pytest.approx(value, abs=1e-6), name
        assert got[name].lower == pytest.approx(value - Z * se, abs=1e-6), name
        assert got[name].upper == pytest.approx(value + Z * se, abs=1e-6), name


def test_calibration_converges_from_far_away() -> None:
    phat, _ = population(2_000, seed=6)
    y = shifted_labels(phat, seed=7, intercept=-2.0, slope=0.1)
    fit = sm.Logit(y, sm.add_constant(logit(phat))).fit(disp=0)
    got = realized(phat, y, CUTOFF)
    assert got["calibration_slope"].value == pytest.approx(float(fit.params[1]), abs=1e-6)
    assert got["calibration_intercept"].value == pytest.approx(float(fit.params[0]), abs=1e-6)


# ---- realized: DeLong's interval ------------------------------------------------------------------------


def delong_quadratic(phat: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """DeLong's AUC and variance straight from the definition (all pairs)."""
    x, w = phat[y == 1], phat[y == 0]
    psi = (x[:, None] > w[None, :]) + 0.5 * (x[:, None] == w[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(psi.mean()), float(v10.var(ddof=1) / x.shape[0] + v01.var(ddof=1) / w.shape[0])


@pytest.mark.parametrize("ties", [False, True], ids=["continuous", "ties"])
def test_delong_interval_equals_the_pairwise_definition(ties: bool) -> None:
    phat, y = population(700, seed=8, ties=ties)
    auc, var = delong_quadratic(phat, y)
    got = realized(phat, y, CUTOFF, confidence=0.9)["auc"]
    half = float(norm.ppf(0.95)) * math.sqrt(var)
    assert (got.value, got.lower, got.upper) == pytest.approx((auc, auc - half, auc + half), abs=1e-12)


def test_delong_interval_is_as_wide_as_a_bootstrap() -> None:
    phat, y = population(600, seed=9)
    got = realized(phat, y, CUTOFF)["auc"]
    rng = np.random.default_rng(10)
    aucs = []
    for _ in range(400):
        i = rng.integers(0, phat.shape[0], phat.shape[0])
        if 0 < y[i].sum() < phat.shape[0]:
            aucs.append(roc_auc_score(y[i], phat[i]))
    boot_se = float(np.std(aucs, ddof=1))
    assert (got.upper - got.lower) / (2 * Z) == pytest.approx(boot_se, rel=0.15)


def test_delong_interval_covers_the_true_auc() -> None:
    # positives' scores ~ N(1, 1), negatives' ~ N(0, 1): the true AUC is Phi(1 / sqrt 2)
    true_auc = float(norm.cdf(1 / math.sqrt(2)))
    rng = np.random.default_rng(11)
    covered = 0
    for _ in range(200):
        score = np.r_[rng.normal(1, 1, 60), rng.normal(0, 1, 140)]
        y = np.r_[np.ones(60), np.zeros(140)]
        got = realized(expit(score), y, CUTOFF)["auc"]
        covered += got.lower <= true_auc <= got.upper
    assert 180 <= covered <= 198


# ---- estimated (CBPE) -----------------------------------------------------------------------------------


def test_estimated_expectations() -> None:
    phat, _ = population(3_000, seed=12, ties=True)
    got = estimated(phat, CUTOFF)
    assert list(got) == list(ESTIMATED_METRICS)
    predicted = phat > CUTOFF
    clipped = np.clip(phat, np.finfo(np.float64).eps, 1 - np.finfo(np.float64).eps)
    want = {
        "precision": phat[predicted].mean(),
        "recall": phat[predicted].sum() / phat.sum(),
        "positive_rate": predicted.mean(),
        "observed_rate": phat.mean(),
        "brier": (phat * (1 - phat)).mean(),
        "log_loss": -(phat * np.log(clipped) + (1 - phat) * np.log(1 - clipped)).mean(),
        # the expected ROC: every row is a positive of weight phat and a negative of weight 1 - phat
        "auc": roc_auc_score(
            np.r_[np.ones_like(phat), np.zeros_like(phat)],
            np.r_[phat, phat],
            sample_weight=np.r_[phat, 1 - phat],
        ),
    }
    for name, value in want.items():
        assert got[name].value == pytest.approx(float(value), abs=1e-12), name
    assert got["positive_rate"].lower == got["positive_rate"].upper == got["positive_rate"].value


def test_estimated_is_deterministic_and_ignores_row_order() -> None:
    phat, _ = population(5_000, seed=13)
    shuffled = np.random.default_rng(0).permutation(phat)
    assert estimated(phat, CUTOFF) == estimated(phat, CUTOFF) == estimated(shuffled, CUTOFF)
    small = phat[:500]
    assert estimated(small, CUTOFF) == estimated(small[::-1].copy(), CUTOFF)


BAND_METRICS = ("auc", "precision", "recall", "observed_rate", "brier", "log_loss")


@pytest.mark.parametrize("n", [60, 300, 6_000], ids=["bootstrap", "delta-small", "delta-large"])
def test_calibrated_labels_fall_in_the_estimated_band(n: int) -> None:
    phat, _ = population(n, seed=14)
    band = estimated(phat, CUTOFF)
    inside = dict.fromkeys(BAND_METRICS, 0)
    auc_draws = []
    for seed in range(100):
        y = shifted_labels(phat, seed=1_000 + seed)
        got = realized(phat, y, CUTOFF)
        auc_draws.append(got["auc"].value)
        for name in BAND_METRICS:
            inside[name] += not band[name].excludes(got[name].value)
    assert all(85 <= count <= 100 for count in inside.values()), inside
    assert band["auc"].value == pytest.approx(float(np.mean(auc_draws)), abs=0.2 * float(np.std(auc_draws)))


def test_the_bootstrap_and_the_delta_method_give_the_same_bands(monkeypatch: pytest.MonkeyPatch) -> None:
    phat, _ = population(1_500, seed=15)
    normal = estimated(phat, CUTOFF)
    monkeypatch.setattr(performance, "EXACT_VARIANCE", math.inf)
    exact = estimated(phat, CUTOFF)
    for name in BAND_METRICS:
        assert exact[name].value == normal[name].value
        width_exact, width_normal = (
            exact[name].upper - exact[name].lower,
            normal[name].upper - normal[name].lower,
        )
        assert width_normal == pytest.approx(width_exact, rel=0.1), name


def test_calibrated_labels_rarely_raise_a_gap() -> None:
    phat, _ = population(5_000, seed=16)
    alarms = dict.fromkeys(("auc", "precision", "recall", "observed_rate", "calibration_slope"), 0)
    for seed in range(60):
        frame = frame_of(np.full(5_000, T0), ["1"] * 5_000, phat, shifted_labels(phat, seed=100 + seed))
        cohort = evaluate(frame, cutoff=CUTOFF, by="all").cohorts[0]
        for name, gap in cohort.gap.items():
            alarms[name] += gap.significant
        assert cohort.realized is not None
        alarms["calibration_slope"] += cohort.realized["calibration_slope"].excludes(1.0)
    assert all(count <= 8 for count in alarms.values()), alarms


def test_a_shifted_base_rate_is_a_significant_observed_rate_gap() -> None:
    phat, _ = population(5_000, seed=18)
    frame = frame_of(np.full(5_000, T0), ["1"] * 5_000, phat, shifted_labels(phat, seed=19, intercept=1.0))
    cohort = evaluate(frame, cutoff=CUTOFF, by="all").cohorts[0]
    assert cohort.gap["observed_rate"].significant and cohort.gap["observed_rate"].value > 0
    assert cohort.gap["recall"].significant or cohort.gap["precision"].significant
    assert cohort.realized is not None and cohort.realized["calibration_intercept"].lower > 0


def test_a_flattened_truth_is_a_significant_auc_gap_and_a_slope_below_one() -> None:
    phat, _ = population(5_000, seed=20)
    frame = frame_of(np.full(5_000, T0), ["1"] * 5_000, phat, shifted_labels(phat, seed=21, slope=0.5))
    cohort = evaluate(frame, cutoff=CUTOFF, by="all").cohorts[0]
    assert cohort.gap["auc"].significant and cohort.gap["auc"].value < 0
    assert cohort.realized is not None and cohort.realized["calibration_slope"].upper < 1


def test_a_gap_needs_enough_labels() -> None:
    phat, _ = population(5_000, seed=18)
    y = shifted_labels(phat, seed=19, intercept=1.0)
    frame = frame_of(np.full(5_000, T0), ["1"] * 5_000, phat, y)
    cohort = evaluate(frame, cutoff=CUTOFF, by="all", min_labels=5_001).cohorts[0]
    assert not cohort.enough_labels and not cohort.gap["observed_rate"].significant
    assert cohort.gap["observed_rate"].value > 0


# ---- degenerate inputs: NaN, never an exception or a warning ------------------------------------------


def all_nan(metrics: dict[str, Interval], names: tuple[str, ...]) -> bool:
    return all(math.isnan(metrics[n].value) for n in names)


def test_no_rows() -> None:
    assert all_nan(realized([], [], CUTOFF), REALIZED_METRICS)
    assert all_nan(estimated([], CUTOFF), ESTIMATED_METRICS)


def test_one_class_only() -> None:
    phat = np.array([0.1, 0.4, 0.6, 0.2])
    got = realized(phat, np.zeros(4), CUTOFF)
    assert all_nan(got, ("auc", "calibration_slope", "calibration_intercept", "recall"))
    assert got["precision"].value == 0.0 and got["observed_rate"].value == 0.0
    assert math.isfinite(got["log_loss"].value) and math.isfinite(got["brier"].value)
    got = realized(phat, np.ones(4), CUTOFF)
    assert all_nan(got, ("auc", "calibration_slope")) and got["recall"].value == 0.5


def test_no_predicted_positive_and_certain_phats() -> None:
    phat = np.array([0.1, 0.2, 0.05, 0.2, 0.15])
    y = np.array([0.0, 1.0, 0.0, 0.0, 1.0])
    got = realized(phat, y, CUTOFF)
    assert math.isnan(got["precision"].value) and got["recall"].value == 0.0
    est = estimated(phat, CUTOFF)
    assert math.isnan(est["precision"].value) and est["recall"].value == 0.0
    zeros = estimated(np.zeros(10), CUTOFF)
    assert all_nan(zeros, ("auc", "recall", "precision")) and zeros["observed_rate"].value == 0.0
    ones = estimated(np.ones(10), CUTOFF)
    assert math.isnan(ones["auc"].value) and ones["precision"].value == 1.0
    many = estimated(np.zeros(30_000), CUTOFF)  # too many rows for the bootstrap: the delta method
    assert all_nan(many, ("auc", "recall", "precision")) and many["observed_rate"] == Interval.exact(0.0)
    tied = estimated(np.full(30_000, 0.4), CUTOFF)  # every realized AUC of tied phats is one half
    assert (tied["auc"].value, tied["auc"].lower, tied["auc"].upper) == pytest.approx(
        (0.5, 0.5, 0.5), abs=1e-6
    )


def test_one_row_separation_and_constant_phat() -> None:
    one = realized([0.7], [1.0], CUTOFF)
    assert one["brier"].value == pytest.approx(0.09) and math.isnan(one["brier"].lower)
    separated = realized([0.1, 0.2, 0.3, 0.6, 0.7, 0.8], [0, 0, 0, 1, 1, 1], CUTOFF)
    assert separated["auc"].value == 1.0
    assert all_nan(separated, ("calibration_slope", "calibration_intercept"))
    constant = realized(np.full(6, 0.4), [0, 1, 0, 1, 1, 0], CUTOFF)
    assert constant["auc"].value == 0.5 and math.isnan(constant["calibration_slope"].value)
    assert estimated([0.4], CUTOFF)["observed_rate"].value == 0.4


def test_two_rows_one_of_each_class() -> None:
    got = realized([0.2, 0.8], [0, 1], CUTOFF)
    assert got["auc"].value == 1.0 and math.isnan(got["auc"].lower)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        realized([0.5, 1.5], [0, 1], CUTOFF)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        estimated([0.5, float("nan")], CUTOFF)
    with pytest.raises(ValueError, match="labels must be"):
        realized([0.5, 0.5], [0, 2], CUTOFF)
    with pytest.raises(ValueError, match="labels for"):
        realized([0.5, 0.5], [0], CUTOFF)
    with pytest.raises(ValueError, match="confidence"):
        estimated([0.5], CUTOFF, confidence=1.0)
    with pytest.raises(ValueError, match="by must be"):
        evaluate(PredictionFrame.empty(), cutoff=CUTOFF, by="week")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="differ in length"):
        PredictionFrame(np.zeros(2), np.array(["1"], dtype=object), np.zeros(2), np.zeros(2), np.zeros(2))


# ---- evaluate: cohorts ----------------------------------------------------------------------------------


def two_day_frame() -> PredictionFrame:
    """Version "a" on both sides of UTC midnight of 2026-12-02 and hour 13; version "b" on the second day."""
    rng = np.random.default_rng(22)
    at = np.r_[
        T0 + DAY - 1.0,  # 2026-12-01T23:59:59Z
        np.full(299, T0 + 3_600 * 10),
        T0 + DAY,  # 2026-12-02T00:00:00Z
        np.full(199, T0 + DAY + 3_600 * 13 + 59 * 60),
        np.full(250, T0 + DAY + 3_600 * 14),
    ]
    version = ["a"] * 500 + ["b"] * 250
    phat = expit(rng.normal(-1, 1, 750))
    label = np.where(rng.random(750) < 0.5, (rng.random(750) < phat).astype(float), np.nan)
    label[300:500] = np.nan  # version "a" has no label on its second day
    return frame_of(at, version, phat, label)


def test_evaluate_by_day_cohorts_are_utc_days_per_version_and_an_all_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # the local zone must not matter
    time.tzset()
    try:
        frame = two_day_frame()
        report = evaluate(frame, cutoff=CUTOFF, by="day", min_labels=50)
    finally:
        monkeypatch.undo()
        time.tzset()
    rows = [(c.cohort, c.version, c.predictions) for c in report.cohorts]
    assert rows == [
        ("2026-12-01", "a", 300),
        ("2026-12-02", "a", 200),
        ("all", "a", 500),
        ("2026-12-02", "b", 250),
        ("all", "b", 250),
    ]
    first = report.cohorts[0]
    assert (first.start, first.end) == (T0, T0 + DAY)
    assert report.cohorts[2].start == report.since == T0 + 3_600 * 10
    assert report.cohorts[2].end == report.until == T0 + DAY + 3_600 * 14
    second = report.cohorts[1]
    assert second.labelled == 0 and second.realized is None and not second.enough_labels
    assert second.coverage.value == 0.0
    assert not any(g.significant for g in second.gap.values())
    labelled = ~np.isnan(frame.label[:300])
    assert first.labelled == int(labelled.sum()) and first.enough_labels
    assert first.realized == realized(frame.phat[:300], frame.label[:300], CUTOFF)
    assert first.estimated == estimated(frame.phat[:300], CUTOFF)
    assert first.estimated_on_labelled == estimated(frame.phat[:300][labelled], CUTOFF)
    gap = first.gap["auc"]
    assert gap.value == first.realized["auc"].value - first.estimated_on_labelled["auc"].value


def test_evaluate_by_hour_version_and_all() -> None:
    frame = two_day_frame()
    hours = evaluate(frame, cutoff=CUTOFF, by="hour")
    assert [(c.cohort, c.version, c.predictions) for c in hours.cohorts] == [
        ("2026-12-01T10", "a", 299),
        ("2026-12-01T23", "a", 1),
        ("2026-12-02T00", "a", 1),
        ("2026-12-02T13", "a", 199),
        ("all", "a", 500),
        ("2026-12-02T14", "b", 250),
        ("all", "b", 250),
    ]
    assert (hours.cohorts[3].start, hours.cohorts[3].end) == (T0 + DAY + 13 * 3_600, T0 + DAY + 14 * 3_600)
    versions = evaluate(frame, cutoff=CUTOFF, by="version")
    assert [(c.cohort, c.version, c.predictions) for c in versions.cohorts] == [
        ("a", "a", 500),
        ("b", "b", 250),
    ]
    everything = evaluate(frame, cutoff=CUTOFF, by="all", since=T0, until=T0 + 2 * DAY)
    (only,) = everything.cohorts
    assert (only.cohort, only.version, only.predictions, only.start, only.end) == (
        "all",
        "all",
        750,
        T0,
        T0 + 2 * DAY,
    )
    assert only.labelled == int((~np.isnan(frame.label)).sum())


def test_evaluate_an_empty_frame() -> None:
    assert evaluate(PredictionFrame.empty(), cutoff=CUTOFF, by="day").cohorts == ()
    report = evaluate(PredictionFrame.empty(), cutoff=CUTOFF, by="all")
    (only,) = report.cohorts
    assert only.predictions == 0 and only.realized is None and report.since is None
    json.dumps(report.to_dict(), allow_nan=False)


def test_reliability_bins_equal_sklearns_calibration_curve() -> None:
    phat, y = population(2_000, seed=23, ties=True)
    phat[:3] = [0.0, 1.0, 0.5]  # the edges: 0 is in the first bin, 0.5 ends a bin
    frame = frame_of(np.full(2_000, T0), ["1"] * 2_000, phat, y)
    bins = evaluate(frame, cutoff=CUTOFF, by="all", bins=10).cohorts[0].reliability
    assert [b.lower for b in bins] == pytest.approx(np.linspace(0, 0.9, 10).tolist())
    assert sum(b.count for b in bins) == 2_000
    observed, mean_phat = calibration_curve(y, phat, n_bins=10, strategy="uniform")
    filled = [b for b in bins if b.count]
    assert [b.observed.value for b in filled] == pytest.approx(observed.tolist(), abs=1e-12)
    assert [b.mean_phat for b in filled] == pytest.approx(mean_phat.tolist(), abs=1e-12)
    for b in filled:
        lower, upper = proportion_confint(round(b.observed.value * b.count), b.count, method="wilson")
        assert (b.observed.lower, b.observed.upper) == pytest.approx((lower, upper), abs=1e-9)
    empty = [b.to_dict() for b in bins if not b.count]
    assert all(d["mean_phat"] is None and d["observed"] is None for d in empty)


def test_to_dict_is_the_performance_json_with_nan_as_null() -> None:
    frame = two_day_frame()
    report = evaluate(frame, cutoff=CUTOFF, by="day", min_labels=50)
    out = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert set(out) == {"cutoff", "by", "confidence", "min_labels", "since", "until", "cohorts"}
    cohort = out["cohorts"][0]
    assert set(cohort) == {
        "cohort",
        "version",
        "start",
        "end",
        "predictions",
        "labelled",
        "coverage",
        "estimated",
        "estimated_on_labelled",
        "realized",
        "enough_labels",
        "gap",
        "reliability",
    }
    assert set(cohort["estimated"]) == set(ESTIMATED_METRICS) and set(cohort["realized"]) == set(
        REALIZED_METRICS
    )
    assert set(cohort["gap"]) == {"auc", "precision", "recall", "observed_rate"}
    assert set(cohort["gap"]["auc"]) == {"value", "significant"}
    assert set(cohort["reliability"][0]) == {
        "lower",
        "upper",
        "count",
        "mean_phat",
        "observed",
        "observed_lower",
        "observed_upper",
    }
    unlabelled = out["cohorts"][1]
    assert unlabelled["realized"] is None and unlabelled["gap"]["auc"] == {
        "value": None,
        "significant": False,
    }
    assert unlabelled["estimated_on_labelled"]["auc"] == {"value": None, "lower": None, "upper": None}
    assert Interval(float("nan"), 0.0, float("inf")).to_dict() == {"value": None, "lower": 0.0, "upper": None}


def test_prediction_frame_coerces_its_columns() -> None:
    frame = PredictionFrame([1, 2], ["a", "b"], [0.1, 0.9], [0, 1], [1, float("nan")])  # type: ignore[arg-type]
    assert len(frame) == 2 and frame.phat.dtype == np.float64 and frame.outcome.dtype == np.int8
    assert frame.version.dtype == object and frame.label.dtype == np.float64
    assert len(PredictionFrame.empty()) == 0


def test_the_numpy_logistic_and_normal_pieces_are_scipys() -> None:
    """A serving worker computes these without scipy; scipy's values are the reference."""
    x = np.concatenate([np.linspace(-800, 800, 4001), [-1e-300, 0.0, 1e-300, 36.0, -745.0]])
    np.testing.assert_allclose(performance.expit(x), expit(x), rtol=1e-15, atol=1e-300)  # subnormals
    p = np.concatenate([np.linspace(1e-12, 1 - 1e-12, 10_001), [EPS_P := 2.0**-52, 1 - EPS_P]])
    np.testing.assert_allclose(performance.logit(p), logit(p), rtol=1e-13, atol=1e-15)
    for confidence in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        expected = float(norm.ppf(0.5 + confidence / 2))
        assert performance.z_score(confidence) == pytest.approx(expected, rel=1e-14)
