"""Shadow scoring: the `staging` model also scores a share of the live rows, off the response path, and
its agreement with the served model is counted.

On the event loop `on_scored` does O(1) work: a sampled call's batch, with the served model's result,
is queued for the worker's shadow thread (at most `shadow_max_pending_rows` rows wait; a call beyond
that is skipped and counted). The answer the client gets is the served model's, made before any of this,
and its latency does not include the shadow's work. The thread scores the batch with the challenger and
compares the two, row by row, over the rows the served model scored:

- the business outcome: `same`, `flip_up` (served 0, shadow 1), `flip_down` (served 1, shadow 0), or
  `refused` (the challenger could not score the row, e.g. a category level it does not know);
- phat: shadow minus served, as a histogram;
- every model input's contribution to the logit (coefficient x input; an input one model does not use
  contributes 0 there): the sum over rows of |shadow - served|, so that the mean shift per input is that
  sum over the rows both scored (the same/flip counts).

The metrics are labelled with both versions (a series never mixes two challengers). Where its time goes:
the thread takes the queued calls together, up to MERGE_ROWS rows of JSON objects at a time (most calls
are one row: scored one by one they would cost four times as much a row; together they take the array
path, the same bits), and sums what it finds in memory, writing the metrics every FLUSH_SECONDS (a metric
update costs more than a row's comparison). It counts its own CPU time (propensity_shadow_seconds_total,
the cost) and hands the GIL back between the steps of a merged batch (scoring, comparing, logging). The
loop only appends to a deque: no call wakes the thread, which wakes every GATHER_SECONDS and takes what
is queued. Cache hits are not shadow-scored: nothing was scored for them. A big body's column decoder
reads only the served model's columns: such a call is skipped (`columns_unread`) when the challenger
reads a column the served model does not.

With the prediction log on, every compared row is also handed to it (`PredictionLog.take_shadow`, table
shadow_predictions): keyed by the served row's request id and index, so the labels that come back for
the served prediction judge the challenger on the same live rows (service/monitoring/shadow_performance.py).
"""

from __future__ import annotations

import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.serving.batch import JsonBatch
from service.serving.canary import usable
from service.serving.holder import ChallengerHolder
from service.serving.metrics import SHADOW_DIFF_BUCKETS, Metrics, observe_many
from service.serving.observe import Scoring
from service.serving.reasons import contributions
from service.serving.scorer import CompiledModel, Scored
from service.settings import Settings

log = logging.getLogger("propensity.shadow")

RESULTS = ("same", "flip_up", "flip_down", "refused")
SKIPS = ("sampled_out", "dropped", "same_version", "no_model", "columns_unread")
MERGE_ROWS = 16
GATHER_SECONDS = 0.05  # a shadow result may wait this long for more calls to be scored with
FLUSH_SECONDS = 0.25
# While the thread runs Python between its GIL hand-overs (give_way), a request that arrives waits for the
# interpreter's switch interval (5 ms by default) before the loop gets the GIL back; 0.5 ms bounds that
# wait. Set for the process while shadow scoring runs (docs/benchmark.md has the p99 before and after).
SWITCH_SECONDS = 0.0005


@dataclass
class Agreement:
    """One batch compared: counts per result, the phat differences of the rows both scored, and per model
    input the sum of |contribution shift| over those rows."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    differences: np.ndarray = field(default_factory=lambda: np.zeros(0))
    shifts: dict[str, float] = field(default_factory=dict)

    @property
    def compared(self) -> int:
        return self.counts["same"] + self.counts["flip_up"] + self.counts["flip_down"]


def compare(
    served_model: CompiledModel, served: Scored, shadow_model: CompiledModel, shadow: Scored
) -> Agreement:
    """The agreement of two models' results on the same batch (the rows the served model scored)."""
    n = len(served.phat)
    scored = np.ones(n, dtype=bool)
    scored[list(served.bad_rows)] = False
    both = scored.copy()
    both[list(shadow.bad_rows)] = False
    out = Agreement()
    out.counts["refused"] = int(scored.sum() - both.sum())
    if not both.any():
        return out
    a = np.asarray(served.outcome)[both]
    b = np.asarray(shadow.outcome)[both]
    out.counts["same"] = int((a == b).sum())
    out.counts["flip_up"] = int(((a == 0) & (b == 1)).sum())
    out.counts["flip_down"] = int(((a == 1) & (b == 0)).sum())
    out.differences = np.asarray(shadow.phat)[both] - np.asarray(served.phat)[both]
    served_terms = _terms(served_model, served, both)
    shadow_terms = _terms(shadow_model, shadow, both)
    zero = np.zeros(int(both.sum()))
    for feature in dict.fromkeys([*served_model.features, *shadow_model.features]):
        shift = shadow_terms.get(feature, zero) - served_terms.get(feature, zero)
        out.shifts[feature] = float(np.abs(shift).sum())
    return out


