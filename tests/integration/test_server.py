"""The API under real gunicorn + uvicorn workers on a free loopback port."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.servers import METRICS_SETTLE_SECONDS, Server, start_server
from tests.unit.api.test_bad_input import CASES


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("served")
    with start_server(root / "artifacts", root) as srv:  # empty registry: serve imports the approved model
        yield srv
        returncode = srv.stop()  # a clean shutdown, asserted here (the exit stops it anyway on failure)
    assert returncode == 0, srv.log.read_text()[-2000:]


def test_fresh_registry_serves_the_approved_model(
    server: Server, reference_rows: list[dict[str, Any]], reference_phat: list[float]
) -> None:
    r = httpx.post(
        server.url + "/predict",
        content=orjson.dumps(reference_rows),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200 and r.headers["x-model-version"] == "v1"
    assert max(abs(a["phat"] - b) for a, b in zip(r.json(), reference_phat, strict=True)) <= 1e-9
    assert r.headers["x-request-id"]


def test_no_serving_process_holds_the_training_stack(
    server: Server, reference_rows: list[dict[str, Any]]
) -> None:
    """The workers serve from scorer.json: no pandas, scikit-learn or statsmodels extension module is
    mapped into any of them (nor into the master), after they have scored."""
    for _ in range(4):
        httpx.post(server.url + "/predict", json=reference_rows)
    workers = server.worker_pids()
    assert len(workers) == 2
    for pid in [server.process.pid, *workers]:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert pid == server.process.pid or "/numpy/" in maps  # the check sees a worker's extensions
        held = {lib for lib in ("/pandas/", "/sklearn/", "/statsmodels/", "/joblib/") if lib in maps}
        assert not held, (pid, held)


def test_request_id_is_passed_through(server: Server, reference_rows: list[dict[str, Any]]) -> None:
    r = httpx.post(
        server.url + "/predict",
        content=orjson.dumps(reference_rows[0]),
        headers={"content-type": "application/json", "x-request-id": "abc-123"},
    )
    assert r.headers["x-request-id"] == "abc-123"


def test_bad_input_never_500_and_never_kills_a_worker(server: Server) -> None:
    before = server.worker_pids()
    assert len(before) == 2
    with httpx.Client(base_url=server.url) as client:
        for name, body, headers, status, _, _ in CASES:
            r = client.post("/predict", content=body, headers=headers)
            assert r.status_code == status, (name, r.text)
            assert r.headers["content-type"] == "application/problem+json"
    assert server.worker_pids() == before
    assert server.process.poll() is None


def test_metrics_aggregate_across_workers(server: Server, reference_rows: list[dict[str, Any]]) -> None:
    with httpx.Client(base_url=server.url) as client:
        time.sleep(METRICS_SETTLE_SECONDS)  # the earlier tests' requests are all written
        before = _predict_200(client.get("/metrics").text)
        for _ in range(200):
            client.post(
                "/predict",
                content=orjson.dumps(reference_rows[0]),
                headers={"content-type": "application/json"},
            )
        time.sleep(METRICS_SETTLE_SECONDS)  # every worker has written its counts
        after = _predict_200(client.get("/metrics").text)
    assert after - before == 200


def _predict_200(text: str) -> float:
    for line in text.splitlines():
        if (
            line.startswith("propensity_http_requests_total")
            and 'route="/predict"' in line
            and '"200"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_serve_writes_the_registry(server: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    root = Path(str(server.log)).parent / "artifacts" / "propensity"
    assert (root / "v1" / "metadata.json").is_file() and (root / "aliases.json").is_file()


def test_a_hostile_host_header_is_not_reflected(server: Server) -> None:
    for method, path in (("POST", "/predict/"), ("GET", "/health/ready/"), ("GET", "/docs/")):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.request(method, path, b"{}", {"Host": "evil.example", "Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        assert response.status == 404, (path, response.status)
        assert response.getheader("Location") is None
        assert b"evil" not in body and not any("evil" in v for _, v in response.getheaders())


def test_readiness_names_the_version_but_no_path_or_hash(server: Server) -> None:
    ready = httpx.get(server.url + "/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": "propensity", "version": "v1"}
