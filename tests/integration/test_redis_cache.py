"""RedisCache against a real redis-server: round trips, aliases, TTL, and failing open when Redis is
stopped or hung (SIGSTOP), with the circuit breaker; then /predict through the app with Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient
from starlette.applications import Starlette

from service.api.state import AppState
from service.model.registry import Registry
from service.serving.metrics import Metrics
from service.serving.redis_cache import BreakerState, RedisCache
from service.settings import Settings
from tests.conftest import free_port, make_client
from tools import procs

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


class RedisServer:
    """A throwaway redis-server on a free loopback port (no persistence), that tests may stop and start."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.record: procs.ProcessRecord | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            str(shutil.which("redis-server")),
            *("--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"),
            *("--dir", str(self.workdir), "--logfile", ""),
        ]
        self.record = procs.spawn("redis", argv, env=os.environ, log=self.workdir / "redis.log")
        try:
            self._wait_ready(10.0)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{procs.tail(self.workdir / 'redis.log')}")

    def stop(self) -> None:
        if self.record is not None:
            self.signal(signal.SIGCONT)  # a stopped (SIGSTOP) Redis cannot act on SIGTERM
            procs.stop(self.record, timeout=5)
            self.record = None

    def signal(self, sig: signal.Signals) -> None:
        assert self.record is not None
        if procs.is_running(self.record):  # the very process we started, never a reused pid
            os.kill(self.record.pid, sig)

    def flushall(self) -> None:
        with redis.Redis.from_url(self.url) as client:
            client.flushall()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def running(server: RedisServer) -> RedisServer:
    if server.record is None or not procs.is_running(server.record):
        server.start()
    server.flushall()
    return server


CacheFactory = Callable[..., tuple[RedisCache, Metrics]]


@pytest.fixture
def make_cache() -> Iterator[CacheFactory]:
    """RedisCache(settings) with short timeouts; every cache made is closed when the test ends."""
    made: list[RedisCache] = []

    def make(url: str, **overrides: Any) -> tuple[RedisCache, Metrics]:
        values = {
            "redis_url": url,
            "redis_timeout_seconds": 0.05,
            "redis_breaker_failures": 3,
            "redis_breaker_reset_seconds": 0.5,
            **overrides,
        }
        metrics = Metrics()
        made.append(RedisCache(Settings(**values), metrics))
        return made[-1], metrics

    yield make
    for cache in made:
        cache.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def breaker_state(cache: RedisCache) -> BreakerState:
    """Read afresh each time (the state changes between reads as time passes and calls succeed)."""
    return cache.breaker.state


def failures_logged(caplog: pytest.LogCaptureFixture, kind: str) -> int:
    return sum(f"redis get failed ({kind}:" in r.getMessage() for r in caplog.records)


def test_round_trip_alias_and_ttl(running: RedisServer, make_cache: CacheFactory) -> None:
    cache, metrics = make_cache(running.url, cache_ttl_seconds=120)
    value = orjson.dumps([{"phat": 0.25, "business_outcome": 0}] * 100)
    assert cache.get(["raw-1"]) is None
    cache.set(["raw-1", "norm-1"], value)
    assert cache.flush()
    assert cache.get(["raw-1"]) == value
    assert cache.get(["raw-2", "norm-1"]) == value  # a re-formatted body: the alias leads to the bytes
    with redis.Redis.from_url(running.url) as client:
        assert client.get("norm-1") == b"@raw-1"  # stored once: the second key only names the first
        assert 110 <= int(client.ttl("raw-1")) <= 120 and 110 <= int(client.ttl("norm-1")) <= 120
        client.delete("raw-1")
    assert cache.get(["norm-1"]) is None  # a dangling alias is a miss
    assert sample(metrics, "propensity_cache_stores_total", result="stored") == 1
    assert sample(metrics, "propensity_cache_requests_total", result="error") == 0


def test_values_over_the_limit_are_not_stored(running: RedisServer, make_cache: CacheFactory) -> None:
    cache, _ = make_cache(running.url, cache_max_value_bytes=1024)
    cache.set(["big"], b"[" + b"0," * 1000 + b"0]")
    assert cache.flush()
    assert cache.get(["big"]) is None


