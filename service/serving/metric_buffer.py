"""Hot-path metric updates gathered in plain Python and written to the metric values in bulk.

Under gunicorn every Counter.inc / Gauge.inc / Histogram.observe is a locked write into this worker's mmap
file (prometheus_client's multiprocess mode), and a single-row /predict made 18 of them: a noticeable
share of its CPU. Here an update is a dict addition; `flush()` applies the sums, one write per
touched series. The app flushes every `interval` seconds (on the next request or from a background task
when idle), before it renders /metrics and at shutdown, so a scrape sees at most `interval` of lag.

A worker's buffer is used on its event-loop thread only; nothing here takes a lock. Work done in another
thread (a big batch scored off the loop) records into a buffer of its own, merged into the worker's on the
loop when the work is done. Histogram semantics are prometheus_client's own: a value lands in the first
bucket whose upper bound is >= it. prometheus_client has no public bulk update, so `observe` and `flush`
use a Histogram child's bucket bounds, bucket values and sum (tests/unit/serving/test_metrics.py holds
the result to per-value updates).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any


class MetricBuffer:
    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self._counts: dict[Any, float] = {}  # counter or gauge child -> amount to add
        self._histograms: dict[Any, tuple[list[float], list[int], list[float]]] = {}
        self._last_flush = time.monotonic()

    def inc(self, child: Any, amount: float = 1.0) -> None:
        """Counter.inc or Gauge.inc (a negative amount for Gauge.dec)."""
        counts = self._counts
        counts[child] = counts.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        """Histogram.observe."""
        entry = self._histograms.get(child)
        if entry is None:
            bounds = list(child._upper_bounds)
            entry = self._histograms[child] = (bounds, [0] * len(bounds), [0.0])
        bounds, counts, total = entry
        counts[bisect_left(bounds, value)] += 1
        total[0] += value

    def merge(self, other: MetricBuffer) -> None:
        """Take over another buffer's pending updates (and leave it empty)."""
        counts = self._counts
        for child, amount in other._counts.items():
            counts[child] = counts.get(child, 0.0) + amount
        for child, (bounds, bucket_counts, total) in other._histograms.items():
            entry = self._histograms.get(child)
            if entry is None:
                self._histograms[child] = (bounds, bucket_counts, total)
                continue
            mine = entry[1]
            for i, count in enumerate(bucket_counts):
                mine[i] += count
            entry[2][0] += total[0]
        other._counts, other._histograms = {}, {}

    def flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Write every pending sum into the metric values; a no-op when nothing is pending."""
        self._last_flush = time.monotonic()
        counts, self._counts = self._counts, {}
        histograms, self._histograms = self._histograms, {}
        for child, amount in counts.items():
            if amount:
                child.inc(amount)
        for child, (_, bucket_counts, total) in histograms.items():
            for bucket, count in zip(child._buckets, bucket_counts, strict=True):
                if count:
                    bucket.inc(count)
            child._sum.inc(total[0])
