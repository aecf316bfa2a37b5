"""PROPENSITY_AUTOSCALER_* settings: presets, query templates, validation, and the CLI entry point."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from typer.testing import CliRunner

from service.autoscaler.settings import AutoscalerSettings, SignalKind
from service.cli import app
from tests.conftest import free_port
from tests.servers import PROPENSITY


def test_defaults_select_this_stacks_api_by_job(monkeypatch: pytest.MonkeyPatch) -> None:
    s = AutoscalerSettings()
    assert s.signal is SignalKind.INFLIGHT
    assert s.load_query == (
        'sum(rate(propensity_http_request_duration_seconds_sum{job="propensity",route="/predict"}[1m]))'
    )
    assert s.resolved_replicas_query == 'count(up{job="propensity"} == 1)'
    assert s.resolved_target == 0.5
    assert (s.min_replicas, s.max_replicas, s.dry_run) == (2, 10, False)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SIGNAL": "rate",
        "SELECTOR": 'job="api",stack="blue"',
        "WINDOW": "30s",
        "TARGET": "40",
        "MIN_REPLICAS": "3",
        "MAX_REPLICAS": "6",
        "DRY_RUN": "true",
        "REPLICAS_QUERY": "",
    }.items():
        monkeypatch.setenv("PROPENSITY_AUTOSCALER_" + name, value)
    s = AutoscalerSettings()
    assert (
        s.load_query
        == 'sum(rate(propensity_http_requests_total{job="api",stack="blue",route="/predict"}[30s]))'
    )
    assert s.resolved_replicas_query is None  # empty: every replica is assumed to report
    assert (s.resolved_target, s.min_replicas, s.max_replicas, s.dry_run) == (40.0, 3, 6, True)


def test_a_custom_query_may_use_the_placeholders() -> None:
    s = AutoscalerSettings(query="sum(avg_over_time(propensity_in_flight_requests{$selector}[$window]))")
    assert s.load_query == 'sum(avg_over_time(propensity_in_flight_requests{job="propensity"}[1m]))'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_replicas": 5, "max_replicas": 3},
        {"min_replicas": 0},
        {"query": "sum(rate(x{$job}[1m]))"},
        {"window": "1 minute"},
        {"prometheus_url": "prometheus:9090"},
        {"target": 0},
        {"tolerance": 1.5},
    ],
)
def test_unsafe_settings_fail_fast(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AutoscalerSettings(**kwargs)  # type: ignore[arg-type]


def test_cli_once_holds_when_prometheus_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROPENSITY_AUTOSCALER_PROMETHEUS_URL", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("PROPENSITY_AUTOSCALER_STATIC_REPLICAS", "3")
    result = CliRunner().invoke(app, ["autoscale", "--dry-run", "--once"])
    assert result.exit_code == 0, result.output
    assert "signal_error: current 3 desired 3" in result.output


def test_cli_refuses_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROPENSITY_AUTOSCALER_MAX_REPLICAS", "1")
    result = CliRunner().invoke(app, ["autoscale", "--once"])
    assert result.exit_code == 2
    assert "min_replicas 2 > max_replicas 1" in result.output


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def test_the_daemon_serves_its_metrics_holds_and_stops_on_sigterm() -> None:
    """`propensity autoscale` as a process: Prometheus unreachable, an in-memory service at 1 (below min)."""
    port = free_port()
    env = {
        **os.environ,
        "PROPENSITY_AUTOSCALER_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
        "PROPENSITY_AUTOSCALER_STATIC_REPLICAS": "1",
        "PROPENSITY_AUTOSCALER_INTERVAL_SECONDS": "0.2",
        "PROPENSITY_AUTOSCALER_METRICS_PORT": str(port),
    }
    proc = subprocess.Popen(
        [PROPENSITY, "autoscale"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    )
    try:
        samples: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while samples.get('propensity_autoscaler_decisions_total{reason="signal_error"}', 0) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, samples
            time.sleep(0.1)
            with contextlib.suppress(OSError):
                samples = scrape(port)
        assert samples["propensity_autoscaler_current_replicas"] == 2  # min restored without Prometheus
        assert samples['propensity_autoscaler_decisions_total{reason="below_min"}'] == 1
        assert samples['propensity_autoscaler_signal_errors_total{reason="unreachable"}'] >= 2
        assert samples["propensity_autoscaler_last_success_timestamp_seconds"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=15)[0].decode()
    assert proc.returncode == 0, output
    assert "hold: no load data (signal_error): unreachable" in output
    assert "scaling propensity_api 1 -> 2 (below_min" in output
    assert "stopping" in output


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    missing = [
        n for n in AutoscalerSettings.model_fields if f"`PROPENSITY_AUTOSCALER_{n.upper()}`" not in doc
    ]
    assert not missing, f"README.md lacks {missing}"