def test_redis_stopped_fails_open_and_the_breaker_recovers(
    running: RedisServer, make_cache: CacheFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cache, metrics = make_cache(running.url)
    cache.set(["k"], b'{"phat":0.5}')
    assert cache.flush() and cache.get(["k"]) == b'{"phat":0.5}'
    running.stop()

    assert [cache.get(["k"]) for _ in range(10)] == [None] * 10
    # refused connections (no timeout to wait for) until the breaker opens; then Redis is not asked
    assert failures_logged(caplog, "ConnectionError") == 3
    assert sample(metrics, "propensity_cache_requests_total", result="error") == 3
    assert sample(metrics, "propensity_cache_requests_total", result="bypass") == 7
    assert breaker_state(cache) is BreakerState.OPEN
    assert sample(metrics, "propensity_cache_breaker_open") == 1
    assert sample(metrics, "propensity_cache_breaker_trips_total") == 1

    running.start()
    time.sleep(0.6)  # past the reset period (0.5 s): the next call is the half-open probe
    assert breaker_state(cache) is BreakerState.HALF_OPEN
    cache.set(["k"], b'{"phat":0.5}')
    assert cache.flush()
    assert breaker_state(cache) is BreakerState.CLOSED
    assert cache.get(["k"]) == b'{"phat":0.5}'  # the cache resumed
    assert sample(metrics, "propensity_cache_breaker_open") == 0


def test_a_hung_redis_fails_open_on_the_timeout_then_is_skipped(
    running: RedisServer, make_cache: CacheFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """What a hung Redis costs (about one timeout per lookup until the breaker opens, nothing after) is
    measured by `make bench` (section overhead); here: the lookups give up on the socket timeout, the breaker
    opens after `redis_breaker_failures` of them, and a store is queued, never waited for."""
    cache, metrics = make_cache(running.url, redis_timeout_seconds=0.05, redis_breaker_failures=2)
    assert cache.client.connection_pool.connection_kwargs["socket_timeout"] == 0.05
    assert cache.get(["warm"]) is None  # the connection exists before Redis hangs
    running.signal(signal.SIGSTOP)
    try:
        assert [cache.get(["k"]) for _ in range(4)] == [None] * 4
        assert failures_logged(caplog, "TimeoutError") == 2
        assert sample(metrics, "propensity_cache_requests_total", result="error") == 2
        assert sample(metrics, "propensity_cache_requests_total", result="bypass") == 2
        assert breaker_state(cache) is BreakerState.OPEN
        cache.set(["k"], b"{}")  # returns while Redis is stopped: the writer thread owns the store
        assert cache.flush(2.0)
        assert sample(metrics, "propensity_cache_stores_total", result="dropped") == 1
        assert sample(metrics, "propensity_cache_stores_total", result="stored") == 0
    finally:
        running.signal(signal.SIGCONT)


def test_pending_stores_are_bounded(running: RedisServer, make_cache: CacheFactory) -> None:
    cache, metrics = make_cache(running.url)
    cache.max_pending_bytes = 100
    running.signal(signal.SIGSTOP)  # the writer blocks on its first store; the rest queue up
    try:
        for i in range(10):
            cache.set([f"k{i}"], b"x" * 40)
        assert sample(metrics, "propensity_cache_stores_total", result="dropped") >= 7
    finally:
        running.signal(signal.SIGCONT)
    assert cache.flush(5.0)


# --- through the app ---------------------------------------------------------------------------------------
@pytest.fixture
def app_with_redis(running: RedisServer, approved_registry: Registry) -> Iterator[TestClient]:
    yield from make_client(approved_registry, redis_url=running.url, cache_min_body_bytes=0)


def flush_app_cache(client: TestClient) -> None:
    """Wait for the app's Redis writer: a store happens a moment after the answer it keeps."""
    app = client.app
    assert isinstance(app, Starlette)
    cache = AppState.of(app).cache
    assert isinstance(cache, RedisCache) and cache.flush()


def test_predict_hits_return_the_bytes_of_the_miss(
    app_with_redis: TestClient, reference_rows: list[dict[str, Any]]
) -> None:
    client = app_with_redis
    body = orjson.dumps(reference_rows)
    headers = {"content-type": "application/json"}
    miss = client.post("/predict", content=body, headers=headers)
    assert miss.status_code == 200 and "x-cache" not in miss.headers
    flush_app_cache(client)
    hit = client.post("/predict", content=body, headers=headers)
    assert hit.headers.get("x-cache") == "hit" and hit.content == miss.content
    assert hit.headers["x-model-version"] == miss.headers["x-model-version"]
    # the same rows, other whitespace and key order: the normalised key hits
    variant = orjson.dumps(
        [dict(reversed(list(r.items()))) for r in reference_rows], option=orjson.OPT_INDENT_2
    )
    again = client.post("/predict", content=variant, headers=headers)
    assert again.headers.get("x-cache") == "hit" and again.content == miss.content


def stored_values(url: str) -> list[bytes]:
    with redis.Redis.from_url(url) as r:
        return [v for k in r.keys("*:raw:*") if isinstance(v := r.get(k), bytes)]


def test_answers_are_stored_gzipped_and_sent_as_each_client_accepts(
    app_with_redis: TestClient, running: RedisServer, reference_rows: list[dict[str, Any]]
) -> None:
    client = app_with_redis
    running.flushall()
    gz = {"content-type": "application/json", "accept-encoding": "gzip"}
    plain = {"content-type": "application/json", "accept-encoding": "identity"}
    body = orjson.dumps(list(reversed(reference_rows)))
    miss = client.post("/predict", content=body, headers=gz)
    assert miss.status_code == 200 and miss.headers["content-encoding"] == "gzip"
    assert miss.headers["vary"] == "Accept-Encoding"
    flush_app_cache(client)
    assert [v[:2] for v in stored_values(running.url)] == [b"\x1f\x8b"]  # Redis holds the gzip bytes
    hit_gz = client.post("/predict", content=body, headers=gz)
    assert hit_gz.headers.get("x-cache") == "hit" and hit_gz.headers["content-encoding"] == "gzip"
    assert hit_gz.content == miss.content  # httpx decodes both
    hit_plain = client.post("/predict", content=body, headers=plain)
    assert hit_plain.headers.get("x-cache") == "hit" and "content-encoding" not in hit_plain.headers
    assert hit_plain.content == miss.content  # the same JSON bytes, decompressed by the app
    # a client that does not accept gzip: its answer is stored as JSON and any client's hit is that JSON
    other = orjson.dumps(reference_rows[:2])
    first = client.post("/predict", content=other, headers=plain)
    assert "content-encoding" not in first.headers
    flush_app_cache(client)
    assert sorted(v[:1] for v in stored_values(running.url)) == [b"\x1f", b"["]
    again = client.post("/predict", content=other, headers=gz)
    assert again.headers.get("x-cache") == "hit" and "content-encoding" not in again.headers
    assert again.content == first.content
