"""The prediction log: every scored row recorded, off the request path.

On the request path (the event loop) the log only keeps a reference to the scored batch (O(1) per call,
`on_scored`); a background thread per worker turns the batches into rows and writes them to the store
every `prediction_log_flush_seconds`, or sooner when many rows wait. Rows answered from the response
cache are scored again by that thread (a stored answer is the bits of a fresh one) and logged the same.

What can be lost, and what never is:
- a worker or replica killed (SIGKILL, OOM, power) loses the rows it held unwritten: at most its last
  `prediction_log_flush_seconds` of traffic (plus one write in flight). A graceful stop writes them all.
- a database that fails or cannot be reached never fails or slows a call: the thread writes the rows to
  the spool directory instead (one fsynced file per write, renamed into place, so a torn file is never
  read), tries the database again every `prediction_log_retry_seconds`, and replays the spool in order
  once it answers. A replayed file whose batch is already in the log is skipped (`batch_id`), so a crash
  between the database's commit and the file's removal writes nothing twice.
- more than `prediction_log_max_pending_rows` waiting (the thread cannot keep up): further rows are
  dropped and counted (`propensity_prediction_log_rows_total{result="dropped"}`), never queued unbounded.
Sampling (`prediction_log_sample_rate`) takes whole requests, so a sampled request's labels all match.

Shadow scoring (service/monitoring/shadow.py) hands the rows it compared to `take_shadow` from its own
thread; they are written to `shadow_predictions` the same way (one transaction a write, their own spool
files when the database is down, replayed once; counted in propensity_shadow_log_rows_total).
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from service.monitoring.prediction_store import PredictionStore, Row
from service.serving.batch import ABSENT, JsonBatch
from service.serving.metrics import Metrics
from service.serving.observe import CacheHit, Scoring
from service.serving.passthrough import collect_ids
from service.serving.scorer import CompiledModel, Scored
from service.settings import Settings

log = logging.getLogger("propensity.prediction_log")
SPOOL_SUFFIX = ".rows.json"
SHADOW_SPOOL_SUFFIX = ".shadow.json"
PRUNE_EVERY_SECONDS = 3600.0
# Rows per write: one transaction, one COPY, one spool file; and what the writer holds made at once (a
# big call's rows are made and written this many at a time).
WRITE_ROWS = 5_000
_JSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# Calls of at most this many rows are turned into log rows on the event loop (see on_scored).
INLINE_ROWS = 16
# A call of this many rows wakes the writer: what it holds of a big call is freed within one write.
WAKE_ROWS = 1_000
# The writer thread gives the GIL away after this many rows of its own Python work: the event loop then
# waits for it for microseconds, not for the interpreter's switch interval at every turn.
YIELD_ROWS = 256


def _inputs(model: CompiledModel, batch: Any, rows: range) -> list[bytes]:
    """The raw values of the model's input columns of `rows`, as JSON (absent ones left out)."""
    columns = model.used_columns
    if type(batch) is JsonBatch:  # the rows are the client's dicts: read them as they are
        dicts = batch.rows
        return [
            orjson.dumps({c: row[c] for c in columns if c in row}, option=_JSON, default=str)
            for row in (dicts[i] for i in rows)
        ]
    values = [batch.column(c) for c in columns]
    return [
        orjson.dumps(
            {c: v[i] for c, v in zip(columns, values, strict=True) if v[i] is not ABSENT},
            option=_JSON,
            default=str,
        )
        for i in rows
    ]


def event_rows(
    model: CompiledModel,
    scored: Scored,
    batch: Any,
    request_id: str,
    at: float,
    rows: range | None = None,
) -> list[Row]:
    """The log rows of one scored batch (its good rows; `rows`: of these only), without the batch id
    (prefixed on write)."""
    bad = scored.bad_rows
    phat, outcome, version = scored.phat, scored.outcome, model.version
    rows = range(len(phat)) if rows is None else rows
    inputs = _inputs(model, batch, rows)
    ids = scored.ids
    id_fields = [f for f in model.passthrough if f in ids]
    out: list[Row] = []
    for i, raw in zip(rows, inputs, strict=True):
        if i in bad:
            continue
        sent = {f: ids[f][i] for f in id_fields if ids[f][i] is not ABSENT} if id_fields else None
        first = next((v for v in sent.values() if v is not None), None) if sent else None
        out.append(
            (
                request_id,
                i,
                None if first is None else str(first),
                orjson.dumps(sent, option=_JSON).decode() if sent else None,
                version,
                at,
                float(phat[i]),
                int(outcome[i]),
                raw.decode(),
            )
        )
    return out


