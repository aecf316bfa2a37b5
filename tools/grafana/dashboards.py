"""Grafana dashboards as code, built with Grafana's own SDK: the definition here, the JSON in
deploy/grafana/dashboards/ (committed).

    .venv/bin/python -m tools.grafana.dashboards            # rewrite dashboards/*.json
    .venv/bin/python -m tools.grafana.dashboards --check    # exit 1 if the committed JSON is stale
    .venv/bin/python -m tools.grafana.dashboards --preview deploy/grafana/propensity-preview.png

grafana-foundation-sdk is pinned to the build for the Grafana the Swarm stack runs (grafana/grafana:11.6.0):
its models are that release's dashboard schema, so an option name or value the release does not know is a
type error here instead of a key Grafana silently ignores. The SDK places panels on the 24-column grid
(with_row / with_panel) but gives them no ids, refIds or per-query datasource: `_framed` and `dashboard`
do. Every query reads the api as job="propensity" and the autoscaler as job="propensity-autoscaler" (the
names both the Swarm stack and the local cluster scrape them under), from the datasource provisioned with
uid "prometheus" (provisioning/datasources/prometheus.yml). tests/unit/tools/test_grafana_dashboards.py
checks the JSON is current and well-formed and that every query parses; tests/integration runs every query
against a real Prometheus scraping a real server.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any, TypeVar

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from tools.paths import REPO

OUT = REPO / "deploy" / "grafana" / "dashboards"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="prometheus")
API = 'job="propensity"'
PREDICT = 'job="propensity",route="/predict"'
SCALER = 'job="propensity-autoscaler"'
RI = "$__rate_interval"
# The realized-AUC floor of PropensityRealizedAucLow (deploy/prometheus/alerts.yml): the approved model's
# holdout AUC (0.80) minus 0.05. Drawn on the AUC panel; the dashboard test checks the rule uses the same.
AUC_FLOOR = 0.75
CALIBRATION_BAND = (0.8, 1.2)

Panel = timeseries.Panel | stat.Panel | heatmap.Panel | table.Panel
AnyPanel = TypeVar("AnyPanel", timeseries.Panel, stat.Panel, heatmap.Panel, table.Panel)
Steps = tuple[tuple[float, str], ...]


# --- queries ------------------------------------------------------------------------------------------------
def q(
    expr: str, legend: str = "__auto", *, instant: bool = False, fmt: str = "time_series"
) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).format(PromQueryFormat(fmt))
    return (query.instant() if instant else query.range()).datasource(DATASOURCE)


def quantiles(
    metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.9, 0.99)
) -> list[prometheus.Dataquery]:
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        q(
            f"histogram_quantile({x}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RI}])))",
            f"{prefix}p{round(x * 100)}",
        )
        for x in qs
    ]


def share(metric: str, selector: str, part: str) -> str:
    """The fraction of `metric`'s rate that has `part` (0, not "no data", while the part is absent)."""
    whole = f"sum(rate({metric}{{{selector}}}[{RI}]))"
    return f"(sum(rate({metric}{{{selector},{part}}}[{RI}])) or vector(0)) / {whole}"


# --- panels -------------------------------------------------------------------------------------------------
def thresholds(steps: Steps) -> db.ThresholdsConfig:
    """Colour steps from (value, colour) pairs; the first step is the base (no lower bound)."""
    levels = [dm.Threshold(None if i == 0 else value, colour) for i, (value, colour) in enumerate(steps)]
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(levels)


def _framed(
    panel: AnyPanel, title: str, queries: list[prometheus.Dataquery], *, w: int, h: int, about: str
) -> AnyPanel:
    """Title, size, datasource and queries (refIds A, B, ...) of any panel type."""
    panel = panel.title(title).datasource(DATASOURCE).span(w).height(h)
    for i, query in enumerate(queries):
        panel = panel.with_target(query.ref_id(chr(ord("A") + i)))
    return panel.description(about) if about else panel


