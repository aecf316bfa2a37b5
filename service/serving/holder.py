"""The model a worker serves, and how it follows the registry without a restart.

A worker loads its model in a background thread; the app's lifespan waits for that FIRST attempt before
the worker accepts connections, so a starting worker never answers /predict with "not ready" while its
siblings could serve. If the first attempt fails (a bad artifact), the worker starts anyway: /health/live
answers, /health/ready says why it is not ready, and the follower keeps trying.

It then polls the registry's aliases file (one stat() per interval). When the followed alias moves, the
new version goes through load -> verify sha256 -> compile -> golden-row self-check, and only then
replaces the current one in a single reference assignment. A request reads `holder.current` once, so it
is scored by exactly one version. A version that fails any step is never served; the failure is logged
and counted, and the worker keeps the version it had.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from service.errors import PropensityError
from service.model.registry import Registry
from service.serving.metrics import Metrics
from service.serving.scorer import CompiledModel
from service.settings import Settings

log = logging.getLogger("propensity.model")


class ModelHolder:
    def __init__(self, settings: Settings, metrics: Metrics, registry: Registry | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.registry = registry or Registry(settings.artifacts_dir, settings.model_name)
        self.current: CompiledModel | None = None
        self.metadata: dict[str, Any] = {}
        self.last_error: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._failed: str | None = None
        self._stop = threading.Event()
        self.first_attempt = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        metrics.model_ready.set(0)

    @property
    def ready(self) -> bool:
        return self.current is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            self.refresh()
        finally:
            self.first_attempt.set()
        interval = self.settings.reload_interval_seconds
        while interval > 0 and not self._stop.wait(interval):
            self.refresh()
        while self.current is None and not self._stop.wait(1.0):  # never loaded, no polling: keep trying
            self.refresh()

    def _target(self) -> str:
        if self.settings.model_version:
            return self.registry.resolve(self.settings.model_version)
        return self.registry.resolve(self.settings.model_alias)

    def refresh(self) -> None:
        """Load the followed version if it changed. Safe to call from any thread."""
        with self._lock:
            stamp = self.registry.aliases_stamp()
            if self.current is not None and stamp == self._stamp:
                return
            try:
                version = self._target()
            except PropensityError as exc:
                self._fail(None, str(exc.detail), stamp)
                return
            if self.current is not None and version == self.current.version:
                self._stamp = stamp
                return
            if version == self._failed and stamp == self._stamp:
                return
            try:
                artifact = self.registry.load(version)
                compiled = CompiledModel.from_artifact(artifact)
                compiled.self_check(artifact.metadata.get("golden_rows", {}))
            except Exception as exc:  # a bad version must never take the worker down
                detail = exc.detail if isinstance(exc, PropensityError) else f"{type(exc).__name__}: {exc}"
                self._fail(version, detail, stamp)
                return
            previous = self.current
            self.current = compiled  # the swap: one reference assignment
            self.metadata = artifact.metadata
            self._stamp, self._failed, self.last_error = stamp, None, None
            if previous is not None:
                self.metrics.model_info.labels(previous.name, previous.version, previous.sha256[:12]).set(0)
            self.metrics.model_info.labels(compiled.name, compiled.version, compiled.sha256[:12]).set(1)
            self.metrics.model_ready.set(1)
            self.metrics.model_swaps.labels("loaded" if previous is None else "swapped").inc()
            log.info(
                "serving %s/%s (sha256 %s)%s",
                compiled.name,
                compiled.version,
                compiled.sha256[:12],
                f", replacing {previous.version}" if previous else "",
            )

    def _fail(self, version: str | None, detail: str, stamp: tuple[int, int] | None) -> None:
        self._failed, self._stamp, self.last_error = version, stamp, detail
        self.metrics.model_swaps.labels("failed").inc()
        log.error(
            "model %s not loaded, still serving %s: %s",
            version or "?",
            self.current.version if self.current else "nothing",
            detail,
        )
