"""The scaling decision, the way the Kubernetes HPA makes it. Pure: no I/O, time is passed in.

Per decision, given the current replica count and a load sample (the TOTAL load over the replicas that
report, and how many report):

1. Bounds first: a service above max goes to max, below min goes to min, at 0 is left alone (an operator
   scaled it to zero: autoscaling is off). This needs no load data.
2. No data: hold. The hold is remembered as a recommendation of "current" for the scale-down window, so
   after a blind spell the autoscaler only scales down on a full window of fresh data.
3. Usage ratio = (load per reporting replica) / target. Within the tolerance band: recommend current.
   Otherwise recommend ceil(total / target) (= ceil(current x ratio) when every replica reports). Replicas
   that do not report yet (starting) count as 0 load when scaling up and as exactly on target when scaling
   down; if that flips the direction or lands in the band, recommend current (HPA's missing-pod rule).
4. Clamp the recommendation to [min, max] and remember it.
5. Stabilise: scale up only to the lowest recommendation of the scale-up window; scale down only to the
   highest recommendation of the scale-down window.
6. Limit the step: at most max_up replicas added / max_down removed per decision.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum


class Reason(StrEnum):
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    WITHIN_TOLERANCE = "within_tolerance"
    STABILIZING = "stabilizing"  # the load asks for a change, the stabilisation window holds it back
    AT_LIMIT = "at_limit"  # the load asks for more than max or less than min, and we are there already
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    DISABLED = "disabled"  # the service has 0 replicas
    NO_DATA = "no_data"  # Prometheus answered, with nothing usable
    SIGNAL_ERROR = "signal_error"  # Prometheus unreachable or answered with an error
    SCALER_ERROR = "scaler_error"  # the Docker Engine could not be read or updated (set by the loop)


@dataclass(frozen=True)
class Sample:
    """Load over the api replicas: `total` summed over the `reporting` replicas (None = all of them)."""

    total: float
    reporting: int | None = None


@dataclass(frozen=True)
class Limits:
    min_replicas: int
    max_replicas: int
    target: float
    tolerance: float = 0.1
    scale_up_window: float = 30.0
    scale_down_window: float = 300.0
    max_up: int = 4
    max_down: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")
        if self.target <= 0 or not 0 <= self.tolerance < 1:
            raise ValueError("need target > 0 and 0 <= tolerance < 1")
        if self.scale_up_window < 0 or self.scale_down_window < 0 or self.max_up < 1 or self.max_down < 1:
            raise ValueError("windows must be >= 0 and steps >= 1")

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, n))


@dataclass(frozen=True)
class Decision:
    current: int
    desired: int
    reason: Reason
    per_replica: float | None = None  # load per reporting replica
    recommendation: int | None = None  # before stabilisation and step limits

    @property
    def changes(self) -> bool:
        return self.desired != self.current


EPSILON = 1e-9  # float noise: 2.2 / 2 is 1.1000000000000001, which is still "+10%"


def _ceil(x: float) -> int:
    return math.ceil(x - EPSILON)  # 2.0000000001 replicas is 2, not 3


def _within_band(ratio: float, tolerance: float) -> bool:
    return abs(ratio - 1) <= tolerance + EPSILON


def recommend(current: int, sample: Sample, limits: Limits) -> tuple[int, float]:
    """The HPA's raw recommendation (unclamped) and the load per reporting replica."""
    reporting = current if sample.reporting is None else min(sample.reporting, current)
    per_replica = sample.total / reporting
    ratio = per_replica / limits.target
    missing = current - reporting
    if missing == 0:
        if _within_band(ratio, limits.tolerance):
            return current, per_replica
        return _ceil(sample.total / limits.target), per_replica
    # Replicas that do not report yet: 0 load when scaling up, exactly on target when scaling down.
    if _within_band(ratio, limits.tolerance):
        return current, per_replica
    total = sample.total if ratio > 1 else sample.total + missing * limits.target
    new_ratio = total / current / limits.target
    if _within_band(new_ratio, limits.tolerance) or (ratio > 1) != (new_ratio > 1):
        return current, per_replica
    return _ceil(total / limits.target), per_replica


class Policy:
    """The stateful part: recommendations remembered over the stabilisation windows."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._up: deque[tuple[float, int]] = deque()
        self._down: deque[tuple[float, int]] = deque()

    def _remember(self, now: float, recommendation: int, *, up: bool = True) -> None:
        if up:
            self._up.append((now, recommendation))
        self._down.append((now, recommendation))
        for history, window in (
            (self._up, self.limits.scale_up_window),
            (self._down, self.limits.scale_down_window),
        ):
            while history and history[0][0] <= now - window:
                history.popleft()

    @staticmethod
    def _within(history: deque[tuple[float, int]], now: float, window: float) -> list[int]:
        return [r for t, r in history if t > now - window]

    def decide(
        self, now: float, current: int, sample: Sample | None, *, no_data: Reason = Reason.NO_DATA
    ) -> Decision:
        """One decision at time `now` (seconds, any monotonic clock); `sample` None means no usable data."""
        lim = self.limits
        if current == 0:
            return Decision(current, current, Reason.DISABLED)
        if current > lim.max_replicas:
            return Decision(current, lim.max_replicas, Reason.ABOVE_MAX)
        if current < lim.min_replicas:
            return Decision(current, lim.min_replicas, Reason.BELOW_MIN)
        if sample is None or sample.reporting == 0 or not math.isfinite(sample.total) or sample.total < 0:
            self._remember(now, current, up=False)
            return Decision(current, current, no_data)

        raw, per_replica = recommend(current, sample, lim)
        recommendation = lim.clamp(raw)
        up_to = min([recommendation, *self._within(self._up, now, lim.scale_up_window)])
        down_to = max([recommendation, *self._within(self._down, now, lim.scale_down_window)])
        self._remember(now, recommendation)
        desired = min(max(current, up_to), down_to)
        if desired > current:
            desired = min(desired, current + lim.max_up)
        elif desired < current:
            desired = max(desired, current - lim.max_down)

        if desired > current:
            reason = Reason.SCALE_UP
        elif desired < current:
            reason = Reason.SCALE_DOWN
        elif raw == current:
            reason = Reason.WITHIN_TOLERANCE
        elif recommendation == current:
            reason = Reason.AT_LIMIT
        else:
            reason = Reason.STABILIZING
        return Decision(current, desired, reason, per_replica, recommendation)
