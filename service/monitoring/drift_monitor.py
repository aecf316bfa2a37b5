"""The per-worker drift monitor: O(1) work per request, statistics computed lazily, exported as gauges.

The scoring pipeline hands it every scored batch (`on_scored`, service/serving/observe.py); observe()
only appends references to the arrays the compiled scorer already produced (parsed numeric values,
category codes, phat) to a buffer. The buffer is folded into bucket counts at `drift_chunk_rows` rows or
1,000 requests, and whenever the gauges are refreshed (every `drift_publish_seconds`, on a request, and
on every /metrics render). Counts go into an open chunk; a chunk closes at `drift_chunk_rows` rows or
`drift_chunk_seconds` of age, goes to the spool (if set) and joins the rolling window: the newest closed
chunks covering about `drift_window_rows` rows, at most `drift_max_chunks` of them. Memory is bounded by
the chunk count, whatever the traffic.

A model swap starts a new window against the new version's reference. Requests still finishing on the
retired version are not counted (they would mix two references).

Everything runs on the worker's event loop thread (observe from the pipeline, publish from /metrics and
observe, close from the lifespan), so there is no lock.
"""

from __future__ import annotations

import itertools
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from service.errors import PropensityError
from service.monitoring.drift import PHAT, Counts, DriftReference, DriftSummary, assess, count_batch
from service.monitoring.drift_spool import SpoolWriter
from service.monitoring.drift_stats import STATUS_LEVEL, Thresholds
from service.serving.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from service.serving.observe import Scoring
    from service.serving.scorer import CompiledModel, Scored

log = logging.getLogger("propensity.drift")
FOLD_BATCHES = 1_000  # fold at least every 1,000 requests: keeps one fold to a few ms (single rows)
_Batch = tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[float], set[int]]