# What waits for the writer: rows already made, or a scored batch (or cache hit) to make them from.
Pending = Row | Scoring | CacheHit


class Spool:
    """Write batches the database could not take to files; hand them back, oldest first, to replay."""

    def __init__(self, directory: Path, suffix: str = SPOOL_SUFFIX) -> None:
        self.directory = Path(directory)
        self.suffix = suffix
        self.host = socket.gethostname().replace("-", "_")[:64]
        self._warned = False

    def put(self, batch_id: str, rows: list[Row]) -> bool:
        # the row count in the name: the spool gauge sums names, never reads the files
        name = f"{time.time():017.6f}-{self.host}-{os.getpid()}-{batch_id}-{len(rows)}{self.suffix}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{name}.tmp"
            with tmp.open("wb") as fh:
                fh.write(orjson.dumps(rows, option=_JSON))
                fh.flush()
                os.fsync(fh.fileno())
            tmp.rename(self.directory / name)
        except OSError as exc:
            if not self._warned:
                log.warning(
                    "prediction spool %s not written (rows dropped and counted): %s", self.directory, exc
                )
                self._warned = True
            return False
        return True

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{self.suffix}"))

    def rows(self) -> int:
        """Rows waiting in the spool (from the files' names)."""
        total = 0
        for path in self.files():
            count = path.name[: -len(self.suffix)].rpartition("-")[2]
            total += int(count) if count.isdigit() else 0
        return total

    def claimed(self) -> Iterator[tuple[Path, list[Row]]]:
        """Each spool file this process can lock (another worker may be replaying the rest), with its rows;
        the caller removes a file once its rows are written."""
        for path in self.files():
            try:
                fh = path.open("rb")
            except FileNotFoundError:
                continue  # replayed by another worker meanwhile
            with fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                if not path.exists():
                    continue
                try:
                    rows = [tuple(r) for r in orjson.loads(fh.read())]
                except orjson.JSONDecodeError:
                    log.error("prediction spool file %s is not readable; moved aside", path.name)
                    path.rename(path.with_suffix(".unreadable"))
                    continue
                yield path, rows


