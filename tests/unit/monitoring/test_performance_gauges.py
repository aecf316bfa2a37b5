"""The performance gauges: one refresh over the log sets every (version, window) series; one leader."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from service.monitoring.feedback import Feedback
from service.monitoring.performance_gauges import PerformanceGauges
from service.monitoring.prediction_store import LabelItem
from service.serving.metrics import Metrics
from service.settings import Settings

NOW = 10_000_000.0


def gauges(tmp_path: Path, metrics: Metrics, lock: str = "perf.lock") -> PerformanceGauges:
    feedback = Feedback(Settings(artifacts_dir=tmp_path), metrics)
    return PerformanceGauges(
        feedback,
        metrics,
        cutoff=lambda: 0.5,
        interval=60,
        min_labels=10,
        lock_path=tmp_path / lock,
        clock=lambda: NOW,
    )


def value(metrics: Metrics, name: str, *labels: str) -> float:
    sample = metrics.registry.get_sample_value(
        f"propensity_performance_{name}", dict(zip(("version", "window", "metric"), labels, strict=False))
    )
    assert sample is not None, (name, labels)
    return sample


def test_a_refresh_sets_the_windows_of_every_version(tmp_path: Path) -> None:
    metrics = Metrics()
    g = gauges(tmp_path, metrics)
    store = g.feedback.store()
    rng = np.random.default_rng(1)
    phat = rng.random(400)
    ages = np.where(np.arange(400) < 300, 3_600.0, 3 * 86_400.0)  # 300 rows of the last day, 100 older
    rows = [
        ("b", f"r{i}", 0, None, None, "v1", NOW - ages[i], float(phat[i]), int(phat[i] > 0.5), "{}")
        for i in range(400)
    ]
    store.write(rows)
    labels = (rng.random(400) < phat).astype(int)
    store.apply_labels([LabelItem(int(labels[i]), f"r{i}", 0) for i in range(0, 400, 2)])
    assert g.refresh() == 3  # v1 in 1d, 7d and 30d
    assert value(metrics, "predictions", "v1", "1d") == 300
    assert value(metrics, "predictions", "v1", "7d") == 400
    assert value(metrics, "labels", "v1", "30d") == 200
    assert value(metrics, "label_coverage", "v1", "7d") == 0.5
    auc = value(metrics, "realized", "v1", "7d", "auc")
    assert (
        value(metrics, "realized_lower", "v1", "7d", "auc")
        < auc
        < value(metrics, "realized_upper", "v1", "7d", "auc")
    )
    assert value(metrics, "gap_significant", "v1", "7d", "auc") in (0.0, 1.0)
    assert metrics.registry.get_sample_value("propensity_performance_evaluated_timestamp_seconds") == NOW
    g.stop()
    g.feedback.close()


def test_one_worker_leads_and_another_takes_over_when_it_stops(tmp_path: Path) -> None:
    first, second = gauges(tmp_path, Metrics()), gauges(tmp_path, Metrics())
    assert first._leader() and first._leader()
    assert not second._leader()
    first.stop()
    assert second._leader()
    second.stop()


def test_no_model_yet_sets_nothing(tmp_path: Path) -> None:
    metrics = Metrics()
    g = PerformanceGauges(
        Feedback(Settings(artifacts_dir=tmp_path), metrics),
        metrics,
        cutoff=lambda: None,
        interval=60,
        min_labels=10,
    )
    assert g.refresh() == 0
    assert metrics.registry.get_sample_value("propensity_performance_evaluated_timestamp_seconds") == 0.0
