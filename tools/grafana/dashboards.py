"""Grafana dashboards as code: the definition here, the JSON in deploy/grafana/dashboards/ (committed).

    .venv/bin/python -m tools.grafana.dashboards            # rewrite dashboards/*.json
    .venv/bin/python -m tools.grafana.dashboards --check    # exit 1 if the committed JSON is stale
    .venv/bin/python -m tools.grafana.dashboards --preview deploy/grafana/propensity-preview.png

No dependency beyond the standard library (matplotlib only for --preview). Panels are laid out left to
right in rows of 24 grid units. Every query reads the api as job="propensity" and the autoscaler as
job="propensity-autoscaler" (the names both the Swarm stack and the local cluster scrape them under), from
the datasource provisioned with uid "prometheus" (provisioning/datasources/prometheus.yml).
tests/unit/tools/test_grafana_dashboards.py checks the JSON is current, well-formed and that every query
parses;
the integration test runs every query against a real Prometheus scraping a real server.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
API = 'job="propensity"'
PREDICT = 'job="propensity",route="/predict"'
SCALER = 'job="propensity-autoscaler"'
RI = "$__rate_interval"


@dataclass
class Q:
    expr: str
    legend: str = ""
    instant: bool = False
    fmt: str = "time_series"  # or "table", "heatmap"


@dataclass
class P:
    title: str
    queries: list[Q]
    kind: str = "timeseries"
    unit: str = "short"
    w: int = 12
    h: int = 8
    description: str = ""
    stack: bool = False
    min: float | None = None
    max: float | None = None
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def quantiles(metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> list[Q]:
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        Q(
            f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RI}])))",
            f"{prefix}p{round(q * 100)}",
        )
        for q in qs
    ]


def share(metric: str, selector: str, part: str) -> str:
    """The fraction of `metric`'s rate that has `part` (0, not "no data", while the part is absent)."""
    whole = f"sum(rate({metric}{{{selector}}}[{RI}]))"
    return f"(sum(rate({metric}{{{selector},{part}}}[{RI}])) or vector(0)) / {whole}"


