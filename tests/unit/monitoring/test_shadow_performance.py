"""A challenger judged on labelled live rows: each model's metrics on the same rows, held to
scikit-learn's, the paired differences, the flips and the verdict."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, precision_score, recall_score, roc_auc_score

from service.monitoring.prediction_store import ShadowFrame
from service.monitoring.shadow_performance import describe, judge

N = 4_000


def frame_of(served_phat: np.ndarray, shadow_phat: np.ndarray, label: np.ndarray) -> ShadowFrame:
    n = served_phat.shape[0]
    return ShadowFrame(
        scored_at=np.arange(n, dtype=np.float64),
        served_version=np.array(["v1"] * n, dtype=object),
        served_phat=served_phat,
        served_outcome=(served_phat > 0.7).astype(np.int8),
        shadow_version=np.array(["v2"] * n, dtype=object),
        shadow_phat=shadow_phat,
        shadow_outcome=np.where(np.isnan(shadow_phat), -1, shadow_phat > 0.6).astype(np.int8),
        label=label,
    )


@pytest.fixture(scope="module")
def live() -> tuple[ShadowFrame, np.ndarray]:
    """True probabilities; the served model sees them blurred, the challenger less so; a third of the
    rows labelled; 50 rows the challenger refused."""
    rng = np.random.default_rng(15)
    truth = rng.uniform(0.02, 0.98, N)
    y = (rng.uniform(size=N) < truth).astype(np.float64)
    served = np.clip(truth + rng.normal(0, 0.25, N), 0.01, 0.99)
    shadow = np.clip(truth + rng.normal(0, 0.05, N), 0.01, 0.99)
    shadow[:50] = np.nan
    label = np.where(rng.uniform(size=N) < 1 / 3, y, np.nan)
    return frame_of(served, shadow, label), y


def test_both_models_are_measured_on_the_same_labelled_rows(live: tuple[ShadowFrame, np.ndarray]) -> None:
    frame, _ = live
    (pair,) = judge(frame, min_labels=100)
    rows = ~np.isnan(frame.label) & ~np.isnan(frame.shadow_phat)
    y = frame.label[rows]
    a, b = frame.served_phat[rows], frame.shadow_phat[rows]
    oa, ob = frame.served_outcome[rows], frame.shadow_outcome[rows]
    assert (pair["served_version"], pair["shadow_version"]) == ("v1", "v2")
    assert pair["compared"] == N and pair["refused"] == 50 and pair["labelled"] == int(rows.sum())
    assert pair["served"]["auc"]["value"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert pair["shadow"]["auc"]["value"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert pair["served"]["precision"]["value"] == pytest.approx(precision_score(y, oa), abs=1e-12)
    assert pair["shadow"]["recall"]["value"] == pytest.approx(recall_score(y, ob), abs=1e-12)
    diff = pair["difference"]
    assert diff["auc"] == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a), abs=1e-12)
    assert diff["log_loss"]["value"] == pytest.approx(log_loss(y, b) - log_loss(y, a), abs=1e-12)
    assert diff["brier"]["value"] == pytest.approx(brier_score_loss(y, b) - brier_score_loss(y, a), abs=1e-12)
    flips = oa != ob
    assert pair["flips"] == {
        "labelled": int(flips.sum()),
        "shadow_right": int((flips & (ob == y)).sum()),
        "served_right": int((flips & (oa == y)).sum()),
    }
    assert pair["flips"]["shadow_right"] + pair["flips"]["served_right"] == pair["flips"]["labelled"]
    assert pair["better_on_log_loss"] == "shadow" and diff["log_loss"]["upper"] < 0
    lines = describe([pair])
    assert lines[0].startswith("v2 (shadow) beside v1 (served): 4,000 rows compared, 50 refused")
    assert lines[-1] == "  better on log loss: shadow"


def test_no_verdict_without_enough_labels_or_a_difference(live: tuple[ShadowFrame, np.ndarray]) -> None:
    frame, _ = live
    (few,) = judge(frame, min_labels=10_000)
    assert few["enough_labels"] is False and few["better_on_log_loss"] is None
    assert describe([few])[-1] == "  too few labelled rows to judge"
    same = frame_of(frame.served_phat, frame.served_phat.copy(), frame.label)
    (pair,) = judge(same, min_labels=100)
    assert pair["difference"]["log_loss"] == {"value": 0.0, "lower": 0.0, "upper": 0.0}
    assert pair["better_on_log_loss"] is None and pair["flips"]["labelled"] > 0  # cutoffs 0.7 and 0.6


def test_pairs_are_judged_apart_and_an_empty_log_says_so() -> None:
    a = frame_of(np.array([0.2, 0.8]), np.array([0.3, 0.9]), np.array([0.0, 1.0]))
    b = frame_of(np.array([0.4]), np.array([0.1]), np.array([np.nan]))
    both = ShadowFrame(
        *(np.concatenate([x, y]) for x, y in zip(vars(a).values(), vars(b).values(), strict=True))
    )
    both.shadow_version[2] = "v3"
    pairs = judge(both, min_labels=1)
    assert [(p["shadow_version"], p["compared"], p["labelled"]) for p in pairs] == [
        ("v2", 2, 2),
        ("v3", 1, 0),
    ]
    assert pairs[1]["served"]["auc"]["value"] is None  # no labelled row: no metric, no exception
    assert describe([]) == [
        "no shadow-scored rows in the period (is shadow scoring on, and the prediction log?)"
    ]