def ts(
    title: str,
    *queries: prometheus.Dataquery,
    unit: str = "short",
    w: int = 12,
    stack: bool = False,
    bars: bool = False,
    steps: Steps = (),
    lo: float | None = None,
    hi: float | None = None,
    about: str = "",
) -> timeseries.Panel:
    """A time series: lines (or bars), stacked or not, thresholds drawn as lines, legend below."""
    # Grafana's own defaults, spelled out: the SDK's models default to a hidden legend and an ascending sort
    legend = cb.VizLegendOptions().show_legend(True)
    panel = (
        _framed(timeseries.Panel(), title, list(queries), w=w, h=8, about=about)
        .unit(unit)
        .draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
        .fill_opacity(30 if stack else 10)
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL if stack else cm.StackingMode.NONE))
        .show_points(cm.VisibilityMode.NEVER)
        .legend(legend.display_mode(cm.LegendDisplayMode.LIST).placement(cm.LegendPlacement.BOTTOM))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.NONE))
    )
    if steps:
        line = cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.LINE)
        panel = panel.thresholds(thresholds(steps)).thresholds_style(line)
    if lo is not None:
        panel = panel.min(lo)
    return panel.max(hi) if hi is not None else panel


def bounds(panel: timeseries.Panel, *refs: str) -> timeseries.Panel:
    """Draw the queries `refs` (an interval's ends) as thin dashed lines without fill. Grafana can shade
    between two series only by their display names, and those carry the versions, which come and go."""
    dashed = [
        dm.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [6, 4]}),
        dm.DynamicConfigValue("custom.lineWidth", 1),
        dm.DynamicConfigValue("custom.fillOpacity", 0),
    ]
    for ref in refs:
        panel = panel.override_by_query(ref, dashed)
    return panel


def dotted(panel: timeseries.Panel, *refs: str) -> timeseries.Panel:
    """Draw the queries `refs` (an estimate beside a realization) dotted."""
    for ref in refs:
        panel = panel.override_by_query(ref, [dm.DynamicConfigValue("custom.lineStyle", {"fill": "dot"})])
    return panel


def big(
    title: str,
    query: prometheus.Dataquery,
    *,
    unit: str = "short",
    steps: Steps = (),
    about: str = "",
    name_only: bool = False,
) -> stat.Panel:
    """A 4x4 stat of the last value; `name_only` shows the series name (e.g. a version) and no colour."""
    panel = (
        _framed(stat.Panel(), title, [query], w=4, h=4, about=about)
        .unit(unit)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .text_mode(cm.BigValueTextMode.NAME if name_only else cm.BigValueTextMode.AUTO)
        .color_mode(cm.BigValueColorMode.NONE if name_only else cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.NONE if name_only else cm.BigValueGraphMode.AREA)
    )
    return panel.thresholds(thresholds(steps)) if steps else panel


def scores_heatmap(title: str, query: prometheus.Dataquery, *, about: str) -> heatmap.Panel:
    """Pre-bucketed histogram counts (format heatmap), not re-bucketed by Grafana."""
    return (
        _framed(heatmap.Panel(), title, [query], w=12, h=8, about=about)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit("short"))
        .color(heatmap.HeatmapColorOptions().scheme("Oranges"))
    )


def labels_table(title: str, query: prometheus.Dataquery) -> table.Panel:
    """An instant query's series as rows of their labels (time, value and metric name hidden)."""
    hidden = {"excludeByName": {"Time": True, "Value": True, "__name__": True}}
    return (
        _framed(table.Panel(), title, [query], w=12, h=8, about="")
        .show_header(True)
        .with_transformation(dm.DataTransformerConfig("organize", options=hidden))
    )


# --- model performance (service/monitoring/performance_gauges.py) ------------------------------------------
# One series per replica (its gauge-computing worker) and version: every replica reads the same log, so
# max/min over replicas picks one; the interval's ends take the wider of the replicas' (min lower, max upper).
def perf(kind: str, metric: str, agg: str = "max", window: str = "7d", by: str = "version") -> str:
    op = "=~" if "|" in metric else "="  # "auc|observed_rate": a regex of metrics
    selector = f'{API},metric{op}"{metric}",window="{window}"'
    return f"{agg} by ({by}) (propensity_performance_{kind}{{{selector}}})"


def realized_with_interval(metric: str) -> list[prometheus.Dataquery]:
    """Queries A (realized), B (lower end), C (upper end) per version over the 7-day window."""
    return [
        q(perf("realized", metric), "{{version}} realized"),
        q(perf("realized_lower", metric, "min"), "{{version}} lower"),
        q(perf("realized_upper", metric), "{{version}} upper"),
    ]


