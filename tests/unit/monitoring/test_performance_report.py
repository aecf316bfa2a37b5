"""The performance report: GET /performance's JSON as one self-contained HTML page (tables with intervals,
plots), every string from the data escaped, and cohorts with few or no labels said plainly."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from service.monitoring.performance_report import mpl_text, render
from tests.unit.monitoring.performance_fixture import CUTOFF, report, synthetic_frame

KINDS = ("auc", "calibration", "estimated-vs-realized", "reliability", "coverage")
CI = r'-?\d+\.\d+%? <span class="ci">\[-?\d+\.\d+%?, -?\d+\.\d+%?\]</span>'


def figures(page: str) -> dict[str, bytes]:
    """id -> the PNG each figure embeds."""
    found = re.findall(
        r'<figure id="plot-([^"]+)"[^>]*><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page
    )
    return {key: base64.b64decode(png) for key, png in found}


def assert_self_contained(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert re.findall(r"<link[^>]*>", page) == ['<link rel="icon" href="data:,">']  # no favicon fetched
    assert "<script" not in page.lower() and "url(" not in page


def test_every_section_and_plot_is_there() -> None:
    page = render(report(("v1", "v2")), generated_at=0)
    assert "<h1>Model performance report</h1>" in page
    assert page.count('<table class="overview">') == 1
    for table in ("realized", "estimated", "reliability"):
        assert page.count(f'<table class="{table}">') == 2, table
    plots = figures(page)
    assert set(plots) == {f"{kind}-{key}" for kind in KINDS for key in (0, 1)}
    assert all(png.startswith(b"\x89PNG") and len(png) > 5_000 for png in plots.values())
    assert "Model version v1" in page and "Model version v2" in page
    assert "generated 1970-01-01 00:00 UTC" in page
    assert "2026-12-01 00:00 UTC to 2026-12-06 00:00 UTC, by day" in page
    assert_self_contained(page)


def test_intervals_and_the_cutoff_are_shown() -> None:
    page = render(report(), generated_at=0)
    realized = page.split('<table class="realized">')[1].split("</table>")[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", realized)
    judged = next(r for r in rows if "2026-12-01" in r)
    # coverage plus ten realized metrics, each a value and its interval
    assert len(re.findall(CI, judged)) == 11, judged
    estimated = page.split('<table class="estimated">')[1].split("</table>")[0]
    assert len(re.findall(CI, estimated)) >= 7 * 5
    assert '<b class="cutoff">0.2187</b>' in page
    assert "95% confidence intervals" in page
    assert "at least 100 labels" in page


def test_cohorts_with_too_few_or_no_labels_are_said_plainly() -> None:
    page = render(report(), generated_at=0)
    assert "1 cohort(s) have fewer than 100 labels: their intervals are wide and they raise no alarm" in page
    assert "1 cohort(s) have no labels yet: only the estimate is shown" in page
    assert re.search(r'<tr class="labels-few"><td>2026-12-04</td>.*too few labels \(40 &lt; 100\)', page)
    assert re.search(r'<tr class="labels-none"><td>2026-12-05</td>.*no labels yet: estimate only', page)


def test_a_significant_gap_is_flagged() -> None:
    data = report()
    data["cohorts"][-1]["gap"]["auc"] = {"value": -0.061, "significant": True}
    page = render(data, generated_at=0)
    assert '<td class="alarm">-0.061 ⚠ significant</td>' in page
    assert '<td class="alarm">estimate vs realized: AUC</td>' in page
    assert "alarm" not in render(report(), generated_at=0).split("<h2>Summary by version</h2>")[1].split(
        '<section class="version"'
    )[0].replace('"alarms"', "").replace(">alarms<", "")


def test_strings_from_the_data_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    data = report((evil, "v$1$ & 'q'"))
    data["by"] = "<b>day</b>"
    page = render(data, title="<i>t</i>", generated_at=0)
    assert "<script" not in page and "<i>t</i>" not in page and "<b>day</b>" not in page
    assert "Model version &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "Model version v$1$ &amp; &#x27;q&#x27;" in page
    assert "<title>&lt;i&gt;t&lt;/i&gt;</title>" in page
    assert_self_contained(page)


def test_versions_with_dollars_reach_the_plots_as_text() -> None:
    assert mpl_text("v$1") == r"v\$1"
    data = report(("v$1", "v2"), days=1)
    data["by"] = "version"
    data["cohorts"] = [c for c in data["cohorts"] if c["cohort"] == "all"]
    for c in data["cohorts"]:
        c["cohort"] = c["version"]
    page = render(data, generated_at=0)  # an unbalanced $ would fail matplotlib's mathtext
    plots = figures(page)
    assert set(plots) == {
        "estimated-vs-realized-0",
        "reliability-0",
        "estimated-vs-realized-1",
        "reliability-1",
    }


def test_no_predictions_at_all() -> None:
    data = report()
    data["cohorts"] = []
    page = render(data, generated_at=0)
    assert "No predictions were logged in this period: nothing to report." in page
    assert not figures(page)
    assert_self_contained(page)


def no_labels(data: dict[str, Any]) -> dict[str, Any]:
    for c in data["cohorts"]:
        c.update(labelled=0, realized=None, enough_labels=False)
        c["coverage"] = {"value": 0.0, "lower": 0.0, "upper": 0.001}
        c["gap"] = {m: {"value": None, "significant": False} for m in c["gap"]}
        for b in c["reliability"]:
            b.update(count=0, mean_phat=None, observed=None, observed_lower=None, observed_upper=None)
    return data


def test_no_labels_yet_shows_the_estimate_only() -> None:
    page = render(no_labels(report()), generated_at=0)
    assert "No labels for this version yet: nothing realized to plot." in page
    assert "6 cohort(s) have no labels yet" in page
    assert set(figures(page)) == {"auc-0", "calibration-0", "coverage-0"}
    overview = page.split('<table class="overview">')[1].split("</table>")[0]
    assert "<td>-</td>" in overview and "no labels yet" in overview


@pytest.mark.parametrize("value", [None, float("nan")])
def test_unknown_values_are_a_dash(value: float | None) -> None:
    data = report(days=1)
    for c in data["cohorts"]:
        c["realized"]["auc"] = {"value": value, "lower": value, "upper": value}
    page = render(data, generated_at=0)
    realized = page.split('<table class="realized">')[1].split("</table>")[0]
    assert "nan" not in realized.lower()
    assert re.search(
        r"<td>2026-12-01</td><td>5000</td><td>2000</td><td>[^<]*<span[^<]*</span></td><td>-</td>", realized
    )


def test_by_all_is_one_overall_row() -> None:
    data = report(days=1)
    data["by"] = "all"
    data["cohorts"] = [c for c in data["cohorts"] if c["cohort"] == "all"]
    data["cohorts"][0]["version"] = "all"
    page = render(data, generated_at=0)
    assert set(figures(page)) == {"estimated-vs-realized-0", "reliability-0"}
    assert "Model version all" in page


def test_a_report_of_evaluated_predictions() -> None:
    from service.monitoring.performance import evaluate

    data = evaluate(synthetic_frame(), cutoff=CUTOFF, by="day").to_dict()
    page = render(data, generated_at=0)
    assert set(figures(page)) == {f"{kind}-{key}" for kind in KINDS for key in (0, 1)}
    assert "Model version v1" in page and "Model version v2" in page
    for day in ("2026-12-01", "2026-12-05"):
        assert page.count(f"<td>{day}</td>") == 4  # realized and estimated tables, two versions
    assert len(re.findall(CI, page)) > 12 * (11 + 7)  # every cohort's realized and estimated intervals
    assert_self_contained(page)
