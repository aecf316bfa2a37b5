"""Signal errors carry one of a fixed set of reasons: the autoscaler's metrics are labelled by them.
(PrometheusSignal itself is exercised against a real Prometheus: tests/integration.)"""

from __future__ import annotations

import pytest

from service.autoscaler.signals import SignalError


def test_a_signal_error_names_its_reason_and_detail() -> None:
    error = SignalError("no_data", "returned no series")
    assert (error.reason, error.detail, str(error)) == (
        "no_data",
        "returned no series",
        "no_data: returned no series",
    )


def test_an_unknown_reason_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown signal error reason 'slow'"):
        SignalError("slow", "took a while")
