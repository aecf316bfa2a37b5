"""The scoring pipeline: one call's body in, its answer out, whatever transport carried them.

    admit -> (the adapter reads the body) -> infer: cache -> decode -> score -> encode -> observe

An adapter (the /predict route; later the Open Inference Protocol, MLflow's /invocations, a file scorer)
turns its transport into `admit(...)`, a `Body` and per-call options, and turns the `Answer` -- or the
PropensityError raised instead -- back into its transport. Everything in between lives here, once.
The wire format is a `Codec` (service/serving/json_rows.py for /predict); what happens after scoring
is up to the injected observers (service/serving/observe.py).

`admit` reads the served model once: every step of the call uses that version, so one version answers
the whole call even if the holder swaps models meanwhile. It also takes the call's body bytes from the
worker's in-flight budget (service/serving/admission.py), and the call takes its rows once they are
decoded; the adapter gives both back with `call.release()`, however the call ends. A call that does not
fit is refused with a 503 (load shedding), before its body is read.

Threads. A call runs inline on the event loop unless it is big: a body of `offload_min_bytes` or more is
decoded, scored and encoded in a worker thread, and so is a batch of `offload_min_rows` rows or more
from a smaller body; at most `offload_threads` such calls run at a time per process. A small request
on the same worker is then answered while a 10,000-row batch is being scored, and the single-row path
pays no thread hop. Work in a thread records its metric updates and scored batches into a buffer of
its own; the loop takes them over when the thread is done (the worker's buffer and the observers are
event-loop only, so they need no lock). The caches are thread-safe. A call in a thread for its body's
size steps aside at each boundary between two slices of its work while small calls are in flight on the
loop (service/serving/turns.py), so that they do not wait for the GIL at every turn of the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import anyio
import anyio.from_thread
import anyio.to_thread

from service.errors import FieldError, InputError, PropensityError
from service.serving.admission import Budget
from service.serving.batch import Batch
from service.serving.cache import (
    CacheKeys,
    ResponseCache,
    body_hasher,
    chunks_hasher,
    hashed_raw_key,
    rekeyed,
)
from service.serving.cache_integrity import log_refusal_once
from service.serving.canary import CanaryRouter, usable
from service.serving.compression import gunzip_body, gzip_body, is_gzip
from service.serving.decoding import check_declared_length
from service.serving.metric_buffer import MetricBuffer
from service.serving.metrics import Metrics
from service.serving.observe import CacheHit, HitObserver, Scoring, ScoringObserver
from service.serving.passthrough import collect_ids
from service.serving.reasons import top_reasons
from service.serving.row_keys import KeyReport, columns_orient_hint, header_text, listing
from service.serving.scorer import CompiledModel, Scored
from service.serving.turns import SmallCallsFirst, no_pause
from service.settings import BatchErrorPolicy, Settings, UnseenCategoryPolicy

# Below these a call costs less on the loop than a thread hop would; above, it could hold the loop for
# long enough to matter to the small requests queued behind it.
OFFLOAD_MIN_BYTES = 256 * 1024
OFFLOAD_MIN_ROWS = 256
# Scoring is CPU work under the GIL: more threads per process only take turns.
OFFLOAD_THREADS = 1


class ModelSource(Protocol):
    """Where the served model is read (ModelHolder): None until one has loaded, and then `unavailable()`
    says why (still loading, or a version that was refused)."""

    @property
    def current(self) -> CompiledModel | None: ...

    def unavailable(self) -> PropensityError: ...


class Codec(Protocol):
    """A wire format: bytes -> Batch, scored batch -> bytes. `key_suffix` keeps its cache entries apart
    from another format's (the same rows are answered in other bytes)."""

    media_type: str
    key_suffix: str

    def check_media_type(self, content_type: str | None) -> None: ...

    def decode(self, model: CompiledModel, data: bytes, pause: Callable[[], None] = ...) -> Batch: ...

    def encode(
        self, model: CompiledModel, batch: Batch, scored: Scored, pause: Callable[[], None] = ...
    ) -> bytes: ...


