"""deploy/prometheus: the Swarm config and the alert rules pass promtool, and every alert is unit-tested.

promtool comes with the `prometheus` Debian package, which CI installs (.ci/run): a missing promtool fails.
"""

from __future__ import annotations

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


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


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
