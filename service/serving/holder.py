"""The model a worker serves, and how it follows the registry without a restart.

A worker loads its model in a background thread; the app's lifespan waits for that FIRST attempt before
the worker accepts connections, so a starting worker never answers /predict with "not ready" while its
siblings could serve. If the first attempt fails (a bad artifact, an unreadable registry), the worker
starts anyway: /health/live answers, /health/ready says why it is not ready, and the follower keeps trying.

It then polls the registry's aliases file (one stat() per interval). When the followed alias moves, the
new version goes through verify sha256 (and its signature) -> read scorer.json -> compile -> golden-row
self-check (never an unpickle: service/model/serving_artifact.py), and only then
replaces the current one in a single reference assignment. A request reads `holder.current` once, so it
is scored by exactly one version. A version that fails any step is never served.

The follower cannot die of a failure: anything a refresh raises (a half-written aliases file, a
PermissionError, a corrupt version) is counted (`model_swaps{result="failed"}`), logged when it differs
from the previous failure, and retried after the poll interval, doubling up to
PROPENSITY_RELOAD_BACKOFF_MAX_SECONDS. The retry includes the same version on an unchanged aliases file,
so a restored artifact is picked up without a re-promotion; a change of the aliases file is tried at the
next poll, whatever the backoff. Meanwhile the worker keeps serving its current version and reports that
it is behind its alias (`model_behind_alias`, the /health/ready body).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.errors import (
    ArtifactIntegrityError,
    ArtifactNotFound,
    ModelNotReady,
    ModelRefused,
    PropensityError,
    RegistryUnavailable,
    SelfCheckFailed,
)
from service.model.registries import ModelRegistry, open_registry
from service.model.registry import Stamp
from service.model.serving_artifact import ServingArtifact
from service.serving.metrics import Metrics
from service.serving.scorer import CompiledModel
from service.settings import Settings

log = logging.getLogger("propensity.model")

MAX_DOUBLINGS = 30  # keeps 2**n a float long before any cap matters


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before the next attempt after `failures` consecutive failures: base, 2*base, 4*base, ...
    never above `cap` (nor below `base`)."""
    return min(base * 2 ** min(max(failures - 1, 0), MAX_DOUBLINGS), max(cap, base))


@dataclass(frozen=True)
class RefreshFailure:
    """The follower's latest failed attempt, and when the next one is due."""

    version: str | None  # what it tried to load; None when the registry itself could not be read
    detail: str
    stamp: Stamp | None  # the aliases file as it was: a change is tried at once
    failures: int  # consecutive failed attempts
    retry_at: float  # on the holder's clock
    refused: str | None = None  # why the version itself was refused, in words fit for a client; None: a
    # failure that may pass on its own (the registry unreadable, a file not readable yet)


def describe(exc: Exception) -> str:
    return exc.detail if isinstance(exc, PropensityError) else f"{type(exc).__name__}: {exc}"


def refusal(version: str | None, exc: Exception) -> str | None:
    """Why `version` was refused, without its paths or hashes; None when the version itself is not at
    fault (it could not be resolved or read: an OSError may pass, a file being copied in)."""
    if version is None or isinstance(exc, OSError | RegistryUnavailable):
        return None
    if isinstance(exc, ArtifactIntegrityError):
        return "its files fail their integrity (sha256) check"
    if isinstance(exc, SelfCheckFailed):
        return "it does not reproduce its golden rows"
    return "it cannot be loaded"