@dataclass(slots=True)
class Call:
    """An admitted call: its model, the hasher to feed the body to as it arrives (None: not needed
    while it streams), when the call started, and what it holds of the worker's in-flight budget."""

    model: CompiledModel
    hasher: Any
    started: float
    budget: Budget
    codec: Codec
    held_bytes: int = 0
    held_rows: int = 0
    reasons: int = 0  # reason codes per row (0: none)
    request_id: str = ""  # the X-Request-ID of the answer (for the prediction log)
    # routed to the canary: the production model and the batch as decoded for it, to answer with if the
    # canary fails the call (service/serving/canary.py)
    fallback: tuple[CompiledModel, Batch] | None = None

    @property
    def key_suffix(self) -> str:
        """What keeps this call's cache entries apart: its wire format and what it asked for."""
        suffix = self.codec.key_suffix
        return f"{suffix}:r{self.reasons}" if self.reasons else suffix

    def hold_bytes(self, size: int) -> None:
        """A body that turns out longer than declared (a chunked one) takes the rest as it arrives."""
        self.budget.take_bytes(size - self.held_bytes)
        self.held_bytes = size

    def hold_bytes_at_least(self, size: int) -> None:
        """A decoded (decompressed) body: the call holds its size when that is more than it holds."""
        if size > self.held_bytes:
            self.hold_bytes(size)

    def hold_rows(self, rows: int) -> None:
        self.budget.take_rows(rows)
        self.held_rows = rows

    def release(self) -> None:
        """Give back what the call holds; once (a second release gives back nothing)."""
        self.budget.give_back(self.held_rows, self.held_bytes)
        self.held_rows = self.held_bytes = 0


@dataclass(slots=True)
class Body:
    """A body as it arrived: its chunks (a cache hit never joins them), its size, and the hasher that was
    fed every chunk while it streamed, if any."""

    chunks: list[bytes]
    size: int
    hasher: Any = None

    def joined(self) -> bytes:
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass(slots=True)
class Answer:
    """The answer's bytes, its headers (HTTP names: X-Model-Version, X-Cache, X-Unseen-Categories,
    X-Rejected-Rows, Vary, Content-Encoding) and media type; the status is 200 (errors are raised)."""

    body: bytes
    headers: dict[str, str]
    media_type: str
    status: int = 200


class _Recorder:
    """Where a call's metric updates and scored batches go: the worker's buffer and its observers; and
    how the call pauses between two slices of its work (never, on the event loop)."""

    def __init__(
        self,
        buffer: MetricBuffer,
        observers: Sequence[ScoringObserver],
        pause: Callable[[], None] = no_pause,
        hit_observers: Sequence[HitObserver] = (),
    ) -> None:
        self.buffer = buffer
        self.observers = tuple(observers)
        self.hit_observers = tuple(hit_observers)
        self.pause = pause

    def scored(self, event: Scoring) -> None:
        for observer in self.observers:
            observer.on_scored(event)

    def hit(self, event: CacheHit) -> None:
        for observer in self.hit_observers:
            observer.on_cache_hit(event)

    def take_over(self, held: _Held) -> None:
        self.buffer.merge(held.buffer)
        for event in held.events:
            self.scored(event)
        for hit in held.hits:
            self.hit(hit)


class _Held(_Recorder):
    """For a call in a worker thread: its own buffer, its scored batches kept for the loop, and pauses
    that let the loop's small calls go first."""

    def __init__(self, pause: Callable[[], None], watch_hits: bool = False) -> None:
        super().__init__(MetricBuffer(), (), pause)
        self.events: list[Scoring] = []
        self.hits: list[CacheHit] = []
        if watch_hits:  # hits are then kept for the loop's hit observers (a non-empty tuple says so)
            self.hit_observers = (self,)

    def scored(self, event: Scoring) -> None:
        self.events.append(event)

    def hit(self, event: CacheHit) -> None:
        self.hits.append(event)

    on_cache_hit = hit
    watches_hits = True


class _NoCache:
    name = "none"

    def get(self, keys: list[str]) -> bytes | None:
        return None

    def set(self, keys: list[str], value: bytes) -> None:
        return None