def shadow_row() -> list[Panel]:
    """The staging model beside the served one on live rows (service/monitoring/shadow.py), per pair."""
    pair = "served, shadow"
    rows = "propensity_shadow_rows_total"
    compared = f'sum by ({pair}) (rate({rows}{{{API},result!="refused"}}[{RI}]))'
    return [
        ts(
            "Shadow: business outcomes that flip",
            q(
                f'sum by ({pair}) (rate({rows}{{{API},result=~"flip_up|flip_down"}}[{RI}])) / {compared}',
                "{{served}} -> {{shadow}}",
            ),
            q(
                f'sum by ({pair}) (rate({rows}{{{API},result="refused"}}[{RI}])) / '
                f"sum by ({pair}) (rate({rows}{{{API}}}[{RI}]))",
                "refused by {{shadow}}",
            ),
            unit="percentunit",
            about="Share of the rows both models scored whose business outcome differs (the campaign "
            "would change for them), and share the shadow model could not score.",
        ),
        ts(
            "Shadow: phat difference (shadow - served)",
            *quantiles("propensity_shadow_phat_difference", API, by="shadow", qs=(0.01, 0.5, 0.99)),
            about="Quantiles of the per-row difference; histogram buckets are finer near 0.",
        ),
        ts(
            "Shadow: mean contribution shift by input",
            q(
                f"sum by (feature) (rate(propensity_shadow_contribution_shift_total{{{API}}}[{RI}])) "
                f'/ scalar(sum(rate({rows}{{{API},result!="refused"}}[{RI}])))',
                "{{feature}}",
            ),
            about="Mean |shadow - served| of each input's coefficient x input, over the rows both "
            "scored: which inputs move the logit differently.",
        ),
        ts(
            "Shadow: rows compared and skipped",
            q(f"sum by (result) (rate({rows}{{{API}}}[{RI}]))", "{{result}}"),
            q(
                f"sum by (reason) (rate(propensity_shadow_skipped_rows_total{{{API}}}[{RI}]))",
                "skipped: {{reason}}",
            ),
            unit="rps",
            stack=True,
        ),
        ts(
            "Shadow: thread CPU per replica",
            q(f"sum by (instance) (rate(propensity_shadow_seconds_total{{{API}}}[{RI}]))", "{{instance}}"),
            unit="percentunit",
            about="Seconds the shadow threads spend per second: the cost of shadow scoring, off the "
            "response path.",
        ),
    ]


def canary_row() -> list[Panel]:
    """The canary (service/serving/canary.py): who answered, how fast, and rollbacks."""
    calls = "propensity_version_calls_total"
    return [
        ts(
            "Canary: calls by answering version",
            q(f"sum by (version, route) (rate({calls}{{{API}}}[{RI}]))", "{{version}} ({{route}})"),
            unit="rps",
            stack=True,
            about="route: production, canary (the share routed to the canary alias), fallback (the canary "
            "failed the call and production answered it).",
        ),
        ts(
            "Canary: call time by version",
            *quantiles("propensity_version_call_seconds", API, by="version", qs=(0.5, 0.95)),
            unit="s",
            about="Score and encode time per computed call (cache hits excluded): what the latency "
            "rollback compares.",
        ),
        ts(
            "Canary: automatic rollbacks",
            q(
                f"sum by (version, reason) (increase(propensity_canary_rollbacks_total{{{API}}}[{RI}]))",
                "{{version}}: {{reason}}",
            ),
            bars=True,
            about="Workers that stopped routing to a canary (error_rate or latency); the first to do so "
            "also deleted its alias (see `propensity registry history`).",
        ),
    ]


