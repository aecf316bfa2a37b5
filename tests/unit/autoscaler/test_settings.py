"""PROPENSITY_AUTOSCALER_* settings: presets, query templates, validation, and the CLI entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from service.autoscaler.settings import AutoscalerSettings, SignalKind
from service.cli import app


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


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "configuration.md").read_text()
    missing = [
        n for n in AutoscalerSettings.model_fields if f"`PROPENSITY_AUTOSCALER_{n.upper()}`" not in doc
    ]
    assert not missing, f"docs/configuration.md lacks {missing}"
