"""Metrics: the request-path buffer and the bulk phat histogram give exactly what per-call updates give."""

from __future__ import annotations

import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.serving.metric_buffer import MetricBuffer
from service.serving.metrics import PHAT_BUCKETS, STAGE_BUCKETS, Metrics


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
    }


def twin_metrics() -> tuple[CollectorRegistry, dict[str, Any], CollectorRegistry, dict[str, Any]]:
    """The same metrics on two registries: one updated directly, one through a MetricBuffer."""
    out: list[Any] = []
    for _ in range(2):
        r = CollectorRegistry()
        out += [
            r,
            {
                "counter": Counter("c", "c", ["route"], registry=r),
                "gauge": Gauge("g", "g", registry=r),
                "hist": Histogram("h", "h", ["stage"], buckets=STAGE_BUCKETS, registry=r),
            },
        ]
    return out[0], out[1], out[2], out[3]


def test_buffered_updates_equal_direct_updates_after_a_flush() -> None:
    direct_registry, direct, buffered_registry, buffered = twin_metrics()
    buffer = MetricBuffer(interval=60.0)
    rng = random.Random(7)
    # values on bucket bounds too: a value equal to a bound belongs to that bound's bucket
    values = [rng.choice([*STAGE_BUCKETS, 0.0, 2.0, rng.random() * 1e-3]) for _ in range(2_000)]
    for i, value in enumerate(values):
        route = ("/predict", "/model")[i % 2]
        direct["counter"].labels(route).inc(i % 3)
        buffer.inc(buffered["counter"].labels(route), i % 3)
        direct["hist"].labels(route).observe(value)
        buffer.observe(buffered["hist"].labels(route), value)
        direct["gauge"].inc(1 if i % 4 else -1)
        buffer.inc(buffered["gauge"], 1 if i % 4 else -1)
    assert samples(buffered_registry)[("c_total", (("route", "/predict"),))] == 0.0  # nothing written yet
    buffer.flush()
    assert samples(buffered_registry) == pytest.approx(samples(direct_registry), rel=1e-12)
    buffer.flush()  # a second flush writes nothing more
    assert samples(buffered_registry) == pytest.approx(samples(direct_registry), rel=1e-12)


def test_flush_if_due_waits_for_the_interval() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", registry=registry)
    buffer = MetricBuffer(interval=3600.0)
    buffer.inc(counter)
    buffer.flush_if_due()
    assert registry.get_sample_value("c_total") == 0.0
    buffer.interval = 0.0
    buffer.flush_if_due()
    assert registry.get_sample_value("c_total") == 1.0


def test_render_flushes_the_pending_updates() -> None:
    metrics = Metrics(CollectorRegistry(), flush_interval=3600.0)
    metrics.buffer.inc(metrics.rows, 5)
    metrics.buffer.observe(metrics.rows_per_request, 5)
    text = metrics.render()[0].decode()
    assert "propensity_rows_scored_total 5.0" in text
    assert 'propensity_rows_per_request_bucket{le="5.0"} 1.0' in text
    assert 'propensity_rows_per_request_bucket{le="2.0"} 0.0' in text


@pytest.mark.parametrize("n", [1, 8, 9, 1_000])
def test_bulk_phat_equals_per_value_observe(n: int) -> None:
    metrics = Metrics(CollectorRegistry())
    reference_registry = CollectorRegistry()
    reference = Histogram("propensity_phat", "p", buckets=PHAT_BUCKETS, registry=reference_registry)
    rng = random.Random(n)
    values = [rng.choice([*PHAT_BUCKETS, 0.0, rng.random()]) for _ in range(n)]
    for value in values:
        reference.observe(value)
    metrics.observe_phat(values)
    metrics.buffer.flush()
    got = {k: v for k, v in samples(metrics.registry).items() if k[0].startswith("propensity_phat")}
    assert got == pytest.approx(samples(reference_registry), rel=1e-12)
