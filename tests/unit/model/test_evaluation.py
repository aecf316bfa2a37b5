"""Holdout evaluation: AUC (+ paired bootstrap), log loss, Brier, calibration by decile, outcome flips."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from service.model import evaluation as ev


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    p = rng.uniform(0.02, 0.98, 3_000)
    y = (rng.random(3_000) < p).astype(np.int64)  # p is calibrated by construction
    noisy = np.clip(p + rng.normal(0, 0.15, p.size), 0.01, 0.99)  # a worse model of the same rows
    return y, p, noisy


def test_auc_log_loss_brier_match_sklearn(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, p, _ = data
    assert ev.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    tied = np.round(p, 1)  # many ties
    assert ev.auc(y, tied) == pytest.approx(roc_auc_score(y, tied), abs=1e-12)
    assert ev.log_loss(y, p) == pytest.approx(log_loss(y, p), abs=1e-12)
    assert ev.brier(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        ev.auc(np.ones(5), np.linspace(0, 1, 5))


def test_bootstrap_is_seeded_and_paired(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, p, noisy = data
    a = ev.bootstrap_auc(y, {"p": p, "same": p.copy(), "noisy": noisy}, resamples=250)
    b = ev.bootstrap_auc(y, {"p": p, "same": p.copy(), "noisy": noisy}, resamples=250)
    np.testing.assert_array_equal(a["p"], b["p"])
    np.testing.assert_array_equal(a["p"], a["same"])  # same resamples for every model
    low, high = ev.interval(a["p"])
    assert low < ev.auc(y, p) < high and high - low < 0.05
    low, high = ev.interval(a["noisy"] - a["p"])
    assert high < 0  # the noisy model is worse, and the paired interval says so


def test_calibration_by_decile(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, p, _ = data
    table = ev.calibration_by_decile(y, p)
    assert [t["decile"] for t in table] == list(range(1, 11))
    assert sum(t["rows"] for t in table) == y.size
    assert all(a["mean_phat"] <= b["mean_phat"] for a, b in itertools.pairwise(table))
    assert ev.calibration_error(table) < 0.04
    shifted = ev.calibration_by_decile(y, np.clip(p + 0.2, 0, 1))
    assert ev.calibration_error(shifted) > 0.1


def test_flip_share() -> None:
    assert ev.flip_share(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1])) == 0.5
    assert ev.flip_share(np.array([]), np.array([])) == 0.0


def test_evaluate_models_with_a_baseline(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    y, p, noisy = data
    outcomes = {"champion": (p > 0.5).astype(int), "challenger": (noisy > 0.5).astype(int)}
    results, diffs = ev.evaluate_models(
        y, {"champion": p, "challenger": noisy}, outcomes, resamples=200, baseline="champion"
    )
    assert set(results) == {"champion", "challenger"} and set(diffs) == {"challenger"}
    d = diffs["challenger"]
    assert d["vs"] == "champion"
    assert d["auc"] == pytest.approx(results["challenger"].auc - results["champion"].auc)
    assert d["auc_ci95"][0] <= d["auc"] <= d["auc_ci95"][1]
    assert d["log_loss"] > 0 and d["brier"] > 0
    assert 0 < d["outcome_flip_share"] < 0.5
    record = results["champion"].as_dict()
    assert {"auc", "auc_ci95", "log_loss", "brier", "calibration_by_decile"} <= set(record)
    _, none = ev.evaluate_models(y, {"a": p}, {"a": outcomes["champion"]}, resamples=0)
    assert none == {}


def test_logistic_line_matches_statsmodels() -> None:
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    x = rng.normal(0, 1.5, 4_000)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(0.3 + 0.7 * x)))).astype(np.float64)
    line = ev.fit_logistic_line(x, y)
    fit = sm.Logit(y, sm.add_constant(x)).fit(disp=0)
    assert line.converged and line.rows == 4_000
    np.testing.assert_allclose([line.intercept, line.slope], fit.params, rtol=0, atol=1e-9)
    np.testing.assert_allclose([line.intercept_se, line.slope_se], fit.bse, rtol=1e-7)
    assert line.covariance == pytest.approx(fit.cov_params()[0, 1], rel=1e-7)
    assert line.log_likelihood == pytest.approx(fit.llf, abs=1e-8)


def test_calibration_slope_and_intercept(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    import statsmodels.api as sm

    y, p, _ = data
    calibrated = ev.calibration(y, p)
    assert (
        abs(calibrated.slope - 1) < 3 * calibrated.slope_se
        and abs(calibrated.intercept) < 3 * calibrated.intercept_se
    )
    lp = ev.logit(p)
    extreme = ev.calibration(y, 1 / (1 + np.exp(-2 * lp)))  # the same ranking, overconfident
    assert extreme.slope == pytest.approx(calibrated.slope / 2, rel=1e-6)
    shifted = ev.calibration(y, 1 / (1 + np.exp(-(lp - 0.5))))  # predicts too few positives
    assert shifted.intercept == pytest.approx(calibrated.intercept + 0.5, abs=1e-9)
    glm = sm.GLM(y, np.ones_like(lp), family=sm.families.Binomial(), offset=lp).fit()
    assert calibrated.intercept == pytest.approx(float(glm.params[0]), abs=1e-9)
    assert calibrated.intercept_se == pytest.approx(float(glm.bse[0]), rel=1e-6)
    record = ev.evaluate_models(y, {"p": p}, {"p": (p > 0.5).astype(int)}, resamples=0)[0]["p"].as_dict()
    assert (
        record["calibration_slope"] == calibrated.slope
        and record["calibration_intercept"] == calibrated.intercept
    )
