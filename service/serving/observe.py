"""What happens after a batch is scored: an event, the observers that receive it, and the business metrics.

Observers are injected into the scoring pipeline (so serving never imports monitoring): the business
metrics below, the drift monitor (service/monitoring/drift_monitor.py), the prediction log and shadow
scoring (service/monitoring/shadow.py). Each gets every scored batch, on the worker's event-loop thread
(a batch scored in a worker thread is handed over when that thread is done), so an observer needs no
lock. An observer runs on the request path: it does O(1) work per batch, or bulk work amortised over
many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from service.serving.batch import Batch
from service.serving.metrics import Metrics
from service.serving.scorer import CompiledModel, Scored


@dataclass(slots=True)
class Scoring:
    """One scored batch: the model version that scored it, its rows and the result; the request id the
    answer carries (X-Request-ID; "" when the call has none) and when it was scored (epoch seconds)."""

    model: CompiledModel
    batch: Batch
    scored: Scored
    request_id: str = ""
    at: float = 0.0


@dataclass(slots=True)
class CacheHit:
    """One call answered from the response cache: its rows (`batch`, when they were decoded to find the
    hit) or its body as sent (`body`, in `codec`'s format), the model version the stored answer is of,
    the request id and when it was answered. Nothing was scored; an observer that needs the rows' results
    (the prediction log) scores them again, off the request path: a stored answer is the bits of a fresh
    one (service/serving/cache_integrity.py)."""

    model: CompiledModel
    codec: Any
    batch: Batch | None
    body: list[bytes] | None  # the body's chunks as they arrived (joined off the request path)
    request_id: str
    at: float


class ScoringObserver(Protocol):
    def on_scored(self, event: Scoring) -> None: ...


@runtime_checkable
class HitObserver(Protocol):
    """Told of every answer from the cache, unless its `watches_hits` is False (then not asked at all)."""

    watches_hits: bool

    def on_cache_hit(self, event: CacheHit) -> None: ...


class ScoringMetrics:
    """Rows scored, rows per request, outcomes and the phat histogram, over the rows that were scored."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_scored(self, event: Scoring) -> None:
        m = self.metrics
        buffer = m.buffer
        scored = event.scored
        n = len(event.batch)
        bad = scored.bad_rows
        good = n - len(bad)
        buffer.inc(m.rows, good)
        buffer.observe(m.rows_per_request, n)
        if bad:
            ones = sum(o for i, o in enumerate(scored.outcome) if i not in bad)
            m.observe_phat(p for i, p in enumerate(scored.phat) if i not in bad)
        else:
            ones = sum(scored.outcome)
            m.observe_phat(scored.phat)
        buffer.inc(m.outcome_children[1], ones)
        buffer.inc(m.outcome_children[0], good - ones)