class ModelHolder:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        registry: ModelRegistry | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = registry or open_registry(settings)
        self.current: CompiledModel | None = None
        self.metadata: dict[str, Any] = {}
        self.last_error: str | None = None
        self.failure: RefreshFailure | None = None
        self._stamp: Stamp | None = None
        self._clock = clock
        self._stop = threading.Event()
        self.first_attempt = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._report_start()

    @property
    def ready(self) -> bool:
        return self.current is not None

    @property
    def behind(self) -> bool:
        """True while the latest refresh failed: the alias may name a version this worker does not serve."""
        return self.failure is not None

    def unavailable(self) -> PropensityError:
        """The error to answer while no model is served, fit for a client: no paths, no hashes (the log
        has those). A refused version is not "loading": retrying does not help until an operator acts."""
        failure = self.failure
        if failure is not None and failure.refused is not None:
            return ModelRefused(
                f"{self.registry.name} {failure.version} is refused ({failure.refused}) and no other "
                "version is served; an operator must publish a good version or restore this one's files "
                "(the worker log has the details)",
                version=failure.version,
            )
        if failure is not None:
            return ModelNotReady(
                "no model could be read from the registry yet; the worker keeps trying, retry shortly",
                retry_after=1,
            )
        return ModelNotReady("the model is still loading; retry shortly", retry_after=1)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- the follower thread ------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._guarded(self.refresh)
        finally:
            self.first_attempt.set()
        while (wait := self._next_wait()) is not None and not self._stop.wait(wait):
            self._guarded(self.poll)

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # refresh catches its own failures; this keeps the thread alive through the rest
            log.exception("model follower: unexpected error, continuing")

    def _next_wait(self) -> float | None:
        """Seconds to the next poll; None when there is nothing left to do (following off, model loaded)."""
        interval = self.settings.reload_interval_seconds
        if interval > 0:
            return interval
        failure = self.failure
        if self.current is not None or failure is None:
            return None
        return max(
            failure.retry_at - self._clock(), 0.0
        )  # following off, but a worker without a model retries

    def poll(self) -> None:
        """One tick of the follower: refresh if the aliases file changed or a failed attempt is due again."""
        failure = self.failure
        if failure is not None and self._clock() < failure.retry_at and self._peek_stamp() == failure.stamp:
            return
        self.refresh()

    def _peek_stamp(self) -> Stamp | None:
        try:
            return self.registry.aliases_stamp()
        except OSError:
            return None

    # --- one attempt --------------------------------------------------------------------------------
    def _target(self) -> str:
        if self.settings.model_version:
            return self.registry.resolve(self.settings.model_version)
        return self.registry.resolve(self.settings.model_alias)

    def _up_to_date(self, stamp: Stamp | None) -> bool:
        if self.current is None or self.failure is not None:
            return False
        return stamp == self._stamp or self.settings.model_version is not None  # a pin follows nothing

    def refresh(self) -> None:
        """Load the followed version if it changed or the last attempt failed. Safe to call from any thread;
        never raises (a failure is recorded in `failure` and `last_error`, counted and logged)."""
        with self._lock:
            version: str | None = None
            stamp: Stamp | None = None
            try:
                stamp = self.registry.aliases_stamp()
                if self._up_to_date(stamp):
                    return
                version = self._target()
                if self.current is not None and version == self.current.version:
                    self._recovered(stamp, f"following {version} again")
                    return
                artifact = self.registry.load_serving(version)
                compiled = CompiledModel.from_artifact(artifact, self.settings.passthrough_fields)
                compiled.self_check(artifact.metadata.get("golden_rows", {}))
            except Exception as exc:  # a bad registry or version must never take the worker or follower down
                self._fail(version, describe(exc), stamp, refusal(version, exc))
                return
            self._swap(compiled, artifact, stamp)

    def _swap(self, compiled: CompiledModel, artifact: ServingArtifact, stamp: Stamp | None) -> None:
        previous = self.current
        self.current = compiled  # the swap: one reference assignment
        self.metadata = artifact.metadata
        self._report_loaded(previous, compiled)
        log.info(
            "%s %s/%s (sha256 %s)%s",
            self.role,
            compiled.name,
            compiled.version,
            compiled.sha256[:12],
            f", replacing {previous.version}" if previous else "",
        )
        self._recovered(stamp, f"loaded {compiled.version}")

    def _recovered(self, stamp: Stamp | None, what: str) -> None:
        self._stamp, self.last_error = stamp, None
        failure, self.failure = self.failure, None
        self._report_behind(False)
        if failure is not None:
            log.info("model follower recovered after %d failed attempt(s): %s", failure.failures, what)

    def _fail(
        self, version: str | None, detail: str, stamp: Stamp | None, refused: str | None = None
    ) -> None:
        previous = self.failure
        failures = previous.failures + 1 if previous else 1
        base = self.settings.reload_interval_seconds or 1.0
        delay = backoff_delay(failures, base, self.settings.reload_backoff_max_seconds)
        self.failure = RefreshFailure(version, detail, stamp, failures, self._clock() + delay, refused)
        self.last_error = detail
        self._report_failed()
        repeated = previous is not None and (previous.version, previous.detail) == (version, detail)
        log.log(
            logging.DEBUG if repeated else self.failure_level(version),
            "model %s not loaded, still %s %s (attempt %d, next in %.3gs): %s",
            version or "?",
            self.role,
            self.current.version if self.current else "nothing",
            failures,
            delay,
            detail,
        )

    # --- what the holder reports (a shadow holder reports elsewhere) ---------------------------------
    role = "serving"

    def failure_level(self, version: str | None) -> int:
        return logging.ERROR

    def _report_start(self) -> None:
        self.metrics.model_ready.set(0)
        self.metrics.model_behind_alias.set(0)

    def _report_loaded(self, previous: CompiledModel | None, compiled: CompiledModel) -> None:
        if previous is not None:
            self.metrics.model_info.labels(previous.name, previous.version, previous.sha256[:12]).set(0)
        self.metrics.model_info.labels(compiled.name, compiled.version, compiled.sha256[:12]).set(1)
        self.metrics.model_ready.set(1)
        self.metrics.model_swaps.labels("loaded" if previous is None else "swapped").inc()

    def _report_behind(self, behind: bool) -> None:
        self.metrics.model_behind_alias.set(1 if behind else 0)

    def _report_failed(self) -> None:
        self.metrics.model_swaps.labels("failed").inc()
        self._report_behind(True)


class ChallengerHolder(ModelHolder):
    """A challenger (the shadow model, the canary): follows another alias (staging) the way the served
    model follows its own (verify, compile, golden rows, swap), but reports only to its own info gauge. A
    registry without that alias is the usual case, not an error: it is tried again every interval,
    quietly."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        registry: ModelRegistry | None = None,
        *,
        alias: str,
        info: Any,
        role: str,
    ) -> None:
        follow = settings.model_copy(update={"model_alias": alias, "model_version": None})
        self._info = info  # a Gauge labelled (model, version)
        self.role = role  # in its log lines: "<role> propensity/v2 (sha256 ...)"
        super().__init__(follow, metrics, registry)

    def failure_level(self, version: str | None) -> int:
        return logging.INFO if version is None else logging.ERROR  # no such alias: nothing to follow

    def _target(self) -> str:
        try:
            return super()._target()
        except ArtifactNotFound:  # the alias was deleted (or never set): stop using its old version
            previous, self.current = self.current, None
            if previous is not None:
                self._info.labels(previous.name, previous.version).set(0)
            raise

    def _report_start(self) -> None:
        pass

    def _report_loaded(self, previous: CompiledModel | None, compiled: CompiledModel) -> None:
        if previous is not None:
            self._info.labels(previous.name, previous.version).set(0)
        self._info.labels(compiled.name, compiled.version).set(1)

    def _report_behind(self, behind: bool) -> None:
        pass

    def _report_failed(self) -> None:
        pass
