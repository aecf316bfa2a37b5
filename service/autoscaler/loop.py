"""The autoscaler loop: every interval read the service, ask Prometheus, decide, apply (unless dry-run)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import FrameType

from service.autoscaler.metrics import AutoscalerMetrics
from service.autoscaler.policy import Decision, Limits, Policy, Reason, Sample
from service.autoscaler.scaler import DockerScaler, MemoryScaler, Scaler, ScalerError
from service.autoscaler.settings import AutoscalerSettings
from service.autoscaler.signals import PrometheusSignal, SignalError, SignalSource

log = logging.getLogger("propensity.autoscaler")


class Autoscaler:
    """One decision per `step()`. Never raises for a Prometheus or Docker problem: it holds and says so."""

    def __init__(
        self,
        limits: Limits,
        signal_source: SignalSource,
        scaler: Scaler,
        *,
        metrics: AutoscalerMetrics | None = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        name: str = "api",
    ) -> None:
        self.policy = Policy(limits)
        self.signal = signal_source
        self.scaler = scaler
        self.metrics = metrics or AutoscalerMetrics()
        self.dry_run = dry_run
        self.clock = clock
        self.wall_clock = wall_clock
        self.name = name
        self.last_current = 0
        self._last_reason: Reason | None = None
        self.metrics.min.set(limits.min_replicas)
        self.metrics.max.set(limits.max_replicas)
        self.metrics.target.set(limits.target)
        self.metrics.dry_run.set(int(dry_run))

    def step(self) -> Decision:
        now = self.clock()
        try:
            replicas = self.scaler.replicas()
        except ScalerError as exc:
            log.warning("hold: cannot read service %s: %s", self.name, exc)
            return self._count(Decision(self.last_current, self.last_current, Reason.SCALER_ERROR))
        current = self.last_current = replicas.spec
        self.metrics.current.set(current)
        if replicas.running is not None:
            self.metrics.running.set(replicas.running)

        sample, no_data = self._sample()
        decision = self.policy.decide(now, current, sample, no_data=no_data)
        self.metrics.desired.set(decision.desired)
        if decision.per_replica is not None:
            self.metrics.signal.set(decision.per_replica)
        if decision.changes:
            verb = "would scale" if self.dry_run else "scaling"
            log.info(
                "%s%s %s %d -> %d (%s; load per replica %s, target %g)",
                "dry run: " if self.dry_run else "",
                verb,
                self.name,
                current,
                decision.desired,
                decision.reason,
                _fmt(decision.per_replica),
                self.policy.limits.target,
            )
            if not self.dry_run:
                try:
                    self.scaler.scale(decision.desired)
                except ScalerError as exc:
                    log.error("hold: could not scale %s: %s", self.name, exc)
                    self.metrics.desired.set(current)
                    return self._count(replace(decision, desired=current, reason=Reason.SCALER_ERROR))
        elif decision.reason not in (Reason.NO_DATA, Reason.SIGNAL_ERROR):
            level = logging.INFO if decision.reason != self._last_reason else logging.DEBUG
            log.log(
                level,
                "hold %s at %d (%s; load per replica %s, target %g, recommendation %s)",
                self.name,
                current,
                decision.reason,
                _fmt(decision.per_replica),
                self.policy.limits.target,
                decision.recommendation,
            )
        if sample is not None and sample.reporting != 0:
            self.metrics.last_success.set(self.wall_clock())
        return self._count(decision)

    def _sample(self) -> tuple[Sample | None, Reason]:
        try:
            sample = self.signal.fetch()
        except SignalError as exc:
            self.metrics.signal_errors.labels(exc.reason).inc()
            reason = Reason.NO_DATA if exc.reason == "no_data" else Reason.SIGNAL_ERROR
            log.warning("hold: no load data (%s): %s", reason, exc)
            return None, reason
        if sample.reporting == 0:
            self.metrics.signal_errors.labels("no_data").inc()
            log.warning("hold: no data: no api replica reports to Prometheus")
            return None, Reason.NO_DATA
        return sample, Reason.NO_DATA

    def _count(self, decision: Decision) -> Decision:
        self.metrics.decisions.labels(decision.reason.value).inc()
        self._last_reason = decision.reason
        return decision

    def run(self, stop: threading.Event, interval: float) -> None:
        """Decide every `interval` seconds until `stop` is set. A bug in one step never ends the loop."""
        while not stop.is_set():
            started = self.clock()
            try:
                self.step()
            except Exception:
                log.exception("hold: unexpected error in the autoscaler step")
            stop.wait(max(0.0, interval - (self.clock() - started)))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def build(settings: AutoscalerSettings, metrics: AutoscalerMetrics | None = None) -> Autoscaler:
    """The autoscaler the settings describe (Docker, or an in-memory service with static_replicas)."""
    limits = Limits(
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        target=settings.resolved_target,
        tolerance=settings.tolerance,
        scale_up_window=settings.scale_up_window_seconds,
        scale_down_window=settings.scale_down_window_seconds,
        max_up=settings.max_scale_up_step,
        max_down=settings.max_scale_down_step,
    )
    source = PrometheusSignal(
        settings.prometheus_url,
        settings.load_query,
        settings.resolved_replicas_query,
        timeout=settings.prometheus_timeout_seconds,
    )
    scaler: Scaler = (
        MemoryScaler(settings.static_replicas)
        if settings.static_replicas is not None
        else DockerScaler(settings.service, base_url=settings.docker_url)
    )
    return Autoscaler(
        limits, source, scaler, metrics=metrics, dry_run=settings.dry_run, name=settings.service
    )


def run(settings: AutoscalerSettings, *, once: bool = False) -> int:
    """Run until SIGTERM/SIGINT (or one decision with `once`). Returns the process exit code."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    autoscaler = build(settings)
    limits = autoscaler.policy.limits
    log.info(
        "autoscaling %s%s: %d..%d replicas, target %g per replica (tolerance %g), query %s, every %gs, "
        "windows up %gs / down %gs, steps +%d/-%d, prometheus %s",
        settings.service if settings.static_replicas is None else f"(simulated: {settings.static_replicas})",
        " [dry run]" if settings.dry_run else "",
        limits.min_replicas,
        limits.max_replicas,
        limits.target,
        limits.tolerance,
        settings.load_query,
        settings.interval_seconds,
        limits.scale_up_window,
        limits.scale_down_window,
        limits.max_up,
        limits.max_down,
        settings.prometheus_url,
    )
    if once:
        decision = autoscaler.step()
        print(
            f"{decision.reason}: current {decision.current} desired {decision.desired} "
            f"(load per replica {_fmt(decision.per_replica)}, target {limits.target:g})"
        )
        return 0
    server = None
    if settings.metrics_port:
        from prometheus_client import start_http_server

        server, _ = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=autoscaler.metrics.registry
        )
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        autoscaler.run(stop, settings.interval_seconds)
    finally:
        if server is not None:
            server.shutdown()
    return 0


def main() -> int:
    """`python -m service.autoscaler`: settings from PROPENSITY_AUTOSCALER_* only."""
    return run(AutoscalerSettings())