def _terms(model: CompiledModel, scored: Scored, rows: np.ndarray) -> dict[str, np.ndarray]:
    terms = contributions(model, scored)[rows]
    return {feature: terms[:, j] for j, feature in enumerate(model.features)}


def merged(scored: list[Scored]) -> Scored:
    """The results of consecutive batches as one batch's (what `compare` reads: phat, outcome, the
    model inputs' columns, the rows not scored)."""
    out = Scored(columns={name: [] for name in scored[0].columns}, phat=[], outcome=[])
    for part in scored:
        out.bad_rows.update(len(out.phat) + i for i in part.bad_rows)
        out.phat += part.phat
        out.outcome += part.outcome
        for name, values in part.columns.items():
            out.columns[name] += values
    return out


@dataclass
class Tally:
    """What the thread found for one (served, shadow) pair since its last write of the metrics."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    differences: list[np.ndarray] = field(default_factory=list)
    shifts: dict[str, float] = field(default_factory=dict)

    def add(self, agreement: Agreement) -> None:
        for result, count in agreement.counts.items():
            self.counts[result] += count
        if agreement.differences.size:
            self.differences.append(agreement.differences)
        for feature, total in agreement.shifts.items():
            self.shifts[feature] = self.shifts.get(feature, 0.0) + total


class ShadowLog(Protocol):
    """Where the compared rows go (the prediction log): rows of SHADOW_COLUMNS without the batch id."""

    def take_shadow(self, rows: list[tuple[object, ...]]) -> None: ...


def log_rows(items: list[Scoring], challenger: CompiledModel, shadow: Scored) -> list[tuple[object, ...]]:
    """The shadow_predictions rows of consecutive calls scored as one batch by the challenger (`shadow`):
    each row the served model scored, with both results (the shadow's None where it refused the row)."""
    out: list[tuple[object, ...]] = []
    refused, phat, outcome = shadow.bad_rows, shadow.phat, shadow.outcome
    offset = 0
    for event in items:
        served = event.scored
        version = event.model.version
        for i, (p, o) in enumerate(zip(served.phat, served.outcome, strict=True)):
            if i in served.bad_rows:
                continue
            j = offset + i
            mine = j not in refused
            out.append(
                (
                    event.request_id,
                    i,
                    event.at,
                    version,
                    float(p),
                    int(o),
                    challenger.version,
                    float(phat[j]) if mine else None,
                    int(outcome[j]) if mine else None,
                )
            )
        offset += len(served.phat)
    return out


@dataclass(frozen=True, slots=True)
class _Pending:
    event: Scoring
    challenger: CompiledModel


class ShadowScorer:
    """A scoring observer (service/serving/observe.py) that hands sampled batches to the shadow thread."""

    watches_hits = False

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        holder: ChallengerHolder,
        *,
        log: ShadowLog | None = None,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self.share = settings.shadow_share
        self.max_pending = settings.shadow_max_pending_rows
        self.metrics = metrics
        self.holder = holder
        self.log = log
        self._sample = sample
        # appended on the loop, taken by the thread: no wake-up per call (a deque's append wakes no one)
        self._queue: deque[_Pending] = deque()
        self._stopping = threading.Event()
        self._pending_rows = 0  # rows queued, not yet compared (the loop adds, the thread subtracts)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._switch_interval: float | None = None  # the process's, while the thread runs
        self._skipped = {reason: metrics.shadow_skipped_rows.labels(reason) for reason in SKIPS}
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._seconds = 0.0
        self._flushed_at = time.monotonic()

    # --- the event loop -----------------------------------------------------------------------------
    def on_scored(self, event: Scoring) -> None:
        challenger = self.holder.current  # read once: the follower thread may swap it meanwhile
        reason = self._skip(event, challenger)
        if reason is None and not self._reserve(len(event.batch)):
            reason = "dropped"
        if reason is not None or challenger is None:
            self.metrics.buffer.inc(self._skipped[reason or "no_model"], len(event.batch))
            return
        self._queue.append(_Pending(event, challenger))

    def _skip(self, event: Scoring, challenger: CompiledModel | None) -> str | None:
        if challenger is None:
            return "no_model"
        if challenger.version == event.model.version:
            return "same_version"
        if self.share < 1.0 and self._sample() >= self.share:
            return "sampled_out"
        if not usable(event.batch, event.model, challenger):
            return "columns_unread"
        return None

    def _reserve(self, rows: int) -> bool:
        with self._lock:
            if self._pending_rows + rows > self.max_pending:
                return False
            self._pending_rows += rows
            return True

    # --- the shadow thread --------------------------------------------------------------------------
    def start(self) -> None:
        self.holder.start()
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_SECONDS)
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Compare what is queued, write the metrics, then stop (within `timeout`)."""
        self.holder.stop()
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout)
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def _run(self) -> None:
        stopping = False
        while not stopping:
            stopping = self._stopping.wait(GATHER_SECONDS)
            for items in _chunks(self._drain()):
                try:
                    self.process(items)
                except Exception:  # a bug here must not stop shadow scoring, nor touch serving
                    log.exception("shadow scoring of %d call(s) failed; continuing", len(items))
                finally:
                    with self._lock:
                        self._pending_rows -= sum(len(i.event.batch) for i in items)
                self.give_way()
            if stopping or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
                self.flush()

    def _drain(self) -> list[_Pending]:
        """What the loop queued since the last turn, oldest first."""
        out = []
        queued = self._queue
        while queued:
            out.append(queued.popleft())
        return out

    def process(self, items: list[_Pending]) -> None:
        """Score the calls' batches with the challenger, compare, and add to the tallies; the loop's calls
        go first between the steps (`give_way`)."""
        started = time.thread_time()  # this thread's CPU: the cost, not the time it gave way
        for group in _groups(items):
            event, challenger = group[0].event, group[0].challenger
            if len(group) == 1:
                batch, served = event.batch, event.scored
            else:
                batch = JsonBatch([row for i in group for row in i.event.batch.rows])
                served = merged([i.event.scored for i in group])
            shadow = challenger.score_batch(batch)
            self.give_way()
            agreement = compare(event.model, served, challenger, shadow)
            pair = (event.model.version, challenger.version)
            self._tallies.setdefault(pair, Tally()).add(agreement)
            if self.log is not None:
                self.give_way()
                self.log.take_shadow(log_rows([i.event for i in group], challenger, shadow))
            self.give_way()
        self._seconds += time.thread_time() - started

    def give_way(self) -> None:
        """Hand the GIL to the event loop between two steps of the thread's work."""
        time.sleep(0)

    def flush(self) -> None:
        """Write the tallies to the metrics (the thread's, and at stop)."""
        self._flushed_at = time.monotonic()
        tallies, self._tallies = self._tallies, {}
        m = self.metrics
        for (served, shadow), tally in tallies.items():
            for result, count in tally.counts.items():  # 0s too: a flip share reads 0, not "no data"
                m.shadow_rows.labels(served, shadow, result).inc(count)
            if tally.differences:
                histogram = m.shadow_phat_difference.labels(served, shadow)
                observe_many(histogram, SHADOW_DIFF_BUCKETS, np.concatenate(tally.differences))
            for feature, total in tally.shifts.items():
                m.shadow_contribution_shift.labels(served, shadow, feature).inc(total)
        if self._seconds:
            seconds, self._seconds = self._seconds, 0.0
            m.shadow_seconds.inc(seconds)


def _mergeable(a: _Pending, b: _Pending) -> bool:
    return (
        isinstance(a.event.batch, JsonBatch)
        and isinstance(b.event.batch, JsonBatch)
        and b.event.model is a.event.model
        and b.challenger is a.challenger
    )


def _chunks(items: list[_Pending]) -> list[list[_Pending]]:
    """The queued calls in the thread's units of work: consecutive JSON calls of one pair of models taken
    together until they hold MERGE_ROWS rows, any other call alone."""
    out: list[list[_Pending]] = []
    rows = 0
    for item in items:
        if out and rows < MERGE_ROWS and _mergeable(out[-1][0], item):
            out[-1].append(item)
            rows += len(item.event.batch)
        else:
            out.append([item])
            rows = len(item.event.batch) if isinstance(item.event.batch, JsonBatch) else MERGE_ROWS
    return out


def _groups(items: list[_Pending]) -> list[list[_Pending]]:
    """The items in runs that score as one batch (JSON objects, the same pair of models)."""
    out: list[list[_Pending]] = []
    for item in items:
        if out and _mergeable(out[-1][0], item):
            out[-1].append(item)
        else:
            out.append([item])
    return out
