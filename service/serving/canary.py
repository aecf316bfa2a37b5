"""The canary: a share of live calls answered by the challenger (`canary_alias`, staging), with production
behind it for every call it fails, and an automatic rollback when it fails too often or is too slow.

Routing. A call goes to the canary when a stable hash of its routing key falls in the first
`canary_share` of the hash space: the key is the first row's pass-through id (customer_id) when it
carries one, else the call's request id (X-Request-ID, the client's when it sent one). The hash is
BLAKE2b of the key, the same in every worker and replica, so a customer is answered by one model for as
long as the share and the canary stand (a batch is answered by one version: its first row's id routes
it). The decision is made once the body is decoded, before scoring; the answer's X-Model-Version names
the version that answered.

Falling back. A call the canary fails (an error of any kind, bad input included) is scored again by
production, and the client gets production's answer, or production's error if production fails it
too. Only a call production answers where the canary did not counts against the canary.

Judging. Each worker keeps its last `canary_window_calls` canary calls (failed or not) and the call
times of both versions (cache hits excluded). Once it holds `canary_min_calls` canary calls, a failure
share above `canary_max_error_rate` rolls the canary back; so does, once both windows are full, a
canary p95 call time above `canary_max_latency_ratio` x production's and above it by
`canary_min_latency_regression_seconds`. A rollback: the worker stops routing to that version at once
(until the alias names another), counts it (propensity_canary_rollbacks_total), and deletes the alias
from the registry with the reason, which `propensity registry history` then shows, so that every other
worker and replica stops too within a reload interval (a worker that cannot write to the registry
still stops by itself).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from service.errors import PropensityError
from service.model.registries import ModelRegistry
from service.serving.batch import ABSENT, Batch, ColumnBatch
from service.serving.metric_buffer import MetricBuffer
from service.serving.metrics import Metrics
from service.serving.scorer import CompiledModel
from service.settings import Settings

log = logging.getLogger("propensity.canary")

HASH_SPACE = 2**64
JUDGE_EVERY = 10  # canary calls between two latency verdicts (a verdict sorts both windows)


def bucket(key: str) -> int:
    """Where `key` falls in [0, 2**64): the same in every process, run and machine."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def routing_key(batch: Batch, passthrough: tuple[str, ...], request_id: str) -> str:
    """The first row's first pass-through id that it carries, else the request id."""
    if passthrough and len(batch):
        for name in passthrough:
            value = batch.first_passthrough(name)
            if value is not None and value is not ABSENT and value != "":
                return value if isinstance(value, str) else str(value)
    return request_id


def reads_all(served: CompiledModel, other: CompiledModel) -> bool:
    """Whether a column batch decoded for `served` holds every column `other` reads."""
    return set(other.used_columns) <= set(served.used_columns) | set(served.passthrough)


def usable(batch: Batch, decoded_for: CompiledModel, model: CompiledModel) -> bool:
    """Whether `model` can score `batch` as decoded for `decoded_for` (a column batch holds only the
    columns it was decoded for; every other batch holds every column the client sent)."""
    return not isinstance(batch, ColumnBatch) or reads_all(decoded_for, model)


