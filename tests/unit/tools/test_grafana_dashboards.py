"""Grafana dashboards as code: the committed JSON is what tools/grafana/dashboards.py generates, it is
well-formed, every query parses (promtool) and names only metrics the service and the autoscaler export.

There is no Grafana here (not in Debian): tests/integration/test_autoscaler_prometheus.py runs every query
against a
real Prometheus scraping a real server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from service.autoscaler.metrics import AutoscalerMetrics
from service.serving.metrics import Metrics
from tools.grafana import dashboards

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


GENERATOR = dashboards


def committed() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def exported_names() -> set[str]:
    names = {"up"}
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    for owner in (Metrics(CollectorRegistry()), AutoscalerMetrics(CollectorRegistry())):
        for family in owner.registry.collect():
            names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def test_committed_json_is_what_the_definition_generates() -> None:
    files = committed()
    assert set(files) == set(GENERATOR.DASHBOARDS), "run: .venv/bin/python -m tools.grafana.dashboards"
    for name, content in files.items():
        assert (GRAFANA / "dashboards" / name).read_text() == GENERATOR.render(name), (
            f"{name} is stale: run .venv/bin/python -m tools.grafana.dashboards"
        )
        assert content == GENERATOR.DASHBOARDS[name]()


def test_schema_basics() -> None:
    dashboards = committed().values()
    uids = [d["uid"] for d in dashboards]
    assert len(uids) == len(set(uids))
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    provisioned = {d["uid"] for d in datasource["datasources"]}
    for d in dashboards:
        assert d["title"] and d["schemaVersion"] >= 36 and isinstance(d["panels"], list)
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), "panel ids must be unique"
        cells: set[tuple[int, int]] = set()
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
            covered = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not covered & cells, f"{p['title']} overlaps another panel"
            cells |= covered
            if p["type"] == "row":
                continue
            assert p["type"] in {"timeseries", "stat", "heatmap", "table"}, p["title"]
            assert p["datasource"]["uid"] in provisioned, p["title"]
            assert p["targets"], f"{p['title']} has no query"
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]
            for t in p["targets"]:
                assert t["expr"].strip() and t["datasource"] == p["datasource"], p["title"]
            if p["type"] == "stat":
                assert len(p["targets"]) == 1, p["title"]


def test_the_panels_the_issue_asks_for_exist() -> None:
    titles = {p["title"] for d in committed().values() for p in d["panels"]}
    assert {
        "Requests/s by status",
        "/predict latency",
        "Latency per stage (p50, p99)",
        "Rows scored/s",
        "Rejected requests by kind",
        "Cache hit ratio",
        "Replicas: desired vs running",
        "phat distribution",
        "Business outcome rate",
        "Unseen categories by column",
        "Model version",
        "Model version per replica",
    } <= titles


def test_every_query_names_only_exported_metrics() -> None:
    exported = exported_names()
    for d in committed().values():
        for title, expr in queries(d):
            used = set(re.findall(r"\b(propensity_[a-z_]+|up)\b", expr))
            assert used, f"{title}: no metric in {expr!r}"
            assert used <= exported, f"{title}: unknown metric(s) {used - exported}"


def test_every_query_parses(tmp_path: Path) -> None:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: apt-get install prometheus"
    rules = [
        {"record": f"dashboard:query_{i}", "expr": promql(expr)}
        for d in committed().values()
        for i, (_, expr) in enumerate(queries(d))
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    out = subprocess.run([exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_provider_points_at_the_mounted_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
    (only,) = provider["providers"]
    assert only["type"] == "file" and only["options"]["path"] == "/var/lib/grafana/dashboards"


@pytest.mark.parametrize("argv", [["--check"]])
def test_check_mode_passes_on_the_committed_files(argv: list[str]) -> None:
    assert GENERATOR.main(argv) == 0


# The names service/serving/metrics.py exports for the prediction log, label feedback and performance
# (the Prometheus names issue 14 fixed); deploy/prometheus/alerts.yml alerts on the same.
PERFORMANCE_METRICS = {
    "propensity_performance_realized",
    "propensity_performance_realized_lower",
    "propensity_performance_realized_upper",
    "propensity_performance_estimated",
    "propensity_performance_gap",
    "propensity_performance_gap_significant",
    "propensity_performance_labels",
    "propensity_performance_predictions",
    "propensity_performance_label_coverage",
    "propensity_performance_evaluated_timestamp_seconds",
    "propensity_prediction_log_rows_total",
    "propensity_prediction_log_spool_rows",
    "propensity_feedback_labels_total",
}
ALERTS = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "alerts.yml"


def row_panels(dashboard: dict[str, Any], row: str) -> list[dict[str, Any]]:
    """The panels under the (expanded) row titled `row`, up to the next row."""
    panels: list[dict[str, Any]] = []
    inside = False
    for p in dashboard["panels"]:
        if p["type"] == "row":
            inside = p["title"] == row
        elif inside:
            panels.append(p)
    return panels


def performance_panels() -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in row_panels(committed()["propensity.json"], "Model performance")}


def alert_expr(name: str) -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    return str(expr)


def test_the_model_performance_row_queries_the_performance_metrics() -> None:
    panels = performance_panels()
    assert {
        "Realized AUC (7d, 95% interval) vs estimated",
        "Calibration slope (7d, 95% interval)",
        "Observed rate vs mean phat (7d)",
        "Estimate vs realized gap (7d)",
        "Label coverage by window",
        "Logged and labelled rows (7d)",
        "Prediction log rows/s by result",
        "Prediction log spool (rows waiting)",
        "Feedback labels by result",
    } <= set(panels)
    used = {
        m
        for p in panels.values()
        for t in p["targets"]
        for m in re.findall(r"\bpropensity_[a-z_]+", t["expr"])
    }
    assert used == PERFORMANCE_METRICS
    assert exported_names() >= PERFORMANCE_METRICS


def test_realized_auc_and_slope_show_their_interval_and_the_estimate_per_version() -> None:
    panels = performance_panels()
    for title, metric in (
        ("Realized AUC (7d, 95% interval) vs estimated", "auc"),
        ("Calibration slope (7d, 95% interval)", "calibration_slope"),
    ):
        panel = panels[title]
        exprs = {t["refId"]: t["expr"] for t in panel["targets"]}
        for ref, gauge in (("A", "realized"), ("B", "realized_lower"), ("C", "realized_upper")):
            assert (
                f'propensity_performance_{gauge}{{job="propensity",metric="{metric}",window="7d"}}'
                in exprs[ref]
            )
            assert exprs[ref].startswith(("max by (version)", "min by (version)")), exprs[ref]
        dashed = {o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]}
        assert {"B", "C"} <= dashed, "the interval's ends are drawn as their own (dashed) lines"
    estimate = panels["Realized AUC (7d, 95% interval) vs estimated"]["targets"][3]
    assert 'propensity_performance_estimated{job="propensity",metric="auc",window="7d"}' in estimate["expr"]


def steps(panel: dict[str, Any]) -> list[float]:
    return [
        s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"] if s["value"] is not None
    ]


def test_the_lines_drawn_are_the_alert_thresholds() -> None:
    panels = performance_panels()
    assert steps(panels["Realized AUC (7d, 95% interval) vs estimated"]) == [GENERATOR.AUC_FLOOR]
    assert f"< {GENERATOR.AUC_FLOOR})" in alert_expr("PropensityRealizedAucLow")
    low, high = GENERATOR.CALIBRATION_BAND
    assert steps(panels["Calibration slope (7d, 95% interval)"]) == [low, high]
    slope = alert_expr("PropensityCalibrationSlopeOutOfBand")
    assert f"> {high}\n" in slope and f"< {low}\n" in slope
    assert steps(panels["Performance gauges age"]) == [3600]
    assert "> 3600" in alert_expr("PropensityPerformanceEvaluationStale")