class ScoringPipeline:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        models: ModelSource,
        codec: Codec,
        *,
        cache: ResponseCache | None = None,
        observers: Sequence[ScoringObserver] = (),
        offload_min_bytes: int = OFFLOAD_MIN_BYTES,
        offload_min_rows: int = OFFLOAD_MIN_ROWS,
        offload_threads: int = OFFLOAD_THREADS,
        turns: SmallCallsFirst | None = None,
        router: CanaryRouter | None = None,
    ) -> None:
        self.settings = settings
        self._router = router
        self.metrics = metrics
        self.models = models
        self.codec = codec
        self.max_body_bytes = settings.max_body_bytes
        self.budget = Budget(settings.max_inflight_rows, settings.max_inflight_bytes, metrics.requests_shed)
        self.offload_min_bytes = offload_min_bytes
        self.offload_min_rows = offload_min_rows
        self._limiter = anyio.CapacityLimiter(offload_threads)
        self._pause = turns.pause if turns is not None else no_pause
        self.cache = cache
        self._caching = cache is not None
        self._cache: ResponseCache = cache if cache is not None else _NoCache()  # never None: no checks below
        self._cache_min = settings.cache_min_body_bytes
        self._reject_unseen = settings.unseen_category_policy is UnseenCategoryPolicy.REJECT
        self._reject_bad_batches = settings.batch_error_policy is BatchErrorPolicy.REJECT
        hit_observers: list[HitObserver] = [
            o for o in observers if isinstance(o, HitObserver) and o.watches_hits
        ]
        self._direct = _Recorder(metrics.buffer, observers, hit_observers=hit_observers)
        self._watch_hits = bool(hit_observers)
        stages = metrics.stage_children
        self._decode_stage, self._score_stage, self._encode_stage = (
            stages[s] for s in ("decode", "score", "encode")
        )

    # --- the call ---------------------------------------------------------------------------------------
    def admit(
        self,
        content_type: str | None,
        declared_length: int | None,
        *,
        codec: Codec | None = None,
        request_id: str = "",
    ) -> Call:
        """Before the body is read: the model that will answer (503 while none is served), the media type
        (415; `codec`: the call's wire format, else the pipeline's own), the declared size (413) and its
        bytes from the budget (503: overloaded); a hasher when the body may be answered from the cache.
        The caller must `release()` the call it gets."""
        started = time.perf_counter()
        model = self.models.current
        if model is None:
            raise self.models.unavailable()
        codec = codec if codec is not None else self.codec
        codec.check_media_type(content_type)
        declared = declared_length or 0
        check_declared_length(declared, self.max_body_bytes)
        budget = self.budget
        budget.take_bytes(declared)
        hasher = body_hasher() if self._caching and declared >= self._cache_min else None
        return Call(model, hasher, started, budget, codec, declared, request_id=request_id)

    async def infer(self, call: Call, body: Body, *, accepts_gzip: bool = False, reasons: int = 0) -> Answer:
        """The answer to an admitted call. `accepts_gzip`: the caller takes a gzip answer (a stored one
        is then sent as stored, and a new one is stored gzipped). `reasons`: each row's top `reasons`
        reason codes too (0: none)."""
        call.reasons = reasons
        raw = self._raw_key(call, body)
        # While a canary may answer, the body's route is known only once it is decoded: no raw-body
        # lookup before (a hit would be production's answer to a call the canary may be routed).
        routing = self._router is not None and self._router.candidate(call.model) is not None
        if raw is not None and not routing:
            hit = self._hit(call, self._cache.get([raw]), accepts_gzip, self._direct)
            if hit is not None:
                if self._watch_hits:
                    self._direct.hit(CacheHit(call.model, call.codec, None, body.chunks, *_id_time(call)))
                return hit
        if body.size >= self.offload_min_bytes:
            held = _Held(self._pause, self._watch_hits)
            return await self._offload(held, self._decode_and_answer, call, body, raw, accepts_gzip)
        batch = call.codec.decode(call.model, body.joined())
        call.hold_rows(len(batch))
        if routing:
            batch = self._route(call, batch, body, no_pause)
        if len(batch) >= self.offload_min_rows:
            # A small body with many rows: it counts as a small call itself (SmallCallsFirst), so it
            # must not step aside for small calls.
            held = _Held(no_pause, self._watch_hits)
            return await self._offload(held, self._answer, call, batch, raw, accepts_gzip)
        return self._answer(call, batch, raw, accepts_gzip, self._direct)

    async def _offload(self, held: _Held, work: Callable[..., Answer], *args: Any) -> Answer:
        try:
            return await anyio.to_thread.run_sync(partial(work, *args, held), limiter=self._limiter)
        finally:
            self._direct.take_over(held)

    # --- the steps (inline, or in a worker thread with a held recorder) ---------------------------------
    def _decode_and_answer(
        self, call: Call, body: Body, raw: str | None, accepts_gzip: bool, rec: _Recorder
    ) -> Answer:
        batch = call.codec.decode(call.model, body.joined(), rec.pause)
        anyio.from_thread.run_sync(call.hold_rows, len(batch))  # the budget lives on the loop
        if self._router is not None:
            batch = self._route(call, batch, body, rec.pause)
        rec.pause()
        return self._answer(call, batch, raw, accepts_gzip, rec)

    def _route(self, call: Call, batch: Batch, body: Body, pause: Callable[[], None]) -> Batch:
        """The canary's share goes to the canary: `call.model` becomes it, production stays behind it. A
        column batch the canary cannot read as decoded is decoded again for it."""
        router = self._router
        assert router is not None
        production = call.model
        canary = router.candidate(production)
        if canary is None or not router.routes(batch, production.passthrough, call.request_id):
            return batch
        call.fallback, call.model = (production, batch), canary
        if not usable(batch, production, canary):
            batch = call.codec.decode(canary, body.joined(), pause)
        return batch

    def _answer(
        self, call: Call, batch: Batch, raw: str | None, accepts_gzip: bool, rec: _Recorder
    ) -> Answer:
        router = self._router
        if router is None:
            return self._answer_by(call, batch, raw, accepts_gzip, rec)
        model, fallback = call.model, call.fallback
        started = time.perf_counter()
        if fallback is None:
            answer = self._answer_by(call, batch, raw, accepts_gzip, rec)
            route = "production"
        else:
            try:
                answer = self._answer_by(call, batch, rekeyed(raw, model.sha256), accepts_gzip, rec)
                route = "canary"
            except Exception as exc:  # production answers it; production's own error goes to the client
                production, original = fallback
                call.model, call.fallback = production, None
                started = time.perf_counter()
                answer = self._answer_by(call, original, raw, accepts_gzip, rec)
                router.failed(model, exc)
                model, route = production, "fallback"
        if "X-Cache" not in answer.headers:  # a hit says nothing of a version's speed
            router.answered(rec.buffer, model, route, time.perf_counter() - started)
        return answer

    def _answer_by(
        self, call: Call, batch: Batch, raw: str | None, accepts_gzip: bool, rec: _Recorder
    ) -> Answer:
        model = call.model
        keys = None
        if raw is not None:
            normalised = batch.normalised_key(model.sha256)
            keys = CacheKeys(raw, raw if normalised is None else normalised + call.key_suffix)
            stored = self._cache.get([keys.normalised])
            hit = self._hit(call, stored, accepts_gzip, rec)
            if hit is not None and stored is not None:
                self._cache.set([keys.raw], stored)  # the next exact repeat hits in one lookup
                if rec.hit_observers:
                    rec.hit(CacheHit(model, call.codec, batch, None, *_id_time(call)))
                return hit
            rec.buffer.inc(self.metrics.cache_miss)
        buffer = rec.buffer
        decoded_at = time.perf_counter()
        buffer.observe(self._decode_stage, decoded_at - call.started)
        headers = {"X-Model-Version": model.version}
        scored = self._score(call, batch, headers, buffer)
        scored_at = time.perf_counter()
        buffer.observe(self._score_stage, scored_at - decoded_at)
        rec.pause()
        out = call.codec.encode(model, batch, scored, rec.pause)
        if scored.bad_rows:
            headers["X-Rejected-Rows"] = str(len(scored.bad_rows))
        buffer.observe(self._encode_stage, time.perf_counter() - scored_at)
        rec.scored(Scoring(model, batch, scored, call.request_id, time.time()))
        if keys is not None:
            out = self._store(keys, out, scored, headers, accepts_gzip)
        return Answer(out, headers, call.codec.media_type)

    def _score(self, call: Call, batch: Batch, headers: dict[str, str], buffer: MetricBuffer) -> Scored:
        model = call.model
        scored, report = score_rows(
            model,
            batch,
            reject_unseen=self._reject_unseen,
            reasons=call.reasons,
            passthrough_max_chars=self.settings.passthrough_max_chars,
        )
        if report is not None:
            if report.unknown_rows:
                buffer.inc(self.metrics.unknown_keys, report.unknown_rows)
            headers.update(scored.notes)
        if scored.unseen:
            for column, count in scored.unseen.items():
                buffer.inc(self.metrics.unseen.labels(column), count)
            headers["X-Unseen-Categories"] = str(sum(scored.unseen.values()))
            headers["X-Unseen-Values"] = unseen_listing(scored.unseen_values)
        if scored.errors and (batch.single or self._reject_bad_batches):
            hint = columns_orient_hint(batch.rows[0], model.used_columns) if batch.single else ""
            raise rows_error(
                scored.errors, scored.bad_rows, len(batch), self.settings.max_errors_listed, hint
            )
        return scored

    # --- the cache --------------------------------------------------------------------------------------
    def _raw_key(self, call: Call, body: Body) -> str | None:
        """The raw-body key when this body goes through the cache, else None."""
        if not self._caching or body.size < self._cache_min:
            return None
        hasher = body.hasher if body.hasher is not None else chunks_hasher(body.chunks)
        return hashed_raw_key(call.model.sha256, hasher) + call.key_suffix

    def _hit(self, call: Call, stored: bytes | None, accepts_gzip: bool, rec: _Recorder) -> Answer | None:
        """A hit: the stored answer as stored (gzip when the caller accepts it), else decompressed. None
        for no value, and for a gzip value that is not whole or would inflate past cache_max_value_bytes
        (nothing this service stores): refused and counted, the caller computes the answer."""
        if stored is None:
            return None
        model = call.model
        headers = {"X-Model-Version": model.version, "X-Cache": "hit", "Vary": "Accept-Encoding"}
        if is_gzip(stored):
            if accepts_gzip:
                headers["Content-Encoding"] = "gzip"
            else:
                plain = gunzip_body(stored, self.settings.cache_max_value_bytes)
                if plain is None:
                    rec.buffer.inc(self.metrics.cache.labels("rejected"))
                    log_refusal_once("gzip value not whole or over the size cap", f"model {model.version}")
                    return None
                stored = plain
        rec.buffer.inc(self.metrics.cache_hit)
        return Answer(stored, headers, call.codec.media_type)

    def _store(
        self, keys: CacheKeys, out: bytes, scored: Scored, headers: dict[str, str], accepts_gzip: bool
    ) -> bytes:
        """Store a clean answer (no rejected rows, no unseen levels, not too big); gzip it first when the
        caller accepts gzip. Returns the bytes to send."""
        if scored.bad_rows or scored.unseen or scored.notes or len(out) > self.settings.cache_max_value_bytes:
            return out
        headers["Vary"] = "Accept-Encoding"
        if accepts_gzip:
            out = gzip_body(out)
            headers["Content-Encoding"] = "gzip"
        self._cache.set(keys.for_store(), out)
        return out


