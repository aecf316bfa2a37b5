"""What shadow scoring saw of a challenger, read from Prometheus, for the promotion that would make it
serve (`propensity registry promote --shadow-from URL`, printed and kept in the audit log).

The numbers are the live workers' counters summed over replicas (service/monitoring/shadow.py): every row
compared since each worker started shadow-scoring that pair of versions. A worker that restarted
started counting again, so this is a summary of what the running fleet saw, not of all time.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

from service.errors import PropensityError
from service.monitoring.shadow import RESULTS

TOP_SHIFTS = 5


class ShadowUnreadable(PropensityError):
    status = 502
    kind = "shadow-unreadable"
    title = "The shadow agreement could not be read from Prometheus"


def _query(base: str, promql: str, timeout: float) -> list[dict[str, Any]]:
    url = f"{base.rstrip('/')}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise ShadowUnreadable(f"{base}: {exc}") from exc
    if body.get("status") != "success":
        raise ShadowUnreadable(f"{base}: {body.get('error', body)}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def shadow_summary(base: str, served: str, shadow: str, *, timeout: float = 5.0) -> dict[str, Any]:
    """Rows by result, the flip share, the phat difference (mean, and 1% / 99% quantiles from the
    histogram), and the inputs whose contributions moved most (mean |shift| per compared row)."""
    pair = f'served="{served}",shadow="{shadow}"'

    def scalar(promql: str) -> float | None:
        found = _query(base, promql, timeout)
        value = float(found[0]["value"][1]) if found else None
        return None if value is None or value != value else value  # NaN: nothing observed

    rows = {r: 0.0 for r in RESULTS}
    for item in _query(base, f"sum by (result) (propensity_shadow_rows_total{{{pair}}})", timeout):
        rows[item["metric"]["result"]] = float(item["value"][1])
    compared = rows["same"] + rows["flip_up"] + rows["flip_down"]
    flips = rows["flip_up"] + rows["flip_down"]
    diff = f"propensity_shadow_phat_difference_{{}}{{{{{pair}}}}}"
    mean = scalar(f"sum({diff.format('sum')}) / sum({diff.format('count')})")
    buckets = f"sum by (le) ({diff.format('bucket')})"
    shifts = _query(
        base,
        f"topk({TOP_SHIFTS}, sum by (feature) (propensity_shadow_contribution_shift_total{{{pair}}}))",
        timeout,
    )
    top = sorted(
        ((item["metric"]["feature"], float(item["value"][1]) / compared) for item in shifts if compared),
        key=lambda pair_: -pair_[1],
    )
    return {
        "served": served,
        "shadow": shadow,
        "rows": {r: int(v) for r, v in rows.items()},
        "compared": int(compared),
        "flip_share": flips / compared if compared else None,
        "phat_difference": {
            "mean": mean,
            "q01": scalar(f"histogram_quantile(0.01, {buckets})") if compared else None,
            "q99": scalar(f"histogram_quantile(0.99, {buckets})") if compared else None,
        },
        "contribution_shift": [{"feature": f, "mean": m} for f, m in top],
    }


def describe(summary: dict[str, Any]) -> str:
    """The summary in a few lines, for the promotion's output."""
    rows = summary["rows"]
    head = f"shadow ({summary['served']} served, {summary['shadow']} shadow): "
    if not summary["compared"]:
        return head + f"no rows compared (refused {rows['refused']:,})"
    diff = summary["phat_difference"]
    lines = [
        head + f"{summary['compared']:,} rows compared, {summary['flip_share']:.2%} outcome flips "
        f"({rows['flip_up']:,} up, {rows['flip_down']:,} down), {rows['refused']:,} refused",
        f"  phat difference: mean {diff['mean']:+.4f}"
        + (f", 1%..99% {diff['q01']:+.4f}..{diff['q99']:+.4f}" if diff["q01"] is not None else ""),
    ]
    if summary["contribution_shift"]:
        moved = ", ".join(f"{s['feature']} {s['mean']:.4f}" for s in summary["contribution_shift"])
        lines.append(f"  largest mean contribution shifts: {moved}")
    return "\n".join(lines)
