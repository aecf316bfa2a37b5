"""Faults and hostile traffic against a real gunicorn worker: concurrent big batches are shed, not queued
(every answer a 200 with the right rows or a 503 with Retry-After; none reset; the worker's peak memory
bounded by its budget), and a body that stops arriving is a 408 that gives the budget back."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.serving.scorer import CompiledModel
from tests.servers import METRICS_SETTLE_SECONDS, Server, start_server, wait_until
from tools.bench.payloads import all_strings, batch_body, batch_rows

JSON = {"content-type": "application/json"}
BUDGET_BYTES = 24_000_000  # one 10,000-row all-string body (~23 MB) at a time
CONCURRENT = 8
ROUNDS = 3  # at most this many bursts, until one has had a request shed


def worker_hwm(pid: int) -> int:
    """The worker's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def shed_total(server: Server) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith('propensity_requests_shed_total{reason="bytes"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def big_rows() -> list[dict[str, Any]]:
    return all_strings(batch_rows(10_000))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("faults")
    env = {
        "PROPENSITY_MAX_BODY_BYTES": str(BUDGET_BYTES),
        "PROPENSITY_MAX_INFLIGHT_BYTES": str(BUDGET_BYTES),
        "PROPENSITY_MAX_INFLIGHT_ROWS": "10000",
        "PROPENSITY_CACHE_ENABLED": "false",  # every request is scored, none answered from the cache
        "PROPENSITY_BODY_READ_TIMEOUT_SECONDS": "3",
        "PROPENSITY_HEADER_READ_TIMEOUT_SECONDS": "1",
    }
    with start_server(root / "artifacts", root, workers=1, env=env) as srv:
        yield srv


def post_all(server: Server, body: bytes, n: int) -> list[httpx.Response | Exception]:
    """`n` POSTs of `body` started together, each on its own connection."""
    results: list[httpx.Response | Exception] = []
    start = threading.Barrier(n)

    def post() -> None:
        with httpx.Client(timeout=120) as client:
            start.wait()
            try:
                results.append(client.post(server.url + "/predict", content=body, headers=JSON))
            except httpx.HTTPError as exc:  # a reset or a broken connection
                results.append(exc)

    threads = [threading.Thread(target=post) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_big_batches_are_shed_not_queued(
    server: Server, big_rows: list[dict[str, Any]], approved_compiled: CompiledModel
) -> None:
    body = batch_body(big_rows)
    assert 20_000_000 < len(body) <= BUDGET_BYTES
    [pid] = server.worker_pids()
    alone = httpx.post(server.url + "/predict", content=body, headers=JSON, timeout=120)
    assert alone.status_code == 200
    want = approved_compiled.score(big_rows[:200]).phat
    assert [r["phat"] for r in alone.json()[:200]] == pytest.approx(want, abs=1e-12)
    peak_before = worker_hwm(pid)  # a 10,000-row call's own peak is in here
    shed_before = shed_total(server)

    answers: list[httpx.Response | Exception] = []
    for _ in range(ROUNDS):
        answers += post_all(server, body, CONCURRENT)
        if any(isinstance(a, httpx.Response) and a.status_code == 503 for a in answers):
            break
    errors = [a for a in answers if isinstance(a, Exception)]
    assert not errors, errors  # none reset
    statuses = [a.status_code for a in answers if isinstance(a, httpx.Response)]
    assert set(statuses) == {200, 503}, statuses
    for answer in answers:
        assert isinstance(answer, httpx.Response)
        if answer.status_code == 200:
            assert answer.content == alone.content
            continue
        problem = answer.json()
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"].isdigit() and int(answer.headers["retry-after"]) >= 1
        assert problem["type"].endswith("/problems/overloaded") and problem["reason"] == "bytes"
        assert "PROPENSITY_MAX_INFLIGHT_BYTES" in problem["detail"]

    growth = worker_hwm(pid) - peak_before
    # Unbounded, each concurrent request adds its ~23 MB body (8 at once: +160 MiB here); within the
    # budget no more than one body is held beyond the lone call's peak.
    assert growth <= 2 * BUDGET_BYTES, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    assert server.worker_pids() == {pid}
    assert wait_until(
        lambda: shed_total(server) - shed_before == statuses.count(503), METRICS_SETTLE_SECONDS * 5
    )


def slow_loris(server: Server, declared: int) -> socket.socket:
    """A POST whose headers promise `declared` bytes of body, of which it sends 10 and then nothing."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b'[{"x5": "t')
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_stalled_body_is_a_408_that_gives_the_worker_back(server: Server) -> None:
    [pid] = server.worker_pids()
    row = orjson.dumps(batch_rows(1)[0])
    with slow_loris(server, BUDGET_BYTES) as loris:  # holds the whole byte budget while it stalls
        assert wait_until(
            lambda: httpx.post(server.url + "/predict", content=row, headers=JSON).status_code == 503, 2.5
        ), "the stalled body's bytes were not held"
        raw = read_all(loris)  # the worker answers, then closes
    head, _, payload = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0].startswith("HTTP/1.1 408"), raw[:300]
    assert headers["content-type"] == "application/problem+json" and headers["connection"] == "close"
    assert orjson.loads(payload)["type"].endswith("/problems/body-timeout")
    r = httpx.post(server.url + "/predict", content=row, headers=JSON)  # the budget is back
    assert r.status_code == 200 and 0.0 <= r.json()["phat"] <= 1.0
    assert server.worker_pids() == {pid} and server.process.poll() is None


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"],
    ids=["nothing", "half the headers"],
)
def test_a_connection_whose_headers_do_not_arrive_is_closed(server: Server, sent: bytes) -> None:
    """uvicorn has no header timeout of its own: the worker's sweep closes the connection (1 s here)."""
    [pid] = server.worker_pids()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(sent)
        assert read_all(sock) == b""  # closed by the worker, with nothing sent back (recv would time out)
    assert server.worker_pids() == {pid} and server.process.poll() is None


def test_an_idle_keep_alive_connection_outlives_the_header_timeout(server: Server) -> None:
    """Between two requests a connection is the keep-alive's (75 s), not the header deadline's."""
    row = orjson.dumps(batch_rows(1)[0])
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        answers, sockets = [], []
        for pause in (0.0, 2.5):  # the second after more than twice the 1 s header timeout
            time.sleep(pause)
            conn.request("POST", "/predict", body=row, headers=JSON)
            reply = conn.getresponse()  # RemoteDisconnected had the worker closed the idle connection
            answers.append((reply.status, reply.read()))
            sockets.append(conn.sock)
        assert sockets[0] is sockets[1] is not None  # one connection throughout
    finally:
        conn.close()
    assert answers[0] == answers[1] and answers[0][0] == 200
