"""The shared response cache in Redis: fail-open, with short timeouts and a circuit breaker.

Semantics are those of `service.serving.cache.ResponseCache`: the response bytes are stored once, under the
raw-body key, with `SET .. EX ttl`; the normalised key holds an alias (b"@" + the raw key). So an exact
repeat (the common case) hits in one round trip (MGET), a re-formatted body in two (MGET, then GET of the
alias target), and a 10,000-row answer (megabytes) is held once, not twice.

Redis must never fail a request nor slow it by more than the timeout: every lookup has socket and connect
timeouts of `redis_timeout_seconds`, redis-py's own retries are off (they would multiply the timeout),
any Redis error is a miss (counted), and after `redis_breaker_failures` consecutive failures the breaker
opens: Redis is skipped altogether for `redis_breaker_reset_seconds`, then one probe call is let through
(half-open); its success closes the breaker, its failure opens it again.

Lookups are synchronous, on the event loop: a GET on loopback is quick, and handing it to a thread
(anyio.to_thread) made it several times slower -- more than it would ever save. The worst
case, a hung Redis, blocks a worker for one timeout per lookup, at most `redis_breaker_failures` times
per reset period. Stores go to a background writer thread (see RedisCache).

Trust. Redis asks for a password (`requirepass`: in the URL, or `PROPENSITY_REDIS_PASSWORD_FILE`; a wrong
one fails open like any other Redis error), and every value is tagged with the cache secret when stored
and verified before it is served (service/serving/cache_integrity.py): a value that does not verify, or is
larger than `cache_max_value_bytes`, is refused and counted, and the lookup is a miss.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from service.serving.cache import ALIAS_PREFIX
from service.serving.cache_integrity import log_refusal_once, read_secret_file, shared_signer
from service.serving.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("propensity.cache")
ERRORS = (redis.RedisError, OSError)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker (thread-safe, monotonic clock injectable for tests)."""

    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self._lock = threading.Lock()

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_seconds:
                return BreakerState.HALF_OPEN
            return self._state

    def allow(self) -> bool:
        """May a call go to Redis now? In half-open, only one probe at a time is let through."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.OPEN:
                if self._clock() - self._opened_at < self.reset_seconds:
                    return False
                self._set(BreakerState.HALF_OPEN)
            if self._probing:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        with self._lock:
            self._consecutive = 0
            self._probing = False
            if self._state is not BreakerState.CLOSED:
                self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            self._probing = False
            if self._state is BreakerState.HALF_OPEN or self._consecutive >= self.failures:
                self._opened_at = self._clock()
                if self._state is not BreakerState.OPEN:
                    self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        self._state = state
        if self._on_change is not None:
            self._on_change(state)


class RedisCache:
    """`ResponseCache` over redis-py. Never raises; a lookup waits at most the timeout per Redis call.

    Stores go through a background writer thread: /predict hands the answer over and returns at once,
    so a slow or dead Redis cannot slow a request through a store at all (and a big store is not on the
    request path either). Pending stores are bounded by bytes; beyond that they are dropped and counted.
    An exact repeat sent while its answer is still being stored may therefore still miss.
    """

    name = "redis"

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        client: redis.Redis | None = None,
        *,
        max_pending_bytes: int = 64 * 1024 * 1024,
        write_timeout_seconds: float = 1.0,
    ) -> None:
        if client is None and not settings.redis_url:
            raise ValueError("RedisCache needs settings.redis_url")
        self.ttl = settings.cache_ttl_seconds
        self.max_value_bytes = settings.cache_max_value_bytes
        self.metrics = metrics
        self.signer = shared_signer(settings)  # no secret: an error, the service does not start
        self.client = client if client is not None else make_client(settings, settings.redis_timeout_seconds)
        # Off the request path a store may take longer than a lookup (a 5 MB write under CPU contention).
        write_timeout = max(settings.redis_timeout_seconds, write_timeout_seconds)
        self.write_client = client if client is not None else make_client(settings, write_timeout)
        self.breaker = CircuitBreaker(
            settings.redis_breaker_failures,
            settings.redis_breaker_reset_seconds,
            on_change=self._on_breaker_change,
        )
        self.max_pending_bytes = max_pending_bytes
        self._pending: deque[tuple[list[str], bytes]] = deque()
        self._pending_bytes = 0
        self._busy = False
        self._cond = threading.Condition()
        self._writer: threading.Thread | None = None
        self._writer_pid = 0
        self._closed = False
        self._errors = metrics.cache.labels("error")
        self._rejected = metrics.cache.labels("rejected")
        self._bypass = metrics.cache.labels("bypass")
        self._stored = metrics.cache_stores.labels("stored")
        self._dropped = metrics.cache_stores.labels("dropped")
        self._store_errors = metrics.cache_stores.labels("error")
        self._get_seconds = metrics.cache_seconds.labels("get")
        self._set_seconds = metrics.cache_seconds.labels("set")

    # --- lookups (on the request path) ------------------------------------------------------------------
    def get(self, keys: list[str]) -> bytes | None:
        if not keys:
            return None
        if not self.breaker.allow():
            self._bypass.inc()
            return None
        started = time.perf_counter()
        try:
            values: list[bytes | None] = self.client.mget(keys)  # type: ignore[assignment]
            key, sealed = next(
                ((k, v) for k, v in zip(keys, values, strict=True) if v is not None), ("", None)
            )
            found = self._open(key, sealed)
            if found is not None and found.startswith(ALIAS_PREFIX):
                key = found[len(ALIAS_PREFIX) :].decode()
                found = self._open(key, self.client.get(key), alias=False)  # type: ignore[arg-type]
        except ERRORS as exc:
            self._failed("get", exc)
            return None
        self.breaker.success()
        self._get_seconds.observe(time.perf_counter() - started)
        return found

    def _open(self, key: str, sealed: bytes | None, *, alias: bool = True) -> bytes | None:
        """The value sealed at `key`; None when there is none or it is refused (counted, logged once): its
        tag does not verify, it is larger than any value this cache stores, or it is an alias where only
        an answer may be (`alias=False`: an alias's target)."""
        if sealed is None:
            return None
        value = self.signer.open(key, sealed)
        if value is None:
            reason = "its tag does not verify"
        elif len(value) > self.max_value_bytes:
            reason = "larger than cache_max_value_bytes"
        elif not alias and value.startswith(ALIAS_PREFIX):
            reason = "an alias to an alias"
        else:
            return value
        self._rejected.inc()
        log_refusal_once(reason, f"key {key}")
        return None

    # --- stores (handed to the writer thread) -----------------------------------------------------------
    def set(self, keys: list[str], value: bytes) -> None:
        if not keys or len(value) > self.max_value_bytes or self._closed:
            return
        with self._cond:
            if self._pending_bytes + len(value) > self.max_pending_bytes:
                self._dropped.inc()
                return
            self._pending.append((keys, value))
            self._pending_bytes += len(value)
            self._ensure_writer()
            self._cond.notify()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every pending store has been attempted (tests; shutdown)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        self.flush(timeout=1.0)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.client.close()
        if self.write_client is not self.client:
            self.write_client.close()

    def _ensure_writer(self) -> None:
        """Start the writer in this process (again after a fork: threads do not survive one)."""
        if self._writer is None or self._writer_pid != os.getpid() or not self._writer.is_alive():
            self._writer_pid = os.getpid()
            self._writer = threading.Thread(target=self._write_loop, name="redis-cache-writer", daemon=True)
            self._writer.start()

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed and not self._pending:
                    return
                keys, value = self._pending.popleft()
                self._pending_bytes -= len(value)
                self._busy = True
            try:
                self._store(keys, value)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _store(self, keys: list[str], value: bytes) -> None:
        if not self.breaker.allow():
            self._bypass.inc()
            self._dropped.inc()
            return
        started = time.perf_counter()
        alias = ALIAS_PREFIX + keys[0].encode()
        seal = self.signer.seal
        try:
            pipe = self.write_client.pipeline(transaction=False)
            pipe.set(keys[0], seal(keys[0], value), ex=self.ttl)
            for key in keys[1:]:
                pipe.set(key, seal(key, alias), ex=self.ttl)
            pipe.execute()
        except ERRORS as exc:
            self._store_errors.inc()
            self._failed("set", exc)
            return
        self.breaker.success()
        self._stored.inc()
        self._set_seconds.observe(time.perf_counter() - started)

    # --- failures ---------------------------------------------------------------------------------------
    def _failed(self, op: str, exc: BaseException) -> None:
        self._errors.inc()
        self.breaker.failure()
        log.warning("redis %s failed (%s: %s); serving without the cache", op, type(exc).__name__, exc)

    def _on_breaker_change(self, state: BreakerState) -> None:
        self.metrics.cache_breaker_open.set(0 if state is BreakerState.CLOSED else 1)
        if state is BreakerState.OPEN:
            self.metrics.cache_breaker_trips.inc()
        log.warning("redis circuit breaker %s", state.value)


def redis_password(settings: Settings) -> str | None:
    """The password from `redis_password_file`, if set (a password in the URL is redis-py's to read)."""
    if settings.redis_password_file is None:
        return None
    assert settings.redis_url is not None
    if redis.connection.parse_url(settings.redis_url).get("password"):
        raise ValueError("the Redis password is in PROPENSITY_REDIS_URL and PROPENSITY_REDIS_PASSWORD_FILE")
    return read_secret_file(settings.redis_password_file, "Redis password")


def make_client(settings: Settings, timeout: float) -> redis.Redis:
    """A client whose every call gives up after `timeout`: no retries, no handshake extras."""
    assert settings.redis_url is not None
    return redis.Redis.from_url(
        settings.redis_url,
        password=redis_password(settings),
        socket_timeout=timeout,
        socket_connect_timeout=settings.redis_timeout_seconds,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
        driver_info=None,  # no CLIENT SETINFO round trips on connect
    )
