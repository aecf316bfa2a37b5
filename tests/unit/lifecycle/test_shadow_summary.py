"""The promotion's shadow summary: its words, and a Prometheus that cannot be read."""

from __future__ import annotations

import pytest

from service.lifecycle.shadow_summary import ShadowUnreadable, describe, shadow_summary
from tests.conftest import free_port


def test_a_summary_in_words() -> None:
    summary = {
        "served": "v1",
        "shadow": "v2",
        "rows": {"same": 9_900, "flip_up": 60, "flip_down": 40, "refused": 3},
        "compared": 10_000,
        "flip_share": 0.01,
        "phat_difference": {"mean": 0.00123, "q01": -0.02, "q99": 0.031},
        "contribution_shift": [{"feature": "x12", "mean": 0.0412}, {"feature": "x5_monday", "mean": 0.01}],
    }
    assert describe(summary).splitlines() == [
        "shadow (v1 served, v2 shadow): 10,000 rows compared, 1.00% outcome flips (60 up, 40 down), "
        "3 refused",
        "  phat difference: mean +0.0012, 1%..99% -0.0200..+0.0310",
        "  largest mean contribution shifts: x12 0.0412, x5_monday 0.0100",
    ]
    nothing = {**summary, "compared": 0, "rows": {"same": 0, "flip_up": 0, "flip_down": 0, "refused": 7}}
    assert describe(nothing) == "shadow (v1 served, v2 shadow): no rows compared (refused 7)"


def test_an_unreachable_prometheus_is_an_error_not_an_empty_summary() -> None:
    with pytest.raises(ShadowUnreadable) as raised:
        shadow_summary(f"http://127.0.0.1:{free_port()}", "v1", "v2", timeout=2)
    assert raised.value.detail.startswith("http://127.0.0.1:")