ROWS: list[tuple[str, list[P]]] = [
    (
        "Overview",
        [
            P(
                "Requests/s",
                [Q(f"sum(rate(propensity_http_requests_total{{{PREDICT}}}[{RI}]))")],
                "stat",
                "reqps",
                w=4,
                h=4,
            ),
            P(
                "5xx ratio",
                [Q(share("propensity_http_requests_total", PREDICT, 'status=~"5.."'))],
                "stat",
                "percentunit",
                w=4,
                h=4,
                thresholds=[(0, "green"), (0.001, "orange"), (0.01, "red")],
            ),
            P(
                "p99 latency",
                quantiles("propensity_http_request_duration_seconds", PREDICT, qs=(0.99,)),
                "stat",
                "s",
                w=4,
                h=4,
                thresholds=[(0, "green"), (0.25, "orange"), (0.5, "red")],
            ),
            P(
                "Replicas up",
                [Q(f"count(up{{{API}}} == 1)")],
                "stat",
                w=4,
                h=4,
                thresholds=[(0, "red"), (2, "green")],
            ),
            P(
                "Model version",
                [Q(f"count by (version) (propensity_model_info{{{API}}} == 1)", "{{version}}", instant=True)],
                "stat",
                w=4,
                h=4,
                description="The version(s) the replicas serve; more than one means a rollout in progress.",
                options={"textMode": "name", "colorMode": "none", "graphMode": "none"},
            ),
            P(
                "Replicas ready",
                [Q(f"sum(propensity_model_ready{{{API}}})")],
                "stat",
                w=4,
                h=4,
                description="Replicas whose every worker serves a model that passed its self-check.",
                thresholds=[(0, "red"), (1, "green")],
            ),
        ],
    ),
    (
        "Traffic",
        [
            P(
                "Requests/s by status",
                [
                    Q(
                        f"sum by (status) (rate(propensity_http_requests_total{{{PREDICT}}}[{RI}]))",
                        "{{status}}",
                    )
                ],
                unit="reqps",
                stack=True,
            ),
            P(
                "Rows scored/s",
                [
                    Q(f"sum(rate(propensity_rows_scored_total{{{API}}}[{RI}]))", "rows/s"),
                    Q(
                        f"sum by (instance) (rate(propensity_rows_scored_total{{{API}}}[{RI}]))",
                        "{{instance}}",
                    ),
                ],
                unit="rowsps",
            ),
            P(
                "Rows per request",
                quantiles("propensity_rows_per_request", API, qs=(0.5, 0.99)),
                description="Median and p99 batch size of /predict calls.",
            ),
            P(
                "Requests in flight",
                [
                    Q(f"sum(propensity_in_flight_requests{{{API}}})", "in flight (sampled)"),
                    Q(
                        f"sum(rate(propensity_http_request_duration_seconds_sum{{{PREDICT}}}[{RI}]))",
                        "busy seconds/s (time-averaged)",
                    ),
                ],
                description="Busy seconds/s (the autoscaler's default signal) is the mean concurrency.",
            ),
        ],
    ),
    (
        "Latency",
        [
            P("/predict latency", quantiles("propensity_http_request_duration_seconds", PREDICT), unit="s"),
            P(
                "Latency per stage (p50, p99)",
                quantiles("propensity_stage_duration_seconds", API, by="stage", qs=(0.5, 0.99)),
                unit="s",
                description="decode (read + parse JSON + cache lookup), score (parse, impute, GLM), encode.",
            ),
        ],
    ),
    (
        "Errors",
        [
            P(
                "Rejected requests by kind",
                [Q(f"sum by (kind) (rate(propensity_input_errors_total{{{API}}}[{RI}]))", "{{kind}}")],
                unit="reqps",
                stack=True,
            ),
            P(
                "Rows with unknown keys",
                [Q(f"sum(rate(propensity_unknown_keys_total{{{API}}}[{RI}]))", "rows/s")],
                unit="rowsps",
            ),
        ],
    ),
    (
        "Cache",
        [
            P(
                "Cache hit ratio",
                [Q(share("propensity_cache_requests_total", API, 'result="hit"'), "hit ratio")],
                unit="percentunit",
                w=8,
                min=0,
                max=1,
            ),
            P(
                "Cache lookups by result",
                [Q(f"sum by (result) (rate(propensity_cache_requests_total{{{API}}}[{RI}]))", "{{result}}")],
                unit="reqps",
                w=8,
                stack=True,
            ),
            P(
                "Redis circuit breaker open (workers)",
                [Q(f"sum by (instance) (propensity_cache_breaker_open{{{API}}})", "{{instance}}")],
                w=8,
                min=0,
            ),
        ],
    ),
    (
        "Replicas and autoscaler",
        [
            P(
                "Replicas: desired vs running",
                [
                    Q(f"max(propensity_autoscaler_desired_replicas{{{SCALER}}})", "desired"),
                    Q(f"max(propensity_autoscaler_current_replicas{{{SCALER}}})", "service replicas"),
                    Q(f"max(propensity_autoscaler_running_replicas{{{SCALER}}})", "running tasks"),
                    Q(f"count(up{{{API}}} == 1)", "scraped"),
                    Q(f"max(propensity_autoscaler_min_replicas{{{SCALER}}})", "min"),
                    Q(f"max(propensity_autoscaler_max_replicas{{{SCALER}}})", "max"),
                ],
                min=0,
            ),
            P(
                "Load per replica vs target",
                [
                    Q(f"max(propensity_autoscaler_signal_value{{{SCALER}}})", "load per replica"),
                    Q(f"max(propensity_autoscaler_signal_target{{{SCALER}}})", "target"),
                ],
                min=0,
            ),
            P(
                "Autoscaler decisions by reason",
                [
                    Q(
                        "sum by (reason) "
                        f"(increase(propensity_autoscaler_decisions_total{{{SCALER}}}[{RI}])) > 0",
                        "{{reason}}",
                    )
                ],
                stack=True,
                options={"drawStyle": "bars"},
            ),
            P(
                "Autoscaler signal errors by reason",
                [
                    Q(
                        "sum by (reason) "
                        f"(increase(propensity_autoscaler_signal_errors_total{{{SCALER}}}[{RI}])) > 0",
                        "{{reason}}",
                    )
                ],
                stack=True,
                options={"drawStyle": "bars"},
            ),
        ],
    ),
    (
        "Model and scores",
        [
            P(
                "phat distribution",
                [
                    Q(
                        f"sum by (le) (increase(propensity_phat_bucket{{{API}}}[{RI}]))",
                        "{{le}}",
                        fmt="heatmap",
                    )
                ],
                "heatmap",
                description="Scored probabilities per 0.05 bucket over time.",
            ),
            P(
                "Business outcome rate",
                [
                    Q(
                        share("propensity_business_outcomes_total", API, 'outcome="1"'),
                        "share of rows with business_outcome = 1",
                    ),
                    Q(
                        f"sum(rate(propensity_phat_sum{{{API}}}[{RI}])) "
                        f"/ sum(rate(propensity_phat_count{{{API}}}[{RI}]))",
                        "mean phat",
                    ),
                ],
                unit="percentunit",
                min=0,
                max=1,
            ),
            P(
                "Model version per replica",
                [Q(f"propensity_model_info{{{API}}} == 1", instant=True, fmt="table")],
                "table",
                options={"showHeader": True},
            ),
            P(
                "Model swaps by result",
                [
                    Q(
                        f"sum by (result) (increase(propensity_model_swaps_total{{{API}}}[{RI}])) > 0",
                        "{{result}}",
                    )
                ],
                options={"drawStyle": "bars"},
            ),
        ],
    ),
    (
        "Input drift",
        [
            P(
                "Unseen categories by column",
                [
                    Q(
                        f"sum by (column) (rate(propensity_unseen_categories_total{{{API}}}[{RI}]))",
                        "{{column}}",
                    )
                ],
                unit="cps",
                stack=True,
            ),
            P(
                "Drift status by feature",
                [Q("max by (feature) (propensity_drift_status)", "{{feature}}")],
                thresholds=[(0, "green"), (1, "orange"), (2, "red")],
                description="0 ok, 1 warn, 2 alert (PROPENSITY_DRIFT_* thresholds on PSI or JS).",
                min=0,
                max=2,
            ),
            P(
                "PSI by feature",
                [Q("max by (feature) (propensity_drift_psi)", "{{feature}}")],
                thresholds=[(0, "green"), (0.1, "orange"), (0.2, "red")],
                description="Population stability index vs training: 0.1 moderate, 0.2 significant.",
            ),
            P(
                "Jensen-Shannon distance by feature",
                [Q("max by (feature) (propensity_drift_js_distance)", "{{feature}}")],
            ),
            P(
                "Missing rate by feature",
                [Q("max by (feature) (propensity_drift_missing_rate)", "{{feature}}")],
                unit="percentunit",
            ),
            P(
                "Rows with an unseen category level",
                [Q("max(propensity_drift_unseen_share)", "share of the drift window")],
                unit="percentunit",
            ),
        ],
    ),
]


