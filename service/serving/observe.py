"""What happens after a batch is scored: an event, the observers that receive it, and the business metrics.

Observers are injected into the scoring pipeline (so serving never imports monitoring): the business
metrics below, the drift monitor (service/monitoring/drift_monitor.py), and later a prediction log or
shadow scoring. Each gets every scored batch, on the worker's event-loop thread (a batch scored in a
worker thread is handed over when that thread is done), so an observer needs no lock. An observer
runs on the request path: it does O(1) work per batch, or bulk work amortised over many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.serving.batch import Batch
from service.serving.metrics import Metrics
from service.serving.scorer import CompiledModel, Scored


@dataclass(slots=True)
class Scoring:
    """One scored batch: the model version that scored it, its rows and the result."""

    model: CompiledModel
    batch: Batch
    scored: Scored


class ScoringObserver(Protocol):
    def on_scored(self, event: Scoring) -> None: ...


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