def performance_row() -> list[Panel]:
    low, high = CALIBRATION_BAND
    return [
        dotted(
            bounds(
                ts(
                    "Realized AUC (7d, 95% interval) vs estimated",
                    *realized_with_interval("auc"),
                    q(perf("estimated", "auc"), "{{version}} estimated"),
                    steps=((0, "red"), (AUC_FLOOR, "green")),
                    about="Realized AUC of the labelled rows scored in the last 7 days, per model version, "
                    "with its 95% interval (dashed) and the AUC expected from phat alone (dotted, CBPE, all "
                    "rows). "
                    f"The line is the {AUC_FLOOR} floor of PropensityRealizedAucLow.",
                ),
                "B",
                "C",
            ),
            "D",
        ),
        bounds(
            ts(
                "Calibration slope (7d, 95% interval)",
                *realized_with_interval("calibration_slope"),
                steps=((0, "red"), (low, "green"), (high, "red")),
                about="Slope of the labels on logit(phat): 1 is calibrated, below 1 phat is too extreme, "
                "above 1 too timid. PropensityCalibrationSlopeOutOfBand fires when the interval is outside "
                f"[{low}, {high}] (the lines).",
            ),
            "B",
            "C",
        ),
        dotted(
            bounds(
                ts(
                    "Observed rate vs mean phat (7d)",
                    *realized_with_interval("observed_rate"),
                    q(perf("realized", "mean_phat"), "{{version}} mean phat (labelled)"),
                    q(perf("estimated", "observed_rate"), "{{version}} mean phat (all)"),
                    unit="percentunit",
                    about="Share of labelled rows with y = 1 (with its interval) against their mean phat: "
                    "calibration in the large. Mean phat over every logged row is the rate expected once "
                    "all labels are in.",
                ),
                "B",
                "C",
            ),
            "D",
            "E",
        ),
        ts(
            "Estimate vs realized gap (7d)",
            q(
                perf("gap", "auc|observed_rate|precision|recall", "avg", by="version, metric"),
                "{{version}} {{metric}}",
            ),
            q(
                perf("gap_significant", "auc|observed_rate", "min", by="version, metric") + " == 1",
                "{{version}} {{metric}} significant",
            ),
            about="Realized minus estimated on the same labelled rows. The 'significant' series (value 1) is "
            "a realization outside the estimate's band on enough labels; on AUC or observed rate for an hour "
            "it is PropensityEstimateVsRealizedGap, the concept-drift alarm.",
        ),
        ts(
            "Label coverage by window",
            q(
                f"max by (version, window) (propensity_performance_label_coverage{{{API}}})",
                "{{version}} {{window}}",
            ),
            unit="percentunit",
            lo=0,
            hi=1,
            about="Share of the window's logged predictions that have a label: labels arrive late, so the "
            "1-day window fills last.",
        ),
        ts(
            "Logged and labelled rows (7d)",
            q(
                f'max by (version) (propensity_performance_predictions{{{API},window="7d"}})',
                "{{version}} predictions",
            ),
            q(f'max by (version) (propensity_performance_labels{{{API},window="7d"}})', "{{version}} labels"),
            lo=0,
            about="The alerts on realized performance need at least 500 labels in the window.",
        ),
        ts(
            "Prediction log rows/s by result",
            q(
                f"sum by (result) (rate(propensity_prediction_log_rows_total{{{API}}}[{RI}]))",
                "{{result}}",
            ),
            unit="rowsps",
            w=6,
            about="written, spooled (database unavailable), replayed (from the spool), dropped (lost), "
            "sampled_out (PROPENSITY_PREDICTION_LOG_SAMPLE_RATE).",
        ),
        ts(
            "Prediction log spool (rows waiting)",
            q(f"max by (instance) (propensity_prediction_log_spool_rows{{{API}}})", "{{instance}}"),
            w=6,
            lo=0,
            about="Rows a replica holds for the database (0: none). Above 0 for 15 min: "
            "PropensityPredictionLogSpooling.",
        ),
        ts(
            "Feedback labels by result",
            q(
                f"sum by (result) (increase(propensity_feedback_labels_total{{{API}}}[{RI}]))",
                "{{result}}",
            ),
            w=6,
            stack=True,
            bars=True,
            about="Labels posted to /feedback: matched, unmatched (no such logged row), duplicate (already "
            "known, not counted twice), conflicting (a different label for the same row).",
        ),
        ts(
            "Performance gauges age",
            q(
                "time() - max by (instance) "
                f"(propensity_performance_evaluated_timestamp_seconds{{{API}}} > 0)",
                "{{instance}}",
            ),
            unit="s",
            w=6,
            lo=0,
            steps=((0, "green"), (3600, "red")),
            about="Seconds since each replica last computed its performance gauges (every "
            "PROPENSITY_PERFORMANCE_REFRESH_SECONDS); over an hour: PropensityPerformanceEvaluationStale.",
        ),
    ]


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Overview",
        [
            big(
                "Requests/s", q(f"sum(rate(propensity_http_requests_total{{{PREDICT}}}[{RI}]))"), unit="reqps"
            ),
            big(
                "5xx ratio",
                q(share("propensity_http_requests_total", PREDICT, 'status=~"5.."')),
                unit="percentunit",
                steps=((0, "green"), (0.001, "orange"), (0.01, "red")),
            ),
            big(
                "p99 latency",
                quantiles("propensity_http_request_duration_seconds", PREDICT, qs=(0.99,))[0],
                unit="s",
                steps=((0, "green"), (0.25, "orange"), (0.5, "red")),
            ),
            big("Replicas up", q(f"count(up{{{API}}} == 1)"), steps=((0, "red"), (2, "green"))),
            big(
                "Model version",
                q(f"count by (version) (propensity_model_info{{{API}}} == 1)", "{{version}}", instant=True),
                about="The version(s) the replicas serve; more than one means a rollout in progress.",
                name_only=True,
            ),
            big(
                "Replicas ready",
                q(f"sum(propensity_model_ready{{{API}}})"),
                about="Replicas whose every worker serves a model that passed its self-check.",
                steps=((0, "red"), (1, "green")),
            ),
        ],
    ),
    (
        "Traffic",
        [
            ts(
                "Requests/s by status",
                q(
                    f"sum by (status) (rate(propensity_http_requests_total{{{PREDICT}}}[{RI}]))",
                    "{{status}}",
                ),
                unit="reqps",
                stack=True,
            ),
            ts(
                "Rows scored/s",
                q(f"sum(rate(propensity_rows_scored_total{{{API}}}[{RI}]))", "rows/s"),
                q(
                    f"sum by (instance) (rate(propensity_rows_scored_total{{{API}}}[{RI}]))",
                    "{{instance}}",
                ),
                unit="rowsps",
            ),
            ts(
                "Rows per request",
                *quantiles("propensity_rows_per_request", API, qs=(0.5, 0.99)),
                about="Median and p99 batch size of /predict calls.",
            ),
            ts(
                "Requests in flight",
                q(f"sum(propensity_in_flight_requests{{{API}}})", "in flight (sampled)"),
                q(
                    f"sum(rate(propensity_http_request_duration_seconds_sum{{{PREDICT}}}[{RI}]))",
                    "busy seconds/s (time-averaged)",
                ),
                about="Busy seconds/s (the autoscaler's default signal) is the mean concurrency.",
            ),
        ],
    ),
    (
        "Latency",
        [
            ts("/predict latency", *quantiles("propensity_http_request_duration_seconds", PREDICT), unit="s"),
            ts(
                "Latency per stage (p50, p99)",
                *quantiles("propensity_stage_duration_seconds", API, by="stage", qs=(0.5, 0.99)),
                unit="s",
                about="decode (read + parse JSON + cache lookup), score (parse, impute, GLM), encode.",
            ),
        ],
    ),
    (
        "Errors",
        [
            ts(
                "Rejected requests by kind",
                q(f"sum by (kind) (rate(propensity_input_errors_total{{{API}}}[{RI}]))", "{{kind}}"),
                unit="reqps",
                stack=True,
            ),
            ts(
                "Rows with unknown keys",
                q(f"sum(rate(propensity_unknown_keys_total{{{API}}}[{RI}]))", "rows/s"),
                unit="rowsps",
            ),
        ],
    ),
    (
        "Cache",
        [
            ts(
                "Cache hit ratio",
                q(share("propensity_cache_requests_total", API, 'result="hit"'), "hit ratio"),
                unit="percentunit",
                w=8,
                lo=0,
                hi=1,
            ),
            ts(
                "Cache lookups by result",
                q(f"sum by (result) (rate(propensity_cache_requests_total{{{API}}}[{RI}]))", "{{result}}"),
                unit="reqps",
                w=8,
                stack=True,
            ),
            ts(
                "Redis circuit breaker open (workers)",
                q(f"sum by (instance) (propensity_cache_breaker_open{{{API}}})", "{{instance}}"),
                w=8,
                lo=0,
            ),
        ],
    ),
    (
        "Replicas and autoscaler",
        [
            ts(
                "Replicas: desired vs running",
                q(f"max(propensity_autoscaler_desired_replicas{{{SCALER}}})", "desired"),
                q(f"max(propensity_autoscaler_current_replicas{{{SCALER}}})", "service replicas"),
                q(f"max(propensity_autoscaler_running_replicas{{{SCALER}}})", "running tasks"),
                q(f"count(up{{{API}}} == 1)", "scraped"),
                q(f"max(propensity_autoscaler_min_replicas{{{SCALER}}})", "min"),
                q(f"max(propensity_autoscaler_max_replicas{{{SCALER}}})", "max"),
                lo=0,
            ),
            ts(
                "Load per replica vs target",
                q(f"max(propensity_autoscaler_signal_value{{{SCALER}}})", "load per replica"),
                q(f"max(propensity_autoscaler_signal_target{{{SCALER}}})", "target"),
                lo=0,
            ),
            ts(
                "Autoscaler decisions by reason",
                q(
                    "sum by (reason) "
                    f"(increase(propensity_autoscaler_decisions_total{{{SCALER}}}[{RI}])) > 0",
                    "{{reason}}",
                ),
                stack=True,
                bars=True,
            ),
            ts(
                "Autoscaler signal errors by reason",
                q(
                    "sum by (reason) "
                    f"(increase(propensity_autoscaler_signal_errors_total{{{SCALER}}}[{RI}])) > 0",
                    "{{reason}}",
                ),
                stack=True,
                bars=True,
            ),
        ],
    ),
    (
        "Model and scores",
        [
            scores_heatmap(
                "phat distribution",
                q(f"sum by (le) (increase(propensity_phat_bucket{{{API}}}[{RI}]))", "{{le}}", fmt="heatmap"),
                about="Scored probabilities per 0.05 bucket over time.",
            ),
            ts(
                "Business outcome rate",
                q(
                    share("propensity_business_outcomes_total", API, 'outcome="1"'),
                    "share of rows with business_outcome = 1",
                ),
                q(
                    f"sum(rate(propensity_phat_sum{{{API}}}[{RI}])) "
                    f"/ sum(rate(propensity_phat_count{{{API}}}[{RI}]))",
                    "mean phat",
                ),
                unit="percentunit",
                lo=0,
                hi=1,
            ),
            labels_table(
                "Model version per replica",
                q(f"propensity_model_info{{{API}}} == 1", instant=True, fmt="table"),
            ),
            ts(
                "Model swaps by result",
                q(
                    f"sum by (result) (increase(propensity_model_swaps_total{{{API}}}[{RI}])) > 0",
                    "{{result}}",
                ),
                bars=True,
            ),
            ts(
                "Replicas behind their alias",
                q(f"max by (instance) (propensity_model_behind_alias{{{API}}})", "{{instance}}"),
                steps=((0, "green"), (1, "red")),
                about="1: a worker does not serve what its alias names (the version failed to load or the "
                "registry is unreadable); it keeps its verified version and retries with backoff.",
                lo=0,
                hi=1,
            ),
        ],
    ),
    (
        "Input drift",
        [
            ts(
                "Unseen categories by column",
                q(
                    f"sum by (column) (rate(propensity_unseen_categories_total{{{API}}}[{RI}]))",
                    "{{column}}",
                ),
                unit="cps",
                stack=True,
            ),
            ts(
                "Drift status by feature",
                q("max by (feature) (propensity_drift_status)", "{{feature}}"),
                steps=((0, "green"), (1, "orange"), (2, "red")),
                about="0 ok, 1 warn, 2 alert (PROPENSITY_DRIFT_* thresholds on PSI or JS).",
                lo=0,
                hi=2,
            ),
            ts(
                "PSI by feature",
                q("max by (feature) (propensity_drift_psi)", "{{feature}}"),
                steps=((0, "green"), (0.1, "orange"), (0.2, "red")),
                about="Population stability index vs training: 0.1 moderate, 0.2 significant.",
            ),
            ts(
                "Jensen-Shannon distance by feature",
                q("max by (feature) (propensity_drift_js_distance)", "{{feature}}"),
            ),
            ts(
                "Missing rate by feature",
                q("max by (feature) (propensity_drift_missing_rate)", "{{feature}}"),
                unit="percentunit",
            ),
            ts(
                "Rows with an unseen category level",
                q("max(propensity_drift_unseen_share)", "share of the drift window"),
                unit="percentunit",
            ),
        ],
    ),
    ("Model performance", performance_row()),
    ("Shadow scoring", shadow_row()),
    ("Canary", canary_row()),
]


def dashboard() -> dict[str, Any]:
    builder = (
        db.Dashboard("Propensity service")
        .uid("propensity-service")
        .description(
            "Traffic, latency, errors, cache, replicas and autoscaling, scores, input drift, model "
            "performance and shadow scoring."
        )
        .tags(["propensity"])
        .timezone("browser")
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("10s")
        .time("now-1h", "now")
    )
    ids = itertools.count(1)
    for title, panels in ROWS:
        builder = builder.with_row(db.Row(title).id(next(ids)))
        for panel in panels:
            builder = builder.with_panel(panel.id(next(ids)))
    out: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return out


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
