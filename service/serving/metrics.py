"""Prometheus metrics of the API, correct across gunicorn workers (multiprocess mode) and replicas.

Metric objects live on a per-app CollectorRegistry (injected, so tests can build many apps). Under gunicorn
PROMETHEUS_MULTIPROC_DIR is set: every worker writes its samples to files there and /metrics aggregates
them with MultiProcessCollector; gunicorn's child_exit hook marks dead workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service.serving.metric_buffer import MetricBuffer

# End-to-end latency in the app: fine steps at the low end, where single rows land, then doubling steps
# from 1 ms (the alert rules' buckets) up to the seconds a 10,000-row batch can take under load.
LATENCY_BUCKETS = (
    0.0002,
    0.0003,
    0.0004,
    0.0005,
    0.00075,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.024,
    2.048,
    5.0,
)
# Per stage: from one row's decode or encode, the shortest, to a 10,000-row batch's decode or score.
STAGE_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
# A Redis call: from a small value on loopback to a 10,000-row answer; the top buckets bracket the lookup
# timeout (stores, off the request path, may take longer).
CACHE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
ROWS_BUCKETS = (1, 2, 5, 10, 50, 100, 500, 1000, 2500, 5000, 10000)
PHAT_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
# The challenger's phat minus the served model's, row by row: symmetric, fine near 0 (two versions of one
# model), up to the whole range.
_DIFF_STEPS = (0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SHADOW_DIFF_BUCKETS = (*(-s for s in reversed(_DIFF_STEPS)), 0.0, *_DIFF_STEPS, 1.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The service's metric objects. Request-path updates go through `buffer` (see metric_buffer.py)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, flush_interval: float = 0.25) -> None:
        disable_created_metrics()  # *_created series only add noise to this service's dashboards
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "propensity_"
        self.requests = Counter(
            p + "http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            p + "http_request_duration_seconds",
            "End-to-end request latency in the app",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            p + "stage_duration_seconds",
            "Latency per /predict stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            p + "in_flight_requests", "Requests being handled", multiprocess_mode="livesum", registry=r
        )
        self.rows = Counter(p + "rows_scored", "Rows scored", registry=r)
        self.rows_per_request = Histogram(
            p + "rows_per_request", "Rows per /predict call", buckets=ROWS_BUCKETS, registry=r
        )
        self.cache = Counter(
            p + "cache_requests",
            "Response cache lookups by result: hit, miss; error, bypass (breaker open) and rejected (a value "
            "that fails its tag or size check) are misses too",
            ["result"],
            registry=r,
        )
        self.cache_stores = Counter(
            p + "cache_stores",
            "Response cache stores by result: stored, dropped (writer queue full or breaker open), error",
            ["result"],
            registry=r,
        )
        self.cache_seconds = Histogram(
            p + "cache_duration_seconds",
            "Successful Redis calls by operation",
            ["op"],
            buckets=CACHE_BUCKETS,
            registry=r,
        )
        self.cache_breaker_open = Gauge(
            p + "cache_breaker_open",
            "Workers whose Redis circuit breaker is open or half-open",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cache_breaker_trips = Counter(
            p + "cache_breaker_trips", "Times the Redis circuit breaker opened", registry=r
        )
        self.requests_shed = Counter(
            p + "requests_shed",
            "Requests refused by load shedding (503 + Retry-After) by the in-flight limit they hit: rows, "
            "bytes",
            ["reason"],
            registry=r,
        )
        self.input_errors = Counter(
            p + "input_errors", "Rejected requests by error kind", ["kind"], registry=r
        )
        self.unseen = Counter(
            p + "unseen_categories", "Unseen category values by column", ["column"], registry=r
        )
        self.unknown_keys = Counter(
            p + "unknown_keys", "Rows that carried keys the model does not know", registry=r
        )
        self.phat = Histogram(
            p + "phat", "Distribution of scored probabilities", buckets=PHAT_BUCKETS, registry=r
        )
        self.outcomes = Counter(
            p + "business_outcomes", "Scored rows by business_outcome", ["outcome"], registry=r
        )
        self.model_info = Gauge(
            p + "model_info",
            "The model version a worker serves (1) or served (0)",
            ["name", "version", "sha256"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.model_ready = Gauge(
            p + "model_ready",
            "1 when the model passed its self-check",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.workers = Gauge(
            p + "workers", "Live worker processes (each sets 1)", multiprocess_mode="livesum", registry=r
        )
        self.workers.set(1)
        self.model_swaps = Counter(
            p + "model_swaps", "Model version changes by result", ["result"], registry=r
        )
        self.model_behind_alias = Gauge(
            p + "model_behind_alias",
            "1 when a worker does not serve what its alias names: the version failed to load or the "
            "registry could not be read (it keeps serving its current version and retries with backoff)",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.outcome_children = (self.outcomes.labels("0"), self.outcomes.labels("1"))
        self.stage_children = {s: self.stage.labels(s) for s in ("decode", "score", "encode")}
        self.cache_hit, self.cache_miss = self.cache.labels("hit"), self.cache.labels("miss")
        self.buffer = MetricBuffer(flush_interval)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._drift_gauges(p, r)
        self._log_metrics(p, r)
        self._performance_gauges(p, r)
        self._shadow_metrics(p, r)
        self._canary_metrics(p, r)

    def _canary_metrics(self, p: str, r: CollectorRegistry) -> None:
        """The canary (service/serving/canary.py): calls per answering version, their time, rollbacks."""
        self.version_calls = Counter(
            p + "version_calls",
            "Calls by the version that answered and how it came to: production, canary, fallback (the "
            "canary failed the call and production answered it); counted while a canary is followed",
            ["version", "route"],
            registry=r,
        )
        self.version_call_seconds = Histogram(
            p + "version_call_seconds",
            "Score and encode time of a call by the version that answered (while a canary is followed)",
            ["version"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.canary_rollbacks = Counter(
            p + "canary_rollbacks",
            "Canary versions a worker stopped routing to, by reason: error_rate, latency",
            ["version", "reason"],
            registry=r,
        )
        self.canary_model_info = Gauge(
            p + "canary_model_info",
            "1 for the version a worker routes its canary share to (0: followed, rolled back or replaced)",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=r,
        )

    def _shadow_metrics(self, p: str, r: CollectorRegistry) -> None:
        """Shadow scoring (service/monitoring/shadow.py): the challenger beside the served model, labelled
        by both versions, so a series never mixes two challengers."""
        versions = ["served", "shadow"]
        self.shadow_rows = Counter(
            p + "shadow_rows",
            "Rows the shadow model scored beside the served one, by result: same (the same business "
            "outcome), flip_up (0 served, 1 shadow), flip_down (1 served, 0 shadow), refused (the shadow "
            "model could not score a row the served one did)",
            [*versions, "result"],
            registry=r,
        )
        self.shadow_phat_difference = Histogram(
            p + "shadow_phat_difference",
            "Shadow phat minus served phat, per row both scored",
            versions,
            buckets=SHADOW_DIFF_BUCKETS,
            registry=r,
        )
        self.shadow_contribution_shift = Counter(
            p + "shadow_contribution_shift",
            "Sum over rows of |shadow - served| contribution (coefficient x input) per model input; divided "
            "by the rows both scored, the mean shift of each input's push on the logit",
            [*versions, "feature"],
            registry=r,
        )
        self.shadow_skipped_rows = Counter(
            p + "shadow_skipped_rows",
            "Live rows not shadow-scored, by reason: sampled_out, dropped (the queue was full), "
            "same_version, no_model (no shadow model loaded), columns_unread (a big body's decoder "
            "skipped a column the shadow model reads)",
            ["reason"],
            registry=r,
        )
        self.shadow_seconds = Counter(
            p + "shadow_seconds",
            "Seconds the shadow thread spent scoring and comparing (its cost, off the response path)",
            registry=r,
        )
        self.shadow_model_info = Gauge(
            p + "shadow_model_info",
            "1 for the version shadow scoring compares with the served one",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=r,
        )

    def _log_metrics(self, p: str, r: CollectorRegistry) -> None:
        """The prediction log and label feedback (service/monitoring/prediction_log.py, feedback.py)."""
        self.prediction_log_rows = Counter(
            p + "prediction_log_rows",
            "Scored rows by what the prediction log did with them: written, spooled (database unavailable), "
            "replayed (from the spool), dropped (over the pending cap, or the spool unwritable), sampled_out",
            ["result"],
            registry=r,
        )
        self.shadow_log_rows = Counter(
            p + "shadow_log_rows",
            "Shadow-compared rows by what the prediction log did with them (table shadow_predictions): "
            "written, spooled, replayed, dropped",
            ["result"],
            registry=r,
        )
        self.prediction_log_spool_rows = Gauge(
            p + "prediction_log_spool_rows",
            "Rows waiting in the prediction log's spool for the database (0: nothing waits)",
            multiprocess_mode="livemax",  # every worker of a replica sees the same spool directory
            registry=r,
        )
        self.feedback_labels = Counter(
            p + "feedback_labels",
            "Labels received on /feedback by result: matched, unmatched, duplicate, conflicting",
            ["result"],
            registry=r,
        )

    def _performance_gauges(self, p: str, r: CollectorRegistry) -> None:
        """Realized and estimated performance per model version and window (performance_gauges.py): one
        worker per replica computes them ("livemostrecent": its values, gone when it is)."""
        mode: Literal["livemostrecent"] = "livemostrecent"
        by_metric = ["version", "window", "metric"]
        by_window = ["version", "window"]

        def gauge(name: str, text: str, labels: list[str]) -> Gauge:
            return Gauge(p + "performance_" + name, text, labels, multiprocess_mode=mode, registry=r)

        self.performance = {
            "realized": gauge("realized", "Realized performance on labelled rows", by_metric),
            "realized_lower": gauge("realized_lower", "Lower end of its confidence interval", by_metric),
            "realized_upper": gauge("realized_upper", "Upper end of its confidence interval", by_metric),
            "estimated": gauge("estimated", "Estimated performance before labels (CBPE)", by_metric),
            "estimated_lower": gauge("estimated_lower", "Lower end of the estimate's band", by_metric),
            "estimated_upper": gauge("estimated_upper", "Upper end of the estimate's band", by_metric),
            "gap": gauge("gap", "Realized minus estimated on the same labelled rows", by_metric),
            "gap_significant": gauge(
                "gap_significant", "1: realized outside the estimate's band with enough labels", by_metric
            ),
            "labels": gauge("labels", "Logged rows with a label", by_window),
            "predictions": gauge("predictions", "Logged rows", by_window),
            "label_coverage": gauge("label_coverage", "Share of logged rows with a label", by_window),
        }
        self.performance_evaluated = Gauge(
            p + "performance_evaluated_timestamp_seconds",
            "When the performance gauges were last computed",
            multiprocess_mode=mode,
            registry=r,
        )

    def _drift_gauges(self, p: str, r: CollectorRegistry) -> None:
        """Input drift per worker window (service/monitoring/drift_monitor.py).

        Each worker computes over its own rolling window. Workers see random shares of the same traffic, so
        their windows estimate the same distribution; "livemax" reports the worst live worker (conservative
        for alerting, and a dead worker's stale window drops out). Rows in the windows add up ("livesum").
        """
        self.drift_psi = Gauge(
            p + "drift_psi",
            "Population stability index of a model input (or phat) vs the model's training reference",
            ["feature"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.drift_js = Gauge(
            p + "drift_js_distance",
            "Jensen-Shannon distance (base 2) of a categorical input vs the training reference",
            ["feature"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.drift_missing = Gauge(
            p + "drift_missing_rate",
            "Share of missing values of a model input in the drift window",
            ["feature"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.drift_status = Gauge(
            p + "drift_status",
            "Drift status of a model input (or phat): 0 ok, 1 warn, 2 alert",
            ["feature"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.drift_unseen = Gauge(
            p + "drift_unseen_share",
            "Share of rows in the drift window with at least one unseen category level",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.drift_rows = Gauge(
            p + "drift_rows_in_window",
            "Rows in the drift window(s); statistics are reported from PROPENSITY_DRIFT_MIN_ROWS per worker",
            multiprocess_mode="livesum",
            registry=r,
        )

    def request_children(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        """(requests counter child, latency histogram child) of one route/method/status, made once."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.latency.labels(route))
            self._request_children[key] = children
        return children

    def observe_phat(self, values: Iterable[float]) -> None:
        """Bulk-observe a batch of probabilities: one update per bucket, not per row.

        Same semantics as Histogram.observe (a value lands in the first bucket whose bound is >= it);
        tests/api/test_metrics.py checks it against per-value observe. A value that is not finite is
        skipped: one NaN would make the worker's phat sum NaN for the rest of its life.
        """
        if isinstance(values, list) and len(values) <= 8:  # a few rows: through the buffer
            for value in values:
                if math.isfinite(value):
                    self.buffer.observe(self.phat, value)
            return
        observe_many(self.phat, PHAT_BUCKETS, np.fromiter(values, dtype=np.float64))

    def render(self) -> tuple[bytes, str]:
        self.buffer.flush()  # this worker's pending updates; the others flush within their interval
        path = multiprocess_dir()
        if path:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=path)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def observe_many(hist: Any, bounds: tuple[float, ...], values: np.ndarray) -> None:
    """Observe every value of `values` in the histogram (a child, labels applied) whose buckets are
    `bounds`: one increment per bucket, not per value, with Histogram.observe's semantics (a value lands
    in the first bucket whose bound is >= it). prometheus_client has no public bulk observe. A value that
    is not finite is skipped: one NaN would make the sum NaN for the rest of the worker's life."""
    if not math.isfinite(values.sum()):  # one pass tells; only then the values are filtered
        values = values[np.isfinite(values)]
    if values.size == 0:
        return
    index = np.searchsorted(np.asarray(bounds), values, side="left")
    counts = np.bincount(index, minlength=len(bounds) + 1)
    for bucket, count in zip(hist._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
    hist._sum.inc(float(values.sum()))
