"""The performance gauges: realized and estimated performance per model version over the last day, week
and month, recomputed every `performance_refresh_seconds` from the prediction log.

One worker per replica computes them (the first to take a lock file; another takes over when it dies),
in a thread of its own, from one query over the longest window. Their alert rules live in
deploy/prometheus (docs/monitoring.md has the runbook)."""

from __future__ import annotations

import fcntl
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from service.monitoring.feedback import Feedback
from service.monitoring.performance import PredictionFrame, evaluate
from service.serving.metrics import Metrics

log = logging.getLogger("propensity.performance")
WINDOWS = {"1d": 86_400.0, "7d": 7 * 86_400.0, "30d": 30 * 86_400.0}
GAP_METRICS = ("auc", "precision", "recall", "observed_rate")


def _subset(frame: PredictionFrame, mask: np.ndarray) -> PredictionFrame:
    return PredictionFrame(
        frame.scored_at[mask], frame.version[mask], frame.phat[mask], frame.outcome[mask], frame.label[mask]
    )


class PerformanceGauges:
    def __init__(
        self,
        feedback: Feedback,
        metrics: Metrics,
        *,
        cutoff: Callable[[], float | None],
        interval: float,
        min_labels: int,
        lock_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.feedback = feedback
        self.metrics = metrics
        self.cutoff = cutoff
        self.interval = interval
        self.min_labels = min_labels
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.gettempdir()
        self.lock_path = lock_path or Path(directory) / f"propensity-performance-{os.getppid()}.lock"
        self._clock = clock
        self._lock_file: IO[str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="performance-gauges", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self._leader():
                try:
                    self.refresh()
                except Exception as exc:  # the database away, a bug: the gauges go stale, and say so
                    log.warning("performance gauges not refreshed: %s", exc)

    def _leader(self) -> bool:
        if self._lock_file is not None:
            return True
        try:
            fh = self.lock_path.open("a")
        except OSError:
            return False
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._lock_file = fh
        return True

    def refresh(self) -> int:
        """Compute and set every gauge; returns the number of (version, window) cohorts set."""
        cutoff = self.cutoff()
        if cutoff is None:
            return 0
        now = self._clock()
        frame = self.feedback.store().frame(now - max(WINDOWS.values()))
        done = 0
        for window, seconds in WINDOWS.items():
            part = _subset(frame, frame.scored_at >= now - seconds)
            report = evaluate(part, cutoff=cutoff, by="version", min_labels=self.min_labels).to_dict()
            for cohort in report["cohorts"]:
                self._set(cohort, window)
                done += 1
        self.metrics.performance_evaluated.set(now)
        return done

    def _set(self, cohort: dict[str, Any], window: str) -> None:
        g = self.metrics.performance
        version = str(cohort["version"])
        g["predictions"].labels(version, window).set(cohort["predictions"])
        g["labels"].labels(version, window).set(cohort["labelled"])
        coverage = cohort["coverage"]["value"]
        g["label_coverage"].labels(version, window).set(coverage if coverage is not None else 0.0)
        for kind in ("realized", "estimated"):
            for metric, interval in (cohort.get(kind) or {}).items():
                for suffix, key in (("", "value"), ("_lower", "lower"), ("_upper", "upper")):
                    value = interval.get(key)
                    if value is not None and math.isfinite(value):
                        g[kind + suffix].labels(version, window, metric).set(value)
        for metric, gap in (cohort.get("gap") or {}).items():
            if gap.get("value") is not None:
                g["gap"].labels(version, window, metric).set(gap["value"])
            g["gap_significant"].labels(version, window, metric).set(1.0 if gap.get("significant") else 0.0)