class PredictionLog:
    """A scoring observer (and cache-hit observer) that records every scored row in the store."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        open_store: Callable[[str], PredictionStore] = PredictionStore.open,
        clock: Callable[[], float] = time.time,
        sample: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._open_store = open_store
        self._clock = clock
        self._sample = sample
        self.rate = settings.prediction_log_sample_rate
        self.watches_hits = settings.prediction_log_cache_hits
        self.max_pending = settings.prediction_log_max_pending_rows
        self.flush_seconds = settings.prediction_log_flush_seconds
        self.retry_seconds = settings.prediction_log_retry_seconds
        self.spool = Spool(settings.prediction_log_spool)
        self.shadow_spool = Spool(settings.prediction_log_spool, SHADOW_SPOOL_SUFFIX)
        self._pending: deque[Pending] = deque()
        self._shadow: deque[list[Row]] = deque()  # shadow rows, a list per take_shadow
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.store: PredictionStore | None = None
        self._down_until = 0.0  # while the database is failing: spool without trying it before this
        self._pruned_at = 0.0
        counter = metrics.prediction_log_rows
        self._written, self._spooled, self._replayed, self._dropped, self._sampled_out = (
            counter.labels(r) for r in ("written", "spooled", "replayed", "dropped", "sampled_out")
        )
        results = ("written", "spooled", "replayed", "dropped")
        self._results = {  # per table: the counters of its rows' results, in `results` order
            "predictions": (self._written, self._spooled, self._replayed, self._dropped),
            "shadow_predictions": tuple(metrics.shadow_log_rows.labels(r) for r in results),
        }

    # --- the request path (event loop) ------------------------------------------------------------------
    def on_scored(self, event: Scoring) -> None:
        rows = len(event.scored.phat) - len(event.scored.bad_rows)
        if len(event.scored.phat) <= INLINE_ROWS:
            # A few rows are turned into plain tuples here (microseconds): holding the batch and its
            # result objects until the writer runs would keep thousands of them alive per second, and the
            # event loop's garbage collector would walk them all again and again.
            self._take_rows(event_rows(event.model, event.scored, event.batch, event.request_id, event.at))
            return
        # A big call: kept by reference until the writer makes its rows, but only what the rows need (the
        # result's 25 model-input columns are most of its memory), and the writer is woken at once.
        scored = event.scored
        slim = Scored({}, scored.phat, scored.outcome, bad_rows=scored.bad_rows, ids=scored.ids)
        self._take(Scoring(event.model, event.batch, slim, event.request_id, event.at), rows)
        if rows >= WAKE_ROWS:
            self._wake.set()

    def on_cache_hit(self, event: CacheHit) -> None:
        n = len(event.batch) if event.batch is not None else 1  # rows unknown until decoded: count one
        self._take(event, n)

    def _admit(self, rows: int) -> bool:
        """Whether a call's `rows` go into the log: sampled in, and under the pending cap (counted if not)."""
        if self.rate < 1.0 and self._sample() >= self.rate:
            self.metrics.buffer.inc(self._sampled_out, rows)
            return False
        with self._lock:
            if self._pending_rows + rows > self.max_pending:
                self.metrics.buffer.inc(self._dropped, rows)
                return False
            self._pending_rows += rows
        return True

    def _take_rows(self, rows: list[Row]) -> None:
        if self._admit(len(rows)):
            self._pending.extend(
                rows
            )  # tuples of plain values: the garbage collector soon stops tracking them

    def _take(self, event: Scoring | CacheHit, rows: int) -> None:
        if self._admit(rows):
            self._pending.append(event)
            if self._pending_rows >= WRITE_ROWS:
                self._wake.set()

    def take_shadow(self, rows: list[Row]) -> None:
        """Shadow rows (SHADOW_COLUMNS without the batch id), from the shadow thread: written with the next
        flush, or dropped and counted over the pending cap."""
        if not rows:
            return
        with self._lock:
            if self._pending_rows + len(rows) > self.max_pending:
                self._results["shadow_predictions"][3].inc(len(rows))  # this thread's: not the loop's buffer
                return
            self._pending_rows += len(rows)
        self._shadow.append(rows)

    # --- the writer thread ------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is pending (to the database or the spool) and stop the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.run_once()
        self.run_once()

    def run_once(self) -> None:
        """One turn of the writer: write what is pending, replay the spool when the database is back,
        prune old rows once an hour. Never raises (a bug here must not stop the log)."""
        try:
            self.flush()
            now = self._clock()
            if now >= self._down_until:
                self.replay()
                if now - self._pruned_at >= PRUNE_EVERY_SECONDS and now >= self._down_until:
                    self._prune(now)
            self.metrics.prediction_log_spool_rows.set(self.spool.rows() + self.shadow_spool.rows())
        except Exception:
            log.exception("prediction log writer")

    def flush(self) -> int:
        """Write every pending batch; returns the rows taken."""
        rows: list[Row] = []
        taken = counted = 0
        pending = self._pending
        while pending:
            event = pending.popleft()
            if isinstance(event, tuple):  # a row made on the loop
                rows.append(event)
                counted += 1
                if counted % YIELD_ROWS == 0:
                    time.sleep(0)  # hand the GIL to the event loop now, not at the end of a 1 ms slice
            else:
                for part in self._parts(event):
                    rows.extend(part)
                    if len(rows) >= WRITE_ROWS:
                        taken += self._write(rows)
                        rows = []
                counted += self._counted(event)
            if len(rows) >= WRITE_ROWS:
                self._taken(counted)
                taken += self._write(rows)
                rows, counted = [], 0
        self._taken(counted)
        if rows:
            taken += self._write(rows)
        return taken + self._flush_shadow()

    def _flush_shadow(self) -> int:
        rows: list[Row] = []
        taken = 0
        while self._shadow:
            rows.extend(self._shadow.popleft())
            if len(rows) >= WRITE_ROWS:
                taken += self._write(rows, "shadow_predictions")
                self._taken(len(rows))
                rows = []
        if rows:
            taken += self._write(rows, "shadow_predictions")
            self._taken(len(rows))
        return taken

    def _taken(self, rows: int) -> None:
        with self._lock:
            self._pending_rows -= rows

    def _counted(self, event: Scoring | CacheHit) -> int:
        if isinstance(event, Scoring):
            return len(event.scored.phat) - len(event.scored.bad_rows)
        return len(event.batch) if event.batch is not None else 1

    def _parts(self, event: Scoring | CacheHit) -> Iterator[list[Row]]:
        """The rows of a batch, WRITE_ROWS at a time (a 10,000-row call is never all made at once)."""
        if not isinstance(event, Scoring):
            yield self._hit_rows(event)
            return
        n = len(event.scored.phat)
        for start in range(0, n, WRITE_ROWS):
            part = range(start, min(n, start + WRITE_ROWS))
            yield event_rows(event.model, event.scored, event.batch, event.request_id, event.at, part)

    def _hit_rows(self, event: CacheHit) -> list[Row]:
        """A cache hit's rows: its batch (or body) scored again, as the answer was (the same bits)."""
        model = event.model
        body = b"".join(event.body or ())
        batch = event.batch if event.batch is not None else event.codec.decode(model, body)
        scored = model.score_batch(batch)
        if model.passthrough:
            scored.ids, _ = collect_ids(batch, model.passthrough, self.settings.passthrough_max_chars)
        return event_rows(model, scored, batch, event.request_id, event.at)

    def _write(self, rows: list[Row], table: str = "predictions") -> int:
        batch_id = uuid.uuid4().hex
        stamped = [(batch_id, *r) for r in rows]
        written, spooled, _, dropped = self._results[table]
        time.sleep(0)
        # This thread counts on the metric objects themselves: the worker's buffer is the loop's alone.
        if self._clock() >= self._down_until:
            try:
                self._store().write(stamped, table=table)
                written.inc(len(rows))
                return len(rows)
            except Exception as exc:
                self._failed(exc)
        spool = self.spool if table == "predictions" else self.shadow_spool
        if spool.put(batch_id, stamped):
            spooled.inc(len(rows))
        else:
            dropped.inc(len(rows))
        return len(rows)

    def replay(self) -> int:
        """Write the spooled batches this worker can claim, oldest first (predictions, then shadow rows);
        stops at the first failure."""
        replayed = 0
        for table, spool in (("predictions", self.spool), ("shadow_predictions", self.shadow_spool)):
            counter = self._results[table][2]
            for path, rows in spool.claimed():
                try:
                    written = self._store().write(rows, replay=True, table=table)
                except Exception as exc:
                    self._failed(exc)
                    return replayed
                path.unlink(missing_ok=True)
                replayed += written
                counter.inc(written)
        return replayed

    def _failed(self, exc: Exception) -> None:
        if self._down_until == 0.0 or self._clock() >= self._down_until:
            log.warning(
                "prediction log database unavailable (rows go to the spool %s; next try in %.0f s): %s",
                self.spool.directory,
                self.retry_seconds,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
        self._down_until = self._clock() + self.retry_seconds

    def _store(self) -> PredictionStore:
        if self.store is None:
            store = self._open_store(self.settings.prediction_log_database)
            store.migrate()
            self.store = store
        return self.store

    def _prune(self, now: float) -> None:
        self._pruned_at = now
        before = now - self.settings.prediction_log_retention_days * 86_400.0
        removed = self._store().prune(before)
        if removed:
            log.info("prediction log: %d rows older than the retention deleted", removed)