def _id_time(call: Call) -> tuple[str, float]:
    return call.request_id, time.time()


def rows_error(errors: list[FieldError], bad_rows: set[int], n: int, cap: int, hint: str = "") -> InputError:
    """The 422 for rows that cannot be scored: the first problem in the detail (and a hint about the whole
    body, if any), up to `cap` of them listed."""
    first = errors[0]
    where = f"row {first.row}" + (f", field {first.field}" if first.field is not None else "")
    detail = f"{len(bad_rows)} of {n} row(s) cannot be scored; first: {where}: {first.reason}"
    if hint:
        detail += f"; {hint}"
    return InputError(
        detail,
        errors=errors[:cap],
        error_count=len(errors),
        bad_rows=sorted(bad_rows)[:cap],
        bad_row_count=len(bad_rows),
    )


def _error_order(error: FieldError) -> tuple[int, str]:
    return (error.row if error.row is not None else -1, error.field or "")


def score_rows(
    model: CompiledModel, batch: Batch, *, reject_unseen: bool, reasons: int, passthrough_max_chars: int
) -> tuple[Scored, KeyReport | None]:
    """The scoring step every door shares (the HTTP calls above, the file scorer of service/files): the
    rows scored, their pass-through ids collected, their top `reasons` reason codes (0: none), and what
    their keys say (the report, None for nothing to say) joined to the result: key errors to the rows'
    value errors, what is only reported to `scored.notes`. Bad rows are in `scored.errors`; what to do
    with them is the caller's policy."""
    scored = model.score_batch(batch, reject_unseen=reject_unseen)
    if model.passthrough:
        ids, errors = collect_ids(batch, model.passthrough, passthrough_max_chars)
        scored.ids = ids
        if errors:  # an id that cannot be echoed is its row's error
            scored.errors = sorted([*scored.errors, *errors], key=_error_order)
            scored.bad_rows.update(e.row for e in errors if e.row is not None)
    if reasons:
        scored.reasons = top_reasons(model, scored, reasons)
    # After scoring: only the rows it read as missing may lack a column. None: nothing to report.
    report = batch.inspect_keys(model.names, partial(model.missing_rows, scored))
    if report is not None:
        add_key_report(scored, report)
    return scored, report


def add_key_report(scored: Scored, report: KeyReport) -> None:
    """The rows' key errors join their value errors (in row order); what is only reported goes into
    `scored.notes` (the answer's headers), and keeps the answer out of the cache."""
    if report.errors:
        scored.errors = sorted([*scored.errors, *report.errors], key=_error_order)
        scored.bad_rows |= report.bad_rows
    scored.notes = report.headers()


def unseen_listing(values: dict[str, list[str]]) -> str:
    """X-Unseen-Values: the number of distinct column=value pairs, then the first of them."""
    pairs = dict.fromkeys((column, value) for column, seen in values.items() for value in seen)
    return listing(len(pairs), (f"{header_text(c)}={header_text(v)}" for c, v in pairs))
