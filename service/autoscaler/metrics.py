"""The autoscaler's own Prometheus metrics (its own registry, served by its own small HTTP server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.autoscaler.policy import Reason
from service.autoscaler.signals import SignalError

PREFIX = "propensity_autoscaler_"


class AutoscalerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r, p = self.registry, PREFIX
        self.desired = Gauge(p + "desired_replicas", "Replicas the last decision asked for", registry=r)
        self.current = Gauge(p + "current_replicas", "Replicas the api service is set to", registry=r)
        self.running = Gauge(p + "running_replicas", "api tasks running", registry=r)
        self.min = Gauge(p + "min_replicas", "Configured minimum replicas", registry=r)
        self.max = Gauge(p + "max_replicas", "Configured maximum replicas", registry=r)
        self.signal = Gauge(p + "signal_value", "Load per reporting replica (last good sample)", registry=r)
        self.target = Gauge(p + "signal_target", "Per-replica target of the load signal", registry=r)
        self.dry_run = Gauge(p + "dry_run", "1 when decisions are reported but not applied", registry=r)
        self.decisions = Counter(p + "decisions", "Decisions by reason", ["reason"], registry=r)
        self.signal_errors = Counter(
            p + "signal_errors", "Load queries without a usable answer, by reason", ["reason"], registry=r
        )
        self.last_success = Gauge(
            p + "last_success_timestamp_seconds",
            "Unix time of the last decision taken on fresh load data",
            registry=r,
        )
        for reason in Reason:  # every series exists from the start, so rate() and alerts see the first one
            self.decisions.labels(reason.value)
        for name in SignalError.REASONS:
            self.signal_errors.labels(name)