def _panel(p: P, pid: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit}
    if p.min is not None:
        defaults["min"] = p.min
    if p.max is not None:
        defaults["max"] = p.max
    if p.thresholds:
        steps = [{"color": c, "value": None if i == 0 else v} for i, (v, c) in enumerate(p.thresholds)]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
    options: dict[str, Any] = {}
    if p.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": p.options.get("drawStyle", "line"),
            "fillOpacity": 30 if p.stack else 10,
            "stacking": {"mode": "normal" if p.stack else "none"},
            "showPoints": "never",
        }
        if p.thresholds:
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
        options = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    elif p.kind == "stat":
        options = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
            **p.options,
        }
    elif p.kind == "heatmap":
        options = {"calculate": False, "yAxis": {"unit": "short"}, "color": {"scheme": "Oranges"}}
    elif p.kind == "table":
        options = dict(p.options)
    panel: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": p.h, "w": p.w, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DATASOURCE,
                "expr": q.expr,
                "legendFormat": q.legend or "__auto",
                "range": not q.instant,
                "instant": q.instant,
                "format": q.fmt,
            }
            for i, q in enumerate(p.queries)
        ],
    }
    if p.description:
        panel["description"] = p.description
    if p.kind == "table":
        panel["transformations"] = [
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}}
        ]
    return panel


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in ROWS:
        panels.append(
            {
                "id": pid,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        x, line_h = 0, 0
        for p in row:
            if x + p.w > 24:
                x, y, line_h = 0, y + line_h, 0
            panels.append(_panel(p, pid, x, y))
            pid, x, line_h = pid + 1, x + p.w, max(line_h, p.h)
        y += line_h
    return {
        "uid": "propensity-service",
        "title": "Propensity service",
        "description": "Traffic, latency, errors, cache, replicas and autoscaling, scores and input drift.",
        "tags": ["propensity"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": []},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "panels": panels,
    }


DASHBOARDS = {"propensity.json": dashboard}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, ensure_ascii=False) + "\n"


def preview(path: Path) -> None:
    """A PNG of the layout (titles in their grid boxes): a quick look without a Grafana."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    panels = dashboard()["panels"]
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig, ax = plt.subplots(figsize=(12, bottom * 0.22))
    colours = {
        "row": "#dddddd",
        "stat": "#cfe8ff",
        "timeseries": "#e8f5e9",
        "heatmap": "#ffe0b2",
        "table": "#f3e5f5",
    }
    for p in panels:
        g = p["gridPos"]
        ax.add_patch(
            Rectangle((g["x"], g["y"]), g["w"], g["h"], facecolor=colours[p["type"]], edgecolor="#555555")
        )
        label = p["title"] if p["type"] == "row" else f"{p['title']}\n[{p['type']}]"
        ax.text(
            g["x"] + g["w"] / 2, g["y"] + g["h"] / 2, label, ha="center", va="center", fontsize=7, wrap=True
        )
    ax.set_xlim(0, 24)
    ax.set_ylim(bottom, 0)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs")
    parser.add_argument("--preview", type=Path, help="also write a PNG of the layout here")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path, text = OUT / name, render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if args.preview:
        preview(args.preview)
        print(f"wrote {args.preview}")
    if stale:
        print("stale (run python -m tools.grafana.dashboards): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
