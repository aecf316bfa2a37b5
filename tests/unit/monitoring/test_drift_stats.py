"""The pure drift statistics: decile bins, PSI, Jensen-Shannon distance, grading."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.monitoring.drift_stats import (
    ALERT,
    OK,
    WARN,
    bin_counts,
    decile_bins,
    grade,
    js_distance,
    psi,
    worst,
)


def test_decile_bins_of_a_continuous_reference_are_equal_mass() -> None:
    q = np.quantile(np.random.default_rng(0).normal(size=10_000), np.linspace(0, 1, 11))
    edges, expected = decile_bins(q.tolist())
    assert edges.size == 9
    np.testing.assert_allclose(expected, 0.1)


def test_tied_edges_merge_bins_and_keep_the_mass() -> None:
    # 40% of the reference is exactly 0 (a point mass): deciles 0, 0, 0, 0, 0, 1, 2, ...
    q = [0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
    edges, expected = decile_bins(q)
    assert edges.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(expected, [0.0, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1])
    reference = np.r_[np.zeros(40), np.linspace(0.01, 6, 60)]
    counts = bin_counts(reference, edges)
    assert counts.sum() == 100 and counts[0] == 0 and counts[1] == 50


def test_bin_counts_skip_missing_and_keep_outliers_in_the_outer_bins() -> None:
    edges, _ = decile_bins(list(range(11)))
    counts = bin_counts(np.array([-100.0, 0.5, 5.0, np.nan, 1e9]), edges)
    assert counts.sum() == 4 and counts[0] == 2 and counts[-1] == 1 and counts[5] == 1


def test_psi_is_zero_for_the_same_distribution_and_matches_the_formula() -> None:
    assert psi([1, 1, 1, 1], [5, 5, 5, 5]) == 0.0
    e, a = np.array([0.25, 0.25, 0.5]), np.array([0.5, 0.25, 0.25])
    want = float(np.sum((a - e) * np.log(a / e)))
    assert psi(e, a) == pytest.approx(want)
    assert psi(e, a) == pytest.approx(psi(a, e))  # symmetric


def test_psi_uses_epsilon_for_empty_bins() -> None:
    value = psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
    assert math.isfinite(value) and value > 1.0


def test_js_distance_is_bounded_and_base_2() -> None:
    assert js_distance([1, 0], [1, 0]) == 0.0
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    # small shifts: JS^2 ~ PSI / (8 ln 2) -- the basis of the 0.13 / 0.19 thresholds
    e, a = np.full(10, 0.1), np.r_[np.full(5, 0.12), np.full(5, 0.08)]
    assert js_distance(e, a) ** 2 == pytest.approx(psi(e, a) / (8 * math.log(2)), rel=0.05)


def test_grade_and_worst() -> None:
    assert grade(0.05, 0.1, 0.2) == OK and grade(0.1, 0.1, 0.2) == WARN and grade(0.25, 0.1, 0.2) == ALERT
    assert grade(None, 0.1, 0.2) == OK and grade(float("nan"), 0.1, 0.2) == OK
    assert worst([OK, ALERT, WARN]) == ALERT and worst([]) == OK


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        decile_bins([3, 2, 1])
    with pytest.raises(ValueError, match="positive total"):
        psi([0, 0], [1, 1])
    with pytest.raises(ValueError, match="bins differ"):
        psi([1, 1], [1, 1, 1])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=40).filter(
        lambda pairs: sum(e for e, _ in pairs) > 0 and sum(a for _, a in pairs) > 0
    )
)
def test_js_distance_is_scipys(pairs: list[tuple[int, int]]) -> None:
    """The replica computes the distance itself (no scipy in the serving image); scipy's is the reference."""
    from scipy.spatial.distance import jensenshannon

    expected = np.array([e for e, _ in pairs], dtype=np.float64)
    actual = np.array([a for _, a in pairs], dtype=np.float64)
    reference = float(jensenshannon(expected / expected.sum(), actual / actual.sum(), base=2))
    # near 0 the distance is the root of a sum that cancels: the two sums round differently past 1e-12
    assert js_distance(expected, actual) == pytest.approx(reference, rel=1e-9, abs=1e-12)
