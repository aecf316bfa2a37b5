"""The autoscaler's settings: one validated class read from PROPENSITY_AUTOSCALER_* environment variables."""

from __future__ import annotations

from enum import StrEnum
from string import Template

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SignalKind(StrEnum):
    """Built-in load signals. Each query returns the TOTAL over the stack's api replicas."""

    INFLIGHT = "inflight"  # time-averaged requests in flight (busy seconds per second), from a counter
    RATE = "rate"  # /predict requests per second
    CPU = "cpu"  # CPU seconds per second; needs process_cpu_seconds_total per replica (see docs)


# $selector and $window are filled in from the settings; a custom query may use them too.
PRESET_QUERIES: dict[SignalKind, str] = {
    SignalKind.INFLIGHT: (
        'sum(rate(propensity_http_request_duration_seconds_sum{$selector,route="/predict"}[$window]))'
    ),
    SignalKind.RATE: 'sum(rate(propensity_http_requests_total{$selector,route="/predict"}[$window]))',
    SignalKind.CPU: "sum(rate(process_cpu_seconds_total{$selector}[$window]))",
}
# Per-replica targets, about half of what one 2-worker replica showed at its single-row peak on the shared
# 2-core test machine (~1,150 req/s, ~1.0 busy seconds per second;
# tests/unit/autoscaler/autoscaler_series.json).
# Busy time goes up to ~2 (the worker count) for 10,000-row batches, where the request rate says little.
PRESET_TARGETS: dict[SignalKind, float] = {
    SignalKind.INFLIGHT: 0.5,
    SignalKind.RATE: 500.0,
    SignalKind.CPU: 0.7,  # 70% of one core
}
DEFAULT_REPLICAS_QUERY = "count(up{$selector} == 1)"


class AutoscalerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROPENSITY_AUTOSCALER_", extra="ignore", frozen=True)

    # what to scale
    service: str = Field("propensity_api", min_length=1, description="Swarm service to scale (<stack>_api)")
    docker_url: str | None = Field(None, description="Docker Engine URL; unset = DOCKER_HOST or the socket")
    min_replicas: int = Field(2, ge=1, le=1000, description="never fewer replicas (restored without data)")
    max_replicas: int = Field(10, ge=1, le=1000, description="never more replicas")

    # the load signal
    prometheus_url: str = Field(
        "http://prometheus:9090", pattern=r"^https?://", description="Prometheus base URL"
    )
    prometheus_timeout_seconds: float = Field(5.0, gt=0, le=60, description="per query")
    signal: SignalKind = Field(SignalKind.INFLIGHT, description="load signal preset: inflight, rate or cpu")
    query: str | None = Field(None, description="PromQL for the total load (overrides the signal's preset)")
    replicas_query: str = Field(
        DEFAULT_REPLICAS_QUERY, description="PromQL counting replicas that report; empty = assume all"
    )
    selector: str = Field('job="propensity"', description="label matchers that select this stack's api")
    window: str = Field("1m", pattern=r"^[0-9]+[smh]$", description="PromQL range for rate()")
    target: float | None = Field(None, gt=0, description="per-replica target; unset = the signal's default")

    # the policy (Kubernetes HPA semantics)
    tolerance: float = Field(0.1, ge=0, lt=1, description="no change while |metric/target - 1| <= this")
    interval_seconds: float = Field(15.0, gt=0, le=3600, description="one decision per interval")
    scale_up_window_seconds: float = Field(
        30.0, ge=0, le=3600, description="scale up only to the lowest recommendation of this window"
    )
    scale_down_window_seconds: float = Field(
        300.0, ge=0, le=86400, description="scale down only to the highest recommendation of this window"
    )
    max_scale_up_step: int = Field(4, ge=1, description="most replicas added by one decision")
    max_scale_down_step: int = Field(1, ge=1, description="most replicas removed by one decision")

    # operation
    dry_run: bool = Field(False, description="decide and report, never change the service")
    static_replicas: int | None = Field(
        None, ge=0, description="no Docker: pretend the service has this many replicas (simulation)"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="bind address of the own /metrics (0.0.0.0 in a stack)"
    )
    metrics_port: int = Field(9101, ge=0, le=65535, description="own /metrics; 0 = off")
    log_level: str = Field("info", pattern=r"(?i)^(debug|info|warning|error)$")

    @model_validator(mode="after")
    def _check(self) -> AutoscalerSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        for name in ("load_query", "resolved_replicas_query"):
            try:
                getattr(self, name)
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{name}: only $selector and $window may be substituted ({exc})") from exc
        return self

    def _fill(self, template: str) -> str:
        return Template(template).substitute(selector=self.selector, window=self.window)

    @property
    def load_query(self) -> str:
        return self._fill(self.query or PRESET_QUERIES[self.signal])

    @property
    def resolved_replicas_query(self) -> str | None:
        return self._fill(self.replicas_query) if self.replicas_query.strip() else None

    @property
    def resolved_target(self) -> float:
        return self.target if self.target is not None else PRESET_TARGETS[self.signal]