class DriftMonitor:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.thresholds = Thresholds.from_settings(settings)
        self._clock = clock
        self._monotonic = monotonic
        self._spool = (
            SpoolWriter(settings.drift_spool_dir, settings.drift_spool_retention_hours)
            if settings.drift_spool_dir
            else None
        )
        self._model: CompiledModel | None = None
        self._retired: weakref.WeakSet[CompiledModel] = weakref.WeakSet()
        self.reference: DriftReference | None = None
        self._buffer: list[_Batch] = []
        self._buffered = 0
        self._open: Counts | None = None
        self._chunks: deque[Counts] = deque()
        self._next_publish = 0.0
        self._series: set[tuple[Any, str]] = set()  # (gauge, feature) pairs this worker has set
        self.summary: DriftSummary | None = None

    # --- hot path ---
    def on_scored(self, event: Scoring) -> None:
        """The pipeline's observer interface (service.serving.observe.ScoringObserver)."""
        self.observe(event.model, event.scored)

    def observe(self, model: CompiledModel, scored: Scored) -> None:
        """Remember a scored batch. A few attribute reads and a list append; folding is amortised."""
        if model is not self._model and not self._switch(model):
            return
        if self.reference is None:
            return
        self._buffer.append((scored.numeric_values, scored.category_codes, scored.phat, scored.bad_rows))
        self._buffered += len(scored.phat)
        if self._buffered >= self.settings.drift_chunk_rows or len(self._buffer) >= FOLD_BATCHES:
            self.fold()
        if self._monotonic() >= self._next_publish:
            self.publish()

    # --- model changes ---
    def _switch(self, model: CompiledModel) -> bool:
        if model in self._retired:
            return False  # a request that started before the swap: not part of either window
        if self._model is not None:
            self.close()
            self._retired.add(self._model)
        self._model = model
        self._buffer, self._buffered = [], 0
        self._open, self._chunks = None, deque()
        try:
            self.reference = DriftReference.from_model(model)
        except PropensityError as exc:
            self.reference = None
            log.warning("drift monitoring off for %s/%s: %s", model.name, model.version, exc.detail)
        self._zero_gauges()
        self.summary = None
        self._next_publish = 0.0  # report the new window as soon as it has rows
        return True

    # --- folding ---
    def fold(self) -> None:
        """Bucket the buffered batches into the open chunk (and close it when full)."""
        ref = self.reference
        if ref is None or not self._buffer:
            return
        buffer, self._buffer, self._buffered = self._buffer, [], 0
        now = self._clock()
        numeric = {b.name: np.concatenate([batch[0][b.name] for batch in buffer]) for b in ref.numeric}
        codes = {c.column: np.concatenate([batch[1][c.column] for batch in buffer]) for c in ref.categorical}
        phat = np.fromiter(itertools.chain.from_iterable(batch[2] for batch in buffer), dtype=np.float64)
        keep = None
        if any(batch[3] for batch in buffer):
            keep = np.ones(phat.size, dtype=bool)
            offset = 0
            for batch in buffer:
                if batch[3]:
                    keep[[offset + i for i in batch[3]]] = False
                offset += len(batch[2])
        counts = count_batch(ref, numeric, codes, phat, keep=keep, now=now)
        if self._open is None:
            self._open = Counts.empty(ref, now)
        self._open.add(counts)
        if self._open.rows >= self.settings.drift_chunk_rows:
            self._close_chunk()

    def _close_chunk(self) -> None:
        chunk, self._open = self._open, None
        if chunk is None or chunk.rows == 0 or self.reference is None:
            return
        self._chunks.append(chunk)
        if self._spool is not None:
            ref = self.reference
            self._spool.write(
                {"version": ref.version, "sha256": ref.sha256, "layout": ref.layout(), **chunk.to_record()}
            )
        total = sum(c.rows for c in self._chunks)
        while len(self._chunks) > 1 and (
            len(self._chunks) > self.settings.drift_max_chunks
            or total - self._chunks[0].rows >= self.settings.drift_window_rows
        ):
            total -= self._chunks.popleft().rows

    def window(self) -> Counts | None:
        """The rolling window's counts: the kept closed chunks plus the open one (buffer folded first)."""
        if self.reference is None:
            return None
        self.fold()
        total = Counts.empty(self.reference)
        for chunk in self._chunks:
            total.add(chunk)
        if self._open is not None:
            total.add(self._open)
        return total

    # --- reporting ---
    def publish(self) -> DriftSummary | None:
        """Fold, close a chunk that is old enough, compute the statistics, set the gauges."""
        self._next_publish = self._monotonic() + self.settings.drift_publish_seconds
        self.fold()
        if self._open is not None and self._clock() - self._open.start >= self.settings.drift_chunk_seconds:
            self._close_chunk()
        window = self.window()
        if window is None or self.reference is None:
            return None
        summary = assess(self.reference, window, self.thresholds, self.settings.drift_min_rows)
        self.summary = summary
        self._set_gauges(summary)
        return summary

    def close(self) -> None:
        """Fold and write out the open chunk (model swap, shutdown)."""
        self.fold()
        self._close_chunk()

    def _set_gauges(self, summary: DriftSummary) -> None:
        m = self.metrics
        m.drift_rows.set(summary.rows)
        if not summary.reporting:
            return
        m.drift_unseen.set(summary.unseen_share)
        for f in summary.features:
            values = [(m.drift_psi, f.psi or 0.0), (m.drift_status, STATUS_LEVEL[f.status])]
            if f.missing_rate is not None:
                values.append((m.drift_missing, f.missing_rate))
            if f.js is not None:
                values.append((m.drift_js, f.js))
            for gauge, value in values:
                gauge.labels(f.feature).set(value)
                self._series.add((gauge, f.feature))

    def _zero_gauges(self) -> None:
        """A new window: nothing to report yet. Zero the old series (multiprocess files keep removed ones)."""
        m = self.metrics
        m.drift_rows.set(0)
        m.drift_unseen.set(0)
        for gauge, feature in self._series:
            gauge.labels(feature).set(0)

    def state(self) -> dict[str, Any]:
        """For debugging and tests: window size and chunk count."""
        return {
            "version": self.reference.version if self.reference else None,
            "chunks": len(self._chunks),
            "open_rows": self._open.rows if self._open else 0,
            "buffered_rows": self._buffered,
            "phat_label": PHAT,
        }
