"""The autoscaler loop with an in-memory service and replayed Prometheus answers: what it applies, what it
reports in its metrics and log, and how it holds when Prometheus or Docker fail."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from service.autoscaler.loop import Autoscaler
from service.autoscaler.metrics import AutoscalerMetrics
from service.autoscaler.policy import Limits, Reason, Sample
from service.autoscaler.scaler import MemoryScaler, Replicas, ScalerError
from service.autoscaler.signals import SignalError

LIMITS = Limits(2, 10, target=1.0, scale_up_window=30, scale_down_window=120, max_up=4, max_down=1)
WALL = 1_700_000_000.0


class Replay:
    """A signal source answering from a list (the last answer repeats); errors are raised."""

    def __init__(self, answers: Sequence[Sample | SignalError | Exception]) -> None:
        self.answers = list(answers)
        self.calls = 0

    def fetch(self) -> Sample:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BrokenScaler(MemoryScaler):
    def __init__(self, spec: int, *, read: bool = True, write: bool = True) -> None:
        super().__init__(spec)
        self.read_fails, self.write_fails = read, write

    def replicas(self) -> Replicas:
        if self.read_fails:
            raise ScalerError("docker engine: connection refused")
        return super().replicas()

    def scale(self, replicas: int) -> None:
        if self.write_fails:
            raise ScalerError("update out of sequence")
        super().scale(replicas)


def build(
    answers: Sequence[Sample | SignalError | Exception],
    scaler: MemoryScaler | None = None,
    *,
    dry_run: bool = False,
) -> tuple[Autoscaler, MemoryScaler, Clock]:
    scaler = scaler if scaler is not None else MemoryScaler(2)
    clock = Clock()
    autoscaler = Autoscaler(
        LIMITS,
        Replay(answers),
        scaler,
        metrics=AutoscalerMetrics(CollectorRegistry()),
        dry_run=dry_run,
        clock=clock,
        wall_clock=lambda: WALL + clock.now,
    )
    return autoscaler, scaler, clock


def metric(autoscaler: Autoscaler, name: str, **labels: str) -> float | None:
    return autoscaler.metrics.registry.get_sample_value("propensity_autoscaler_" + name, labels)


def run(autoscaler: Autoscaler, clock: Clock, steps: int, interval: float = 15.0) -> list[Reason]:
    reasons = []
    for _ in range(steps):
        reasons.append(autoscaler.step().reason)
        clock.now += interval
    return reasons


def test_scales_the_service_and_reports_desired_current_and_signal() -> None:
    autoscaler, scaler, clock = build([Sample(6.0, reporting=2)])
    assert run(autoscaler, clock, 1) == [Reason.SCALE_UP]
    assert scaler.calls == [6]
    assert metric(autoscaler, "desired_replicas") == 6
    assert metric(autoscaler, "current_replicas") == 2
    assert metric(autoscaler, "running_replicas") == 2
    assert metric(autoscaler, "signal_value") == 3.0
    assert metric(autoscaler, "signal_target") == 1.0
    assert metric(autoscaler, "min_replicas") == 2 and metric(autoscaler, "max_replicas") == 10
    assert metric(autoscaler, "decisions_total", reason="scale_up") == 1
    assert metric(autoscaler, "decisions_total", reason="no_data") == 0  # every reason exists from the start
    assert metric(autoscaler, "last_success_timestamp_seconds") == WALL
    assert metric(autoscaler, "dry_run") == 0
    run(autoscaler, clock, 1)
    assert scaler.calls == [6]  # 6.0 over 6 replicas is on target
    assert metric(autoscaler, "decisions_total", reason="within_tolerance") == 1


def test_load_rise_and_fall_round_trip() -> None:
    answers = [Sample(2.0)] * 2 + [Sample(8.0)] * 4 + [Sample(1.0)] * 20
    autoscaler, scaler, clock = build(answers)
    run(autoscaler, clock, 26)
    assert scaler.calls == [6, 8, 7, 6, 5, 4, 3, 2]  # up in steps of 4, down one at a time to min


def test_dry_run_decides_but_never_touches_the_service(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="propensity.autoscaler")
    autoscaler, scaler, clock = build([Sample(6.0)], dry_run=True)
    assert run(autoscaler, clock, 3) == [Reason.SCALE_UP] * 3
    assert scaler.calls == []
    assert metric(autoscaler, "desired_replicas") == 6
    assert metric(autoscaler, "current_replicas") == 2
    assert metric(autoscaler, "dry_run") == 1
    assert "dry run: would scale api 2 -> 6 (scale_up" in caplog.text


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (SignalError("unreachable", "http://prometheus:9090: connection refused"), Reason.SIGNAL_ERROR),
        (SignalError("query_error", "HTTP 400: parse error"), Reason.SIGNAL_ERROR),
        (SignalError("no_data", "returned no series"), Reason.NO_DATA),
    ],
)
def test_no_usable_data_holds_still_and_says_so(
    error: SignalError, reason: Reason, caplog: pytest.LogCaptureFixture
) -> None:
    autoscaler, scaler, clock = build([Sample(8.0, reporting=4), error], MemoryScaler(4))
    run(autoscaler, clock, 1)  # scales up once on good data
    assert run(autoscaler, clock, 5) == [reason] * 5
    assert scaler.calls == [8]
    assert metric(autoscaler, "signal_errors_total", reason=error.reason) == 5
    assert metric(autoscaler, "decisions_total", reason=reason.value) == 5
    assert metric(autoscaler, "last_success_timestamp_seconds") == WALL  # from the first step only
    assert metric(autoscaler, "signal_value") == 2.0  # the last good sample stays visible
    assert f"hold: no load data ({reason.value}): {error.reason}" in caplog.text


def test_nobody_reporting_is_no_data() -> None:
    autoscaler, scaler, clock = build([Sample(0.0, reporting=0)])
    assert run(autoscaler, clock, 2) == [Reason.NO_DATA] * 2
    assert scaler.calls == []
    assert metric(autoscaler, "signal_errors_total", reason="no_data") == 2


def test_min_is_restored_even_while_prometheus_is_down() -> None:
    autoscaler, scaler, clock = build([SignalError("unreachable", "refused")], MemoryScaler(1))
    assert run(autoscaler, clock, 2) == [Reason.BELOW_MIN, Reason.SIGNAL_ERROR]
    assert scaler.calls == [2]


def test_docker_errors_hold_and_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    unreadable, _, clock = build([Sample(6.0)], BrokenScaler(2, read=True))
    assert run(unreadable, clock, 2) == [Reason.SCALER_ERROR] * 2
    assert "hold: cannot read service api: docker engine: connection refused" in caplog.text

    stuck = BrokenScaler(2, read=False, write=True)
    unwritable, _, clock = build([Sample(6.0)], stuck)
    assert run(unwritable, clock, 1) == [Reason.SCALER_ERROR]
    assert metric(unwritable, "desired_replicas") == 2  # what the service really has
    assert metric(unwritable, "decisions_total", reason="scaler_error") == 1
    assert metric(unwritable, "decisions_total", reason="scale_up") == 0
    stuck.write_fails = False
    assert run(unwritable, clock, 1) == [Reason.SCALE_UP]
    assert stuck.spec == 6


def test_the_loop_survives_a_bug_and_stops_when_told(caplog: pytest.LogCaptureFixture) -> None:
    source = Replay([RuntimeError("a bug")])
    autoscaler = Autoscaler(LIMITS, source, MemoryScaler(2), metrics=AutoscalerMetrics(CollectorRegistry()))
    stop = threading.Event()
    thread = threading.Thread(target=autoscaler.run, args=(stop, 0.01))
    thread.start()
    for _ in range(500):
        if source.calls >= 3:
            break
        stop.wait(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert source.calls >= 3
    assert "unexpected error in the autoscaler step" in caplog.text
