"""deploy/prometheus: the Swarm config and the alert rules pass promtool, and every alert is unit-tested.

promtool comes with the `prometheus` Debian package, which CI installs (.ci/run): a missing promtool fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = DEPLOY / "alerts.yml"
ALERTS_TEST = DEPLOY / "alerts_test.yml"


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: apt-get install prometheus"
    out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=DEPLOY, check=False)
    assert out.returncode == 0, f"promtool {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def alert_rules(group_name: str | None = None) -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    chosen = [g for g in groups if group_name in (None, g["name"])]
    return [rule for group in chosen for rule in group["rules"] if "alert" in rule]


def test_swarm_prometheus_config_is_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "alerts.yml" in out


def test_alert_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_alert_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case["alert_rule_test"]:
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_has_a_severity_and_a_summary(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]


def test_the_alerts_the_issue_asks_for_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "PropensityHighErrorRatio",
        "PropensityHighLatencyP99",
        "PropensityReplicasBelowMin",
        "PropensityModelNotReady",
        "PropensityRedisDown",
        "PropensityModelLoadFailed",
        "PropensityInputDriftHigh",
        "PropensityUnseenCategoryRateHigh",
    } <= names


PERFORMANCE_ALERTS = {
    "PropensityRealizedAucLow",
    "PropensityCalibrationSlopeOutOfBand",
    "PropensityEstimateVsRealizedGap",
    "PropensityLabelCoverageStalled",
    "PropensityPerformanceEvaluationStale",
    "PropensityPredictionLogDropping",
    "PropensityPredictionLogSpooling",
}


def test_the_performance_alerts_the_issue_asks_for_exist() -> None:
    assert {rule["alert"] for rule in alert_rules("propensity-performance")} == PERFORMANCE_ALERTS


@pytest.mark.parametrize("rule", alert_rules("propensity-performance"), ids=lambda r: r["alert"])
def test_every_performance_alert_has_a_description_and_a_runbook_section(rule: dict[str, Any]) -> None:
    """The runbook is docs/monitoring.md, one "### Alert: <name>" heading each (GitHub's anchor for it)."""
    assert rule["annotations"]["description"]
    assert rule["annotations"]["runbook"] == f"docs/monitoring.md#alert-{rule['alert'].lower()}"


@pytest.mark.parametrize("rule", alert_rules("propensity-performance"), ids=lambda r: r["alert"])
def test_performance_alerts_read_only_the_api(rule: dict[str, Any]) -> None:
    """Every selector is on job="propensity" (the name the Swarm stack and the local cluster scrape it as)."""
    selectors = re.findall(r"\b(propensity_[a-z_]+)(\{[^}]*\})?", rule["expr"])
    assert selectors
    assert all('job="propensity"' in labels for _, labels in selectors), rule["expr"]