def p95(values: deque[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


@dataclass(frozen=True)
class Verdict:
    reason: str  # error_rate | latency
    detail: str


class CanaryGuard:
    """One worker's recent canary calls and both versions' call times; says when to roll back.
    Thread-safe: calls are recorded from the event loop and from the offload thread."""

    def __init__(self, settings: Settings) -> None:
        window = settings.canary_window_calls
        self.min_calls = min(settings.canary_min_calls, window)
        self.max_error_rate = settings.canary_max_error_rate
        self.max_latency_ratio = settings.canary_max_latency_ratio
        self.min_regression = settings.canary_min_latency_regression_seconds
        self.window = window
        self._failed: deque[bool] = deque(maxlen=window)
        self._canary_seconds: deque[float] = deque(maxlen=window)
        self._production_seconds: deque[float] = deque(maxlen=window)
        self._since_judged = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        """A new canary version: nothing of the last one's calls counts for it."""
        with self._lock:
            self._failed.clear()
            self._canary_seconds.clear()
            self._since_judged = 0

    def production(self, seconds: float) -> None:
        with self._lock:
            self._production_seconds.append(seconds)

    def canary(self, seconds: float | None) -> Verdict | None:
        """One canary call: its time, or None when it failed. Returns a verdict when it is time to roll
        back."""
        with self._lock:
            self._failed.append(seconds is None)
            if seconds is not None:
                self._canary_seconds.append(seconds)
            self._since_judged += 1
            return self._judge()

    def _judge(self) -> Verdict | None:
        calls = len(self._failed)
        if calls < self.min_calls:
            return None
        failures = sum(self._failed)
        if failures / calls > self.max_error_rate:
            return Verdict("error_rate", f"{failures} of its last {calls} calls failed")
        if self._since_judged < JUDGE_EVERY:
            return None
        self._since_judged = 0
        if len(self._canary_seconds) < self.window or len(self._production_seconds) < self.window:
            return None  # a p95 over fewer calls is one slow call (a cold start, a collection)
        canary, production = p95(self._canary_seconds), p95(self._production_seconds)
        if canary > self.max_latency_ratio * production and canary - production > self.min_regression:
            return Verdict(
                "latency",
                f"p95 call time {canary * 1e3:.3g} ms against production's {production * 1e3:.3g} ms "
                f"(over {len(self._canary_seconds)} and {len(self._production_seconds)} calls)",
            )
        return None


class Follower(Protocol):
    """The canary's holder (a ChallengerHolder): the version to route to, if any."""

    @property
    def current(self) -> CompiledModel | None: ...

    @property
    def first_attempt(self) -> threading.Event: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class CanaryRouter:
    """Which model answers a call, and what happens when the canary fails it (service/serving/pipeline.py
    asks; this keeps the canary holder, the guard and the per-version metrics)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        holder: Follower,
        registry: ModelRegistry | None,
        *,
        background: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.threshold = int(settings.canary_share * HASH_SPACE)
        self.alias = settings.canary_alias
        self.actor = f"canary-guard@{socket.gethostname()}:{os.getpid()}"
        self.metrics = metrics
        self.holder = holder
        self.registry = registry
        self.guard = CanaryGuard(settings)
        self.halted: set[str] = set()  # versions this worker rolled back (or saw rolled back)
        self._judged: str | None = None  # the version the guard's windows are about
        self._warned: str | None = None  # the version whose failure was last logged as a warning
        self._background = background or _in_thread
        self._children: dict[tuple[str, str], tuple[object, object]] = {}

    def start(self) -> None:
        self.holder.start()

    @property
    def first_attempt(self) -> threading.Event:
        """Set once the holder's first attempt to load the canary is over (loaded or not)."""
        return self.holder.first_attempt

    def stop(self) -> None:
        self.holder.stop()

    # --- routing (the event loop, or the offload thread) ----------------------------------------------
    def candidate(self, production: CompiledModel) -> CompiledModel | None:
        """The canary calls may be routed to now: None while there is none, it is production's version,
        or it was rolled back."""
        canary = self.holder.current  # read once: the follower may swap it
        if canary is None:
            if self.halted:
                self.halted.clear()  # the alias is gone: a version staged again later is a new canary
            return None
        if canary.version == production.version or canary.version in self.halted:
            return None
        return canary

    def routes(self, batch: Batch, passthrough: tuple[str, ...], request_id: str) -> bool:
        return bucket(routing_key(batch, passthrough, request_id)) < self.threshold

    # --- outcomes ---------------------------------------------------------------------------------------
    def answered(self, buffer: MetricBuffer, model: CompiledModel, route: str, seconds: float) -> None:
        """A call `model` answered (`route`: production, canary or fallback), in `seconds`."""
        calls, timing = self._metric_children(model.version, route)
        buffer.inc(calls)
        buffer.observe(timing, seconds)
        if route == "canary":
            self._canary_call(model, seconds)
        else:
            self.guard.production(seconds)

    def failed(self, canary: CompiledModel, exc: Exception) -> None:
        """The canary failed a call that production then answered."""
        what = exc.detail if isinstance(exc, PropensityError) else f"{type(exc).__name__}: {exc}"
        first, self._warned = (
            self._warned != canary.version,
            canary.version,
        )  # once a version: the metric counts
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "canary %s failed a call, production answered it: %s",
            canary.version,
            what,
        )
        self._canary_call(canary, None)

    def _canary_call(self, canary: CompiledModel, seconds: float | None) -> None:
        if self._judged != canary.version:
            self._judged = canary.version
            self.guard.reset()
        verdict = self.guard.canary(seconds)
        if verdict is not None and canary.version not in self.halted:
            self.roll_back(canary, verdict)

    def roll_back(self, canary: CompiledModel, verdict: Verdict) -> None:
        self.halted.add(canary.version)
        self.metrics.canary_rollbacks.labels(canary.version, verdict.reason).inc()
        self.metrics.canary_model_info.labels(canary.name, canary.version).set(0)
        log.error(
            "canary %s rolled back (%s: %s): production answers every call",
            canary.version,
            verdict.reason,
            verdict.detail,
        )
        self._background(lambda: self._record(canary.version, verdict))

    def _record(self, version: str, verdict: Verdict) -> None:
        """Delete the alias if it still names the rolled-back version, with the reason in the audit log.
        Another worker may have done it first; a registry this worker cannot write is logged."""
        if self.registry is None:
            return
        try:
            named = self.registry.aliases().get(self.alias, {}).get("version")
            if str(named) != version:
                return
            self.registry.delete_alias(
                self.alias,
                by=self.actor,
                reason=f"canary rolled back automatically ({verdict.reason}): {verdict.detail}",
                kind="canary-rollback",
            )
        except Exception as exc:  # the worker has stopped routing to it already; the alias stays
            what = exc.detail if isinstance(exc, PropensityError) else f"{type(exc).__name__}: {exc}"
            log.warning("canary %s: the %s alias could not be deleted: %s", version, self.alias, what)

    def _metric_children(self, version: str, route: str) -> tuple[object, object]:
        children = self._children.get((version, route))
        if children is None:
            children = (
                self.metrics.version_calls.labels(version, route),
                self.metrics.version_call_seconds.labels(version),
            )
            self._children[(version, route)] = children
        return children


def _in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="canary-rollback", daemon=True).start()
