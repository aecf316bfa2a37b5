"""The HPA-style policy on recorded and synthetic metric series, with an injected clock (no I/O)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.autoscaler.policy import Decision, Limits, Policy, Reason, Sample, recommend

INTERVAL = 15.0
LIMITS = Limits(
    min_replicas=2,
    max_replicas=10,
    target=1.0,
    tolerance=0.1,
    scale_up_window=30.0,
    scale_down_window=300.0,
    max_up=4,
    max_down=1,
)
RECORDED = Path(__file__).with_name("autoscaler_series.json")


def replay(
    per_replica_or_total: Iterable[float | None],
    *,
    limits: Limits = LIMITS,
    start: int = 2,
    total: bool = True,
) -> list[Decision]:
    """Feed one sample per interval; the simulated service follows every decision at once."""
    policy, current, out = Policy(limits), start, []
    for i, value in enumerate(per_replica_or_total):
        sample = None if value is None else Sample(value if total else value * current)
        decision = policy.decide(i * INTERVAL, current, sample)
        out.append(decision)
        current = decision.desired
    return out


def replicas(decisions: Sequence[Decision]) -> list[int]:
    return [d.desired for d in decisions]


def changes(decisions: Sequence[Decision]) -> int:
    return sum(d.changes for d in decisions)


# --- the HPA formula ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("current", "total", "expected"),
    [
        (2, 2.0, 2),  # on target
        (2, 2.2, 2),  # +10%: inside the band
        (2, 1.8, 2),  # -10%: inside the band
        (2, 2.3, 3),  # +15%: ceil(2.3)
        (2, 6.0, 6),  # 3x
        (4, 2.0, 2),  # half the load: half the replicas
        (4, 0.0, 0),  # idle (clamped to min later)
        (3, 3.0000000001, 3),  # float noise does not add a replica
    ],
)
def test_recommendation_is_ceil_of_current_times_ratio(current: int, total: float, expected: int) -> None:
    raw, per_replica = recommend(current, Sample(total), LIMITS)
    assert raw == expected
    assert per_replica == pytest.approx(total / current)


def test_replicas_that_do_not_report_yet_count_as_idle_up_and_on_target_down() -> None:
    # 4 replicas, 2 report: scaling up, the 2 silent ones count as 0 load -> ceil(6/1) = 6, not 12
    assert recommend(4, Sample(6.0, reporting=2), LIMITS)[0] == 6
    # scaling down, they count as exactly on target: total 0.4 + 2 x 1.0 -> ceil(2.4) = 3, not 1
    assert recommend(4, Sample(0.4, reporting=2), LIMITS)[0] == 3
    # a direction flip once they are counted: hold
    assert recommend(4, Sample(3.0, reporting=2), LIMITS)[0] == 4  # 1.5/replica up, but 3/4 = 0.75 down
    # more reporters than replicas (old tasks still scraped after a scale-down): capped at current
    assert recommend(2, Sample(2.0, reporting=5), LIMITS)[0] == 2


# --- series -------------------------------------------------------------------------------------------------
def test_step_up_waits_for_the_up_window_and_respects_the_step() -> None:
    series = [2.0] * 4 + [9.0] * 6  # on target, then 4.5x
    got = replay(series)
    assert replicas(got) == [2, 2, 2, 2, 2, 6, 9, 9, 9, 9]
    assert got[4].reason is Reason.STABILIZING  # one high sample is not enough: the window still has 2s
    assert got[5].reason is Reason.SCALE_UP and got[5].recommendation == 9  # +4 max per decision
    assert got[6].reason is Reason.SCALE_UP
    assert got[7].reason is Reason.WITHIN_TOLERANCE


def test_step_down_only_after_the_down_window_one_replica_at_a_time() -> None:
    series = [8.0] * 3 + [1.0] * 40  # 8 replicas' worth of load, then idle
    got = replay(series, start=8)
    first_down = next(i for i, d in enumerate(got) if d.reason is Reason.SCALE_DOWN)
    # the last high recommendation (t=30) must leave the 300 s window: t=330 is decision 22
    assert first_down * INTERVAL - 2 * INTERVAL >= LIMITS.scale_down_window
    assert all(d.reason is Reason.STABILIZING for d in got[3:first_down])
    downs = replicas(got)[first_down - 1 :]
    assert downs[:8] == [8, 7, 6, 5, 4, 3, 2, 2]  # one per decision, never below min
    assert got[-1].reason is Reason.AT_LIMIT  # idle wants 1, min is 2


def test_within_tolerance_never_moves() -> None:
    series = [2.0 * (1 + 0.1 * math.sin(i)) for i in range(60)]  # +-10% around target
    got = replay(series)
    assert changes(got) == 0
    assert {d.reason for d in got} == {Reason.WITHIN_TOLERANCE}


def test_flapping_input_does_not_flap() -> None:
    # high and low alternate every decision: the up window always contains a low, the down window a high
    series = [6.0 if i % 2 else 1.0 for i in range(80)]
    assert changes(replay(series)) == 0
    # a 45 s burst every 2 minutes: scales up (in steps of 4) and then holds, no up-down-up sawtooth
    bursty = [8.0 if i % 8 in (0, 1, 2) else 2.0 for i in range(80)]
    got = replay(bursty)
    assert replicas(got)[:3] == [6, 8, 8]
    assert changes(got) == 2


def test_no_data_holds_and_delays_the_next_scale_down() -> None:
    series: list[float | None] = [8.0] * 3 + [None] * 30 + [1.0] * 30
    got = replay(series, start=8)
    assert {d.reason for d in got[3:33]} == {Reason.NO_DATA}
    assert replicas(got)[:33] == [8] * 33
    first_down = next(i for i, d in enumerate(got) if d.reason is Reason.SCALE_DOWN)
    # the blind spell counts as "keep current": a full down window of fresh data is needed first
    assert (first_down - 33) * INTERVAL >= LIMITS.scale_down_window - INTERVAL


def test_no_data_does_not_block_a_scale_up() -> None:
    series: list[float | None] = [2.0] * 3 + [None] * 5 + [8.0] * 4
    got = replay(series)
    assert replicas(got)[7:] == [2, 6, 8, 8, 8]


@pytest.mark.parametrize("bad", [Sample(float("nan")), Sample(float("inf")), Sample(-1.0), Sample(3, 0)])
def test_unusable_samples_are_no_data(bad: Sample) -> None:
    assert Policy(LIMITS).decide(0.0, 3, bad).reason is Reason.NO_DATA


def test_bounds_are_restored_without_data_and_zero_means_disabled() -> None:
    policy = Policy(LIMITS)
    assert policy.decide(0, 1, None) == Decision(1, 2, Reason.BELOW_MIN)
    assert policy.decide(0, 14, None) == Decision(14, 10, Reason.ABOVE_MAX)
    assert policy.decide(0, 0, Sample(50.0)) == Decision(0, 0, Reason.DISABLED)
    assert policy.decide(0, 10, Sample(50.0)).reason is Reason.AT_LIMIT


def test_zero_windows_act_at_once() -> None:
    limits = Limits(2, 10, target=1.0, scale_up_window=0, scale_down_window=0, max_up=10, max_down=10)
    assert replicas(replay([2.0, 7.0, 2.0], limits=limits)) == [2, 7, 2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_replicas": 0, "max_replicas": 2},
        {"min_replicas": 3, "max_replicas": 2},
        {"target": 0.0},
        {"tolerance": 1.0},
        {"max_up": 0},
        {"scale_down_window": -1.0},
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, float]) -> None:
    args = {"min_replicas": 2, "max_replicas": 10, "target": 1.0, **kwargs}
    with pytest.raises(ValueError):
        Limits(**args)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    start=st.integers(0, 14),
    series=st.lists(
        st.one_of(st.none(), st.floats(0, 100), st.just(float("nan"))),
        min_size=1,
        max_size=60,
    ),
    reporting=st.one_of(st.none(), st.integers(0, 12)),
)
def test_never_outside_bounds_never_more_than_one_step(
    start: int, series: list[float | None], reporting: int | None
) -> None:
    policy, current = Policy(LIMITS), start
    for i, value in enumerate(series):
        decision = policy.decide(i * INTERVAL, current, None if value is None else Sample(value, reporting))
        if current == 0:
            assert decision.desired == 0
        elif LIMITS.min_replicas <= current <= LIMITS.max_replicas:
            assert LIMITS.min_replicas <= decision.desired <= LIMITS.max_replicas
            assert -LIMITS.max_down <= decision.desired - current <= LIMITS.max_up
        else:
            assert decision.desired == LIMITS.clamp(current)
        current = decision.desired


# --- a series recorded from a real prometheus scraping a real server under load -----------------------------
def test_recorded_series_rises_once_falls_once_and_returns_to_min() -> None:
    """autoscaler_series.json beside this file (see its "how"): the default signal, sampled every 5 s from a
    real prometheus while a real 2-worker server took a 40 s burst, 30 s of quiet, a 20 s burst, then
    quiet. Replayed against a simulated 2-replica service with a target of 0.25 busy seconds per second
    per replica (the loaded server peaked near 1.0), windows of 10 s up and 60 s down."""
    recorded = json.loads(RECORDED.read_text())
    step = recorded["step_seconds"]
    values: list[float | None] = recorded["values"]
    limits = Limits(2, 8, target=0.25, scale_up_window=2 * step, scale_down_window=12 * step, max_up=2)
    policy, current, trajectory = Policy(limits), 2, []
    for i, value in enumerate(values):
        decision = policy.decide(i * step, current, None if value is None else Sample(value))
        trajectory.append(decision)
        current = decision.desired
    path = replicas(trajectory)
    peak = path.index(max(path))
    assert max(path) == 4, path  # ceil(~1.0 / 0.25)
    assert path[:peak] == sorted(path[:peak]) and path[peak:] == sorted(path[peak:], reverse=True), (
        f"must rise once and fall once, the quiet gap between bursts is shorter than the down window: {path}"
    )
    last_up = max(i for i, d in enumerate(trajectory) if d.reason is Reason.SCALE_UP)
    first_down = min(i for i, d in enumerate(trajectory) if d.reason is Reason.SCALE_DOWN)
    assert (first_down - last_up) * step >= limits.scale_down_window
    assert path[-1] == 2 and trajectory[-1].reason is Reason.AT_LIMIT
