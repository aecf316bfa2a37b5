"""nginx's edge policy with real processes (issue 12, defects 3 and 9): one replica (2 workers) behind an
nginx rendered by `tools.cluster_config.nginx_conf`.

- API keys on (the local cluster's optional key file): everything but nginx's own /health needs a key
  (401 problem+json), and the rate limit counts per client key, not per address.
- Large requests: at most `max_large_requests` in flight; the rest get 503 problem+json with Retry-After
  before their body is read, and no connection is reset. Small ones are never held up by them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.model.registry import Registry
from service.serving.decoding import decode_rows
from service.serving.scorer import CompiledModel
from tests.conftest import free_port
from tests.integration.nginx_server import Nginx, start_nginx
from tests.servers import Server, start_server, wait_until
from tools.bench.cluster_bench import make_rows
from tools.cluster_config import ClusterConfig
from tools.loadgen import LoadRunner, post

PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}
LARGE = 256 * 1024  # ClusterConfig's default large_body_bytes
RATE, BURST = 5, 5  # the keyed nginx's limit on /predict, per client key


@dataclass(frozen=True)
class Keys:
    path: Path
    alice: str
    bob: str


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory, approved_registry: Registry) -> Iterator[Server]:
    with start_server(approved_registry.root, tmp_path_factory.mktemp("replica"), workers=2) as server:
        yield server


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    path = tmp_path_factory.mktemp("keys") / "api-keys.map"
    alice, bob = secrets.token_hex(24), secrets.token_hex(24)
    path.write_text(f'"{alice}" alice;\n"{bob}" bob;\n')
    return Keys(path, alice, bob)


@contextlib.contextmanager
def nginx_for(replica: Server, run: Path, **overrides: Any) -> Iterator[Nginx]:
    config = ClusterConfig(
        run_dir=run,
        artifacts_dir=run,
        replicas=1,
        replica_port=replica.port,
        nginx_port=free_port(),
        redis=False,
        **overrides,
    )
    with start_nginx(config) as nginx:
        yield nginx


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, replica: Server, keys: Keys) -> Iterator[Nginx]:
    run = tmp_path_factory.mktemp("keyed")
    with nginx_for(
        replica, run, api_keys_file=keys.path, rate_limit_per_second=RATE, rate_limit_burst=BURST
    ) as nginx:
        yield nginx


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory, replica: Server) -> Iterator[Nginx]:
    with nginx_for(replica, tmp_path_factory.mktemp("bounded"), max_large_requests=2) as nginx:
        yield nginx


def score(model: CompiledModel, body: bytes) -> Any:
    decoded = decode_rows(body, max_rows=10_000, max_errors=100)
    records = model.records(model.score(decoded.rows))
    return records[0] if decoded.single else records


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM and response.headers["x-request-id"]
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://propensity.invalid/problems/{kind}" and body["status"] == status
    return body


# --- API keys -------------------------------------------------------------------------------------------
def test_every_route_but_nginx_health_needs_a_key(keyed: Nginx, keys: Keys) -> None:
    row = orjson.dumps(make_rows(1, 31)[0])
    with httpx.Client(base_url=keyed.url, timeout=10) as client:
        for headers in ({}, {"X-API-Key": "not-a-key"}, {"X-API-Key": ""}):
            assert_problem(client.post("/predict", content=row, headers=headers), 401, "unauthorized")
            for path in ("/model", "/docs", "/openapi.json", "/health/ready", "/health/live"):
                assert_problem(client.get(path, headers=headers), 401, "unauthorized")
        assert client.get("/health").json() == {"status": "ok"}


def test_a_key_opens_them(keyed: Nginx, keys: Keys, approved_compiled: CompiledModel) -> None:
    body = orjson.dumps(make_rows(1, 32)[0])
    with httpx.Client(base_url=keyed.url, timeout=10, headers={"X-API-Key": keys.bob}) as client:
        answer = client.post("/predict", content=body, headers=JSON)
        assert answer.status_code == 200 and answer.json() == score(approved_compiled, body)
        model = client.get("/model")
        assert model.status_code == 200 and model.json()["version"] == "v1"
        assert model.json()["name"] == "propensity"
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert "/predict" in client.get("/openapi.json").json()["paths"]
        assert client.get("/health/ready").json()["status"] == "ready"
        assert_problem(client.get("/.large/predict"), 404, "http-404")  # nginx's internal location


def test_the_rate_limit_counts_per_client_key(keyed: Nginx, keys: Keys) -> None:
    body = orjson.dumps(make_rows(1, 33)[0])
    headers = {**JSON, "X-API-Key": keys.alice}
    with httpx.Client(base_url=keyed.url, timeout=10) as client:
        started = time.monotonic()
        answers = [client.post("/predict", content=body, headers=headers) for _ in range(30)]
        refilled = RATE * (time.monotonic() - started)  # what the rate let through meanwhile
        # alice is over her rate; bob, from the same address, is not
        other = client.post("/predict", content=body, headers={**headers, "X-API-Key": keys.bob})
    statuses = [a.status_code for a in answers]
    # nodelay: the first request and the burst pass at once, then only what the rate refills
    assert statuses[: BURST + 1] == [200] * (BURST + 1), statuses
    assert statuses.count(200) <= BURST + 2 + refilled, statuses
    for answer in answers:
        if answer.status_code == 429:
            problem = assert_problem(answer, 429, "rate-limited")
            assert answer.headers["retry-after"] == "1" and "retry" in problem["detail"]
    assert other.status_code == 200


# --- large requests -------------------------------------------------------------------------------------
def padded(body: bytes, length: int) -> bytes:
    """The same JSON, `length` bytes long (trailing whitespace is valid JSON)."""
    assert len(body) <= length
    return body + b" " * (length - len(body))


@contextlib.contextmanager
def held_upload(nginx: Nginx, body: bytes) -> Iterator[http.client.HTTPConnection]:
    """A large /predict whose body stops after its first KiB: it holds one of nginx's large-request slots
    (held from the request's headers to the end of its answer) until `finish` sends the rest."""
    conn = http.client.HTTPConnection("127.0.0.1", nginx.config.nginx_port, timeout=20)
    try:
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(message_body=body[:1024])
        yield conn
    finally:
        conn.close()


def finish(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
    conn.send(body[1024:])
    response = conn.getresponse()
    return response.status, response.read()


def both_slots_held(nginx: Nginx, body: bytes) -> bool:
    """A large request is refused: the two held uploads have both slots (a probe that got one instead
    is answered and gives it back before the next)."""
    with httpx.Client(base_url=nginx.url, timeout=10, headers=JSON) as client:
        return client.post("/predict", content=body).status_code == 503


def test_large_requests_over_the_limit_get_503_and_none_is_reset(
    bounded: Nginx, approved_compiled: CompiledModel
) -> None:
    rows = make_rows(150, 34)  # ~350 KB of strings: large
    large = orjson.dumps(rows)
    assert len(large) > LARGE
    one = orjson.dumps(rows[0])
    with held_upload(bounded, large) as first, held_upload(bounded, large) as second:
        assert wait_until(lambda: both_slots_held(bounded, large), 10.0)
        # every further large request is refused before its body is read
        flood = LoadRunner(
            bounded.url, [post("/predict", large)], total=24, concurrency=8, deadline_seconds=30
        ).run()
        with httpx.Client(base_url=bounded.url, timeout=10, headers=JSON) as client:
            refused = client.post("/predict", content=padded(one, LARGE))
            chunked = client.post("/predict", content=iter([one]))  # no length: counted as large
            small = client.post("/predict", content=padded(one, LARGE - 1))
            small_batch = client.post("/predict", content=orjson.dumps(rows[:50]))
        answers = [finish(first, large), finish(second, large)]

    assert flood.statuses == {503: 24} and not flood.errors, flood.summary()  # answered, never reset
    for response in (refused, chunked):
        problem = assert_problem(response, 503, "overloaded")
        assert response.headers["retry-after"] == "1" and "2 requests" in problem["detail"]
    assert small.status_code == 200 and small.json() == score(approved_compiled, one)
    assert small_batch.status_code == 200 and len(small_batch.json()) == 50
    expected = score(approved_compiled, large)
    for status, body in answers:  # the held ones were served once their bodies arrived
        assert status == 200 and json.loads(body) == expected
    with httpx.Client(base_url=bounded.url, timeout=30, headers=JSON) as client:  # the slots are free
        again = client.post("/predict", content=large)
        assert again.status_code == 200 and again.json() == expected
