"""RedisCache against a real redis-server that asks for a password: round trips, aliases, TTL, failing
open when Redis is stopped, hung (SIGSTOP) or given the wrong password, with the circuit breaker; then
/predict through the app with Redis, and values someone else wrote there refused and recomputed."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from starlette.applications import Starlette

from service.api.state import AppState
from service.model.registry import Registry
from service.serving import cache_integrity
from service.serving.cache import raw_key
from service.serving.cache_integrity import TAG_BYTES, CacheSigner
from service.serving.metrics import Metrics
from service.serving.redis_cache import BreakerState, RedisCache
from service.settings import Settings
from tests.conftest import free_port, make_client
from tests.unit.serving.test_cache_integrity import gzip_bomb
from tools import procs
from tools.paths import REPO
from tools.swarm import interpolate

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
CACHE_SECRET = secrets.token_hex(32)


class RedisServer:
    """A throwaway redis-server on a free loopback port (no persistence) that asks for a password (in its
    config file, not on its command line), that tests may stop and start."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.password_file = workdir / "redis_password"
        self.password_file.write_text(self.password + "\n")
        self.record: procs.ProcessRecord | None = None

    @property
    def url(self) -> str:
        """Without the password: the service reads it from `password_file`."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, password=self.password)

    def start(self) -> None:
        conf = self.workdir / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(f'requirepass "{self.password}"\n')
        argv = [
            str(shutil.which("redis-server")),
            str(conf),
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
        wait_asking_for_a_password(self.port, self.workdir / "redis.log", timeout)

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
        with self.client() as client:
            client.flushall()


def wait_asking_for_a_password(port: int, log: Path, timeout: float) -> None:
    """Until a redis-server on `port` answers a PING with NOAUTH: up, and it asks for the password."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
                if reply.startswith(b"-NOAUTH"):
                    return
                raise AssertionError(f"redis-server answered PING without a password: {reply!r}")
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start:\n{procs.tail(log)}")


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

    def make(server: RedisServer, **overrides: Any) -> tuple[RedisCache, Metrics]:
        short = {
            "redis_timeout_seconds": 0.05,
            "redis_breaker_failures": 3,
            "redis_breaker_reset_seconds": 0.5,
        }
        values = redis_settings(server, **{**short, **overrides})
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
    cache, metrics = make_cache(running, cache_ttl_seconds=120)
    value = orjson.dumps([{"phat": 0.25, "business_outcome": 0}] * 100)
    assert cache.get(["raw-1"]) is None
    cache.set(["raw-1", "norm-1"], value)
    assert cache.flush()
    assert cache.get(["raw-1"]) == value
    assert cache.get(["raw-2", "norm-1"]) == value  # a re-formatted body: the alias leads to the bytes
    with running.client() as client:
        sealed_alias = client.get("norm-1")
        assert isinstance(sealed_alias, bytes)
        assert cache.signer.open("norm-1", sealed_alias) == b"@raw-1"  # stored once: it names the first
        assert 110 <= int(client.ttl("raw-1")) <= 120 and 110 <= int(client.ttl("norm-1")) <= 120
        client.delete("raw-1")
    assert cache.get(["norm-1"]) is None  # a dangling alias is a miss
    assert sample(metrics, "propensity_cache_stores_total", result="stored") == 1
    assert sample(metrics, "propensity_cache_requests_total", result="error") == 0


def test_values_over_the_limit_are_not_stored(running: RedisServer, make_cache: CacheFactory) -> None:
    cache, _ = make_cache(running, cache_max_value_bytes=1024)
    cache.set(["big"], b"[" + b"0," * 1000 + b"0]")
    assert cache.flush()
    assert cache.get(["big"]) is None


def test_redis_stopped_fails_open_and_the_breaker_recovers(
    running: RedisServer, make_cache: CacheFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cache, metrics = make_cache(running)
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
    cache, metrics = make_cache(running, redis_timeout_seconds=0.05, redis_breaker_failures=2)
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
    cache, metrics = make_cache(running)
    cache.max_pending_bytes = 100
    running.signal(signal.SIGSTOP)  # the writer blocks on its first store; the rest queue up
    try:
        for i in range(10):
            cache.set([f"k{i}"], b"x" * 40)
        assert sample(metrics, "propensity_cache_stores_total", result="dropped") >= 7
    finally:
        running.signal(signal.SIGCONT)
    assert cache.flush(5.0)


def test_values_someone_else_wrote_are_refused_counted_and_logged_once(
    running: RedisServer,
    make_cache: CacheFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache_integrity, "_logged", set())
    cache, metrics = make_cache(running, cache_max_value_bytes=1024)
    genuine = b'[{"business_outcome":0,"phat":0.25}]'
    cache.set(["raw-a", "norm-a"], genuine)
    assert cache.flush() and cache.get(["raw-a"]) == genuine
    other = CacheSigner(b"another secret, another deployment")
    with running.client() as client:
        sealed = client.get("raw-a")
        assert isinstance(sealed, bytes)
        client.set("raw-fake", b'[{"business_outcome":1,"phat":0.999}]')  # unsigned: what the issue forged
        client.set("raw-moved", sealed)  # a genuine value under another request's key
        client.set("raw-other", other.seal("raw-other", genuine))  # signed with another secret
        client.set("norm-fake", b"@raw-a")  # an unsigned alias to a genuine value
        client.set("raw-big", cache.signer.seal("raw-big", b"[" + b"0," * 1000 + b"0]"))  # over 1024 bytes
        client.set("norm-chain", cache.signer.seal("norm-chain", b"@norm-a"))  # an alias to an alias
    with caplog.at_level(logging.WARNING, logger="propensity.cache"):
        for key in ("raw-fake", "raw-moved", "raw-other", "norm-fake", "raw-big", "norm-chain"):
            assert cache.get([key]) is None, key
    assert cache.get(["norm-a"]) == genuine  # the genuine alias still leads to the genuine value
    assert sample(metrics, "propensity_cache_requests_total", result="rejected") == 6
    assert sample(metrics, "propensity_cache_requests_total", result="error") == 0
    assert breaker_state(cache) is BreakerState.CLOSED  # refusing a value is not a Redis failure
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert [m.split(")")[0] for m in refusals] == [  # once per reason
        "cached value refused (its tag does not verify; key raw-fake",
        "cached value refused (larger than cache_max_value_bytes; key raw-big",
        "cached value refused (an alias to an alias; key norm-a",
    ]


@pytest.mark.parametrize("password", ["wrong", None], ids=["wrong-password", "no-password"])
def test_redis_with_the_wrong_password_or_none_fails_open(
    running: RedisServer,
    make_cache: CacheFactory,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    password: str | None,
) -> None:
    wrong = tmp_path / "wrong_password"
    wrong.write_text(secrets.token_hex(16))
    cache, metrics = make_cache(running, redis_password_file=wrong if password else None)
    cache.set(["k"], b'{"phat":0.5}')
    assert cache.flush()
    assert [cache.get(["k"]) for _ in range(5)] == [None] * 5
    assert sample(metrics, "propensity_cache_stores_total", result="error") == 1
    # the store and two lookups fail (3 in a row: the breaker opens), then Redis is skipped
    assert sample(metrics, "propensity_cache_requests_total", result="error") == 3
    assert sample(metrics, "propensity_cache_requests_total", result="bypass") == 3
    assert failures_logged(caplog, "AuthenticationError") == 2
    logged = caplog.text
    assert running.password not in logged and wrong.read_text() not in logged  # no password is ever logged


# --- through the app ---------------------------------------------------------------------------------------
@pytest.fixture
def app_with_redis(running: RedisServer, approved_registry: Registry) -> Iterator[TestClient]:
    yield from make_client(approved_registry, cache_min_body_bytes=0, **redis_settings(running))


def redis_settings(server: RedisServer, **overrides: Any) -> dict[str, Any]:
    return {
        "redis_url": server.url,
        "redis_password_file": server.password_file,
        "cache_secret": CACHE_SECRET,
        **overrides,
    }


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


def stored_values(server: RedisServer) -> list[bytes]:
    """The answers stored in Redis, without their tags."""
    with server.client() as r:
        return [v[TAG_BYTES:] for k in r.keys("*:raw:*") if isinstance(v := r.get(k), bytes)]


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
    assert [v[:2] for v in stored_values(running)] == [b"\x1f\x8b"]  # Redis holds the gzip bytes
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
    assert sorted(v[:1] for v in stored_values(running)) == [b"\x1f", b"["]
    again = client.post("/predict", content=other, headers=gz)
    assert again.headers.get("x-cache") == "hit" and "content-encoding" not in again.headers
    assert again.content == first.content


# --- values someone else wrote, through the app ----------------------------------------------------------
def forge(server: RedisServer, key: str, value: bytes) -> None:
    with server.client() as client:
        client.flushall()
        client.set(key, value)


def rejected(client: TestClient) -> float:
    app = client.app
    assert isinstance(app, Starlette)
    metrics = AppState.of(app).metrics
    metrics.buffer.flush()  # the pipeline's counts are buffered; RedisCache's are not
    value = metrics.registry.get_sample_value("propensity_cache_requests_total", {"result": "rejected"})
    return 0.0 if value is None else value


@pytest.fixture
def uncached(approved_registry: Registry) -> Iterator[TestClient]:
    yield from make_client(approved_registry, cache_enabled=False)


def test_a_forged_answer_at_the_key_the_service_computes_is_refused_and_recomputed(
    app_with_redis: TestClient,
    uncached: TestClient,
    running: RedisServer,
    reference_rows: list[dict[str, Any]],
) -> None:
    """The issue's attack: a fake phat written to the key the service computes for a request was served as
    X-Cache: hit. Now: refused, counted, and the answer computed (the bytes of an uncached server)."""
    client = app_with_redis
    headers = {"content-type": "application/json", "accept-encoding": "identity"}
    body, other = orjson.dumps(reference_rows), orjson.dumps(reference_rows[:3])
    expected = uncached.post("/predict", content=body, headers=headers)
    assert expected.status_code == 200
    model = AppState.of(client.app).holder.current  # type: ignore[arg-type]
    assert model is not None
    key = raw_key(model.sha256, body)  # what the service computes (JsonRows adds no suffix)
    fake = orjson.dumps([{"business_outcome": 1, "phat": 0.999}] * len(reference_rows))

    client.post("/predict", content=other, headers=headers)  # a genuine answer to another request
    flush_app_cache(client)
    with running.client() as r:
        genuine_other = r.get(raw_key(model.sha256, other))
    assert isinstance(genuine_other, bytes)
    signer = CacheSigner(CACHE_SECRET.encode())
    forgeries = {
        "unsigned": fake,
        "another request's genuine answer": genuine_other,
        "signed with another secret": CacheSigner(b"not the secret of this deployment").seal(key, fake),
        "a tag of another key": signer.seal(key + "x", fake)[:TAG_BYTES] + fake,
    }
    for n, (what, value) in enumerate(forgeries.items(), start=1):
        forge(running, key, value)
        answer = client.post("/predict", content=body, headers=headers)
        assert answer.status_code == 200, what
        assert "x-cache" not in answer.headers and answer.content == expected.content, what
        assert rejected(client) == n, what
    flush_app_cache(client)  # the recomputed answer replaced the forgery: the next repeat is a real hit
    hit = client.post("/predict", content=body, headers=headers)
    assert hit.headers.get("x-cache") == "hit" and hit.content == expected.content


def test_a_gzip_bomb_in_redis_is_refused_and_recomputed(
    app_with_redis: TestClient,
    uncached: TestClient,
    running: RedisServer,
    reference_rows: list[dict[str, Any]],
) -> None:
    """The issue's 1 MB value that inflated to 1 GiB: unsigned it fails its tag before anything is
    inflated; even correctly signed (a value no replica writes) the cap on decompression refuses it."""
    client = app_with_redis
    headers = {"content-type": "application/json", "accept-encoding": "identity"}
    body = orjson.dumps(list(reversed(reference_rows)))
    expected = uncached.post("/predict", content=body, headers=headers)
    model = AppState.of(client.app).holder.current  # type: ignore[arg-type]
    assert model is not None
    key = raw_key(model.sha256, body)
    bomb = gzip_bomb(1 << 30)
    before = rejected(client)
    for value in (bomb, CacheSigner(CACHE_SECRET.encode()).seal(key, bomb)):
        forge(running, key, value)
        answer = client.post("/predict", content=body, headers=headers)
        assert answer.status_code == 200 and "x-cache" not in answer.headers
        assert answer.content == expected.content
    assert rejected(client) - before == 2  # the unsigned one by RedisCache, the signed one by the pipeline


@pytest.mark.parametrize("password", ["wrong", None], ids=["wrong-password", "no-password"])
def test_the_service_with_the_wrong_redis_password_serves_uncached(
    running: RedisServer,
    approved_registry: Registry,
    uncached: TestClient,
    reference_rows: list[dict[str, Any]],
    tmp_path: Path,
    password: str | None,
) -> None:
    wrong = tmp_path / "wrong_password"
    wrong.write_text(secrets.token_hex(16))
    settings = redis_settings(running, redis_password_file=wrong if password else None)
    headers = {"content-type": "application/json"}
    body = orjson.dumps(reference_rows)
    expected = uncached.post("/predict", content=body, headers=headers).content
    for client in make_client(approved_registry, cache_min_body_bytes=0, **settings):
        answers = [client.post("/predict", content=body, headers=headers) for _ in range(3)]
        flush_app_cache(client)
        assert [(a.status_code, a.headers.get("x-cache"), a.content) for a in answers] == [
            (200, None, expected)
        ] * 3
        app = client.app
        assert isinstance(app, Starlette)
        errors = app.state.propensity.metrics.registry.get_sample_value(
            "propensity_cache_requests_total", {"result": "error"}
        )
        assert errors is not None and errors >= 1


# --- the Swarm stacks' redis command, run here ----------------------------------------------------------
def test_the_swarm_stacks_redis_takes_its_password_from_the_secret(tmp_path: Path) -> None:
    """swarm-stack.test.yml's redis command and healthcheck (the production ones but for the loopback
    address: tests/unit/tools/test_swarm_static.py), with the secret's path and the port made local."""
    stack = yaml.safe_load((REPO / "swarm-stack.test.yml").read_text())["services"]["redis"]
    script, check = (interpolate(text, {}) for text in (stack["command"][2], stack["healthcheck"]["test"][1]))
    port, password = free_port(), secrets.token_hex(16)
    secret, wrong = tmp_path / "redis_password", tmp_path / "wrong_password"
    secret.write_text(password + "\n")
    wrong.write_text(secrets.token_hex(16) + "\n")

    def local(text: str, secret_file: Path = secret) -> str:
        return text.replace("/run/secrets/redis_password", str(secret_file)).replace("18379", str(port))

    log = tmp_path / "redis.log"
    record = procs.spawn("redis", ["sh", "-c", local(script)], env=os.environ, log=log, cwd=tmp_path)
    try:
        wait_asking_for_a_password(port, log, 10.0)
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes()  # `exec`: redis-server itself
        assert cmdline.startswith(b"redis-server") and password.encode() not in cmdline
        assert run_shell(local(check)) == 0  # healthy with the secret's password
        assert run_shell(local(check, wrong)) != 0  # not with another one
        settings = Settings(
            redis_url=f"redis://127.0.0.1:{port}/0", redis_password_file=secret, cache_secret=CACHE_SECRET
        )
        cache = RedisCache(settings, Metrics())
        try:
            cache.set(["k"], b'{"phat":0.5}')
            assert cache.flush() and cache.get(["k"]) == b'{"phat":0.5}'
        finally:
            cache.close()
    finally:
        procs.stop(record, timeout=5)


def run_shell(script: str) -> int:
    return subprocess.run(["sh", "-c", script], capture_output=True, timeout=10, check=False).returncode
