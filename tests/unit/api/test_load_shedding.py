"""Load shedding on /predict: a call that does not fit the worker's in-flight budget is a 503 problem+json
with Retry-After, answered before its body is read; what fits is scored as usual; every call gives its
share back, however it ends (an answer, an error, a client gone, a cancelled task)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx
import orjson
import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.api.state import AppState
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.admission import Budget
from service.serving.batch import Batch
from service.serving.scorer import Scored
from service.settings import Settings

ROWS: list[dict[str, Any]] = example_rows()["rows"]
PHAT = [e["phat"] for e in example_rows()["expected"]]
JSON = {"content-type": "application/json"}
Receive = Callable[[], Awaitable[dict[str, Any]]]


def make_app(registry: Registry, **overrides: Any) -> FastAPI:
    return create_app(
        Settings(artifacts_dir=registry.root, reload_interval_seconds=0, cache_enabled=False, **overrides)
    )


def budget_of(app: FastAPI) -> Budget:
    return AppState.of(app).pipeline.budget


def lean_rows(app: FastAPI, n: int) -> list[dict[str, Any]]:
    """n rows with only the model's columns: small bodies for many rows."""
    model = AppState.of(app).holder.current
    assert model is not None
    return [{k: ROWS[i % 5].get(k) for k in model.used_columns} for i in range(n)]


class Gate:
    """Holds the scoring of a batch of `rows` rows (in its worker thread) until opened."""

    def __init__(self, app: FastAPI, rows: int) -> None:
        model = AppState.of(app).holder.current
        assert model is not None
        self.rows, self.started, self.open = rows, threading.Event(), threading.Event()
        real = model.score_batch

        def gated(batch: Batch, **kwargs: Any) -> Scored:
            if len(batch) == self.rows:
                self.started.set()
                assert self.open.wait(30)
            return real(batch, **kwargs)

        model.score_batch = gated  # type: ignore[method-assign]

    async def wait_started(self) -> None:
        assert await anyio.to_thread.run_sync(self.started.wait, 30)


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def asgi_post(
    app: FastAPI, receive: Receive, headers: list[tuple[bytes, bytes]]
) -> tuple[int, dict[str, str], bytes]:
    """One POST /predict straight through the ASGI interface, with a receive of the test's making."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, rest = sent[0], sent[1:]
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], head, b"".join(m.get("body", b"") for m in rest)


def assert_overloaded(status: int, headers: dict[str, str], body: bytes, limit: str) -> dict[str, Any]:
    problem: dict[str, Any] = orjson.loads(body)
    assert status == 503 and headers["content-type"] == "application/problem+json"
    assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1
    assert problem["type"].endswith("/problems/overloaded") and problem["status"] == 503
    assert limit in problem["detail"], problem
    assert "connection" not in headers  # the connection stays up: its body is drained, not reset
    return problem


def shed(app: FastAPI, reason: str) -> float | None:
    metrics = AppState.of(app).metrics
    metrics.buffer.flush()
    return metrics.registry.get_sample_value("propensity_requests_shed_total", {"reason": reason})


def test_a_body_that_does_not_fit_is_refused_before_it_is_read(approved_registry: Registry) -> None:
    app = make_app(approved_registry, max_body_bytes=600_000, max_inflight_bytes=1_000_000)

    async def scenario() -> None:
        async with served(app) as client:
            rows = lean_rows(app, 3000)
            big = orjson.dumps(rows)
            assert 500_000 < len(big) < 600_000  # one fits, two do not
            gate = Gate(app, 3000)
            async with anyio.create_task_group() as tg:
                first: dict[str, httpx.Response] = {}

                async def send_first() -> None:
                    first["r"] = await client.post("/predict", content=big, headers=JSON)

                tg.start_soon(send_first)
                await gate.wait_started()
                assert budget_of(app).bytes == len(big) and budget_of(app).rows == 3000
                reads: list[int] = []

                async def receive() -> dict[str, Any]:
                    reads.append(1)
                    return {"type": "http.request", "body": big, "more_body": False}

                length = [(b"content-length", str(len(big)).encode())]
                status, headers, body = await asgi_post(app, receive, length)
                assert_overloaded(status, headers, body, "PROPENSITY_MAX_INFLIGHT_BYTES")
                assert reads == []  # refused from its Content-Length, before a byte of it was read
                small = await client.post("/predict", content=orjson.dumps(ROWS[2]), headers=JSON)
                assert small.status_code == 200 and small.json()["phat"] == pytest.approx(PHAT[2], abs=1e-9)
                gate.open.set()
            answer = first["r"]
            assert answer.status_code == 200
            assert [r["phat"] for r in answer.json()[:5]] == pytest.approx(PHAT, abs=1e-9)
            assert (budget_of(app).rows, budget_of(app).bytes) == (0, 0)
            again = await client.post("/predict", content=big, headers=JSON)  # fits again now
            assert again.status_code == 200 and again.content == answer.content
            assert shed(app, "bytes") == 1.0 and shed(app, "rows") == 0.0

    anyio.run(scenario)


def test_rows_that_do_not_fit_are_refused_once_they_are_known(approved_registry: Registry) -> None:
    """(A call decoded in a worker thread takes its rows there: tests/unit/serving/test_admission.py.)"""
    app = make_app(approved_registry, max_rows=1000, max_inflight_rows=1000)
    second = orjson.dumps(ROWS)

    async def scenario() -> None:
        async with served(app) as client:
            gate = Gate(app, 1000)
            async with anyio.create_task_group() as tg:
                first: dict[str, httpx.Response] = {}

                async def send_first() -> None:
                    body = orjson.dumps(lean_rows(app, 1000))
                    first["r"] = await client.post("/predict", content=body, headers=JSON)

                tg.start_soon(send_first)
                await gate.wait_started()
                r = await client.post("/predict", content=second, headers=JSON)
                problem = assert_overloaded(
                    r.status_code, dict(r.headers), r.content, "PROPENSITY_MAX_INFLIGHT_ROWS"
                )
                assert problem["reason"] == "rows" and "1000" in problem["detail"]
                assert budget_of(app).rows == 1000  # the refused call took none
                gate.open.set()
            assert first["r"].status_code == 200 and len(first["r"].json()) == 1000
            assert (budget_of(app).rows, budget_of(app).bytes) == (0, 0)
            r = await client.post("/predict", content=second, headers=JSON)
            assert r.status_code == 200
            assert [row["phat"] for row in r.json()] == pytest.approx(PHAT, abs=1e-9)
            assert shed(app, "rows") == 1.0

    anyio.run(scenario)


def test_a_chunked_body_is_refused_when_it_outgrows_the_budget(approved_registry: Registry) -> None:
    app = make_app(approved_registry, max_body_bytes=600_000, max_inflight_bytes=1_000_000)

    async def scenario() -> None:
        async with served(app) as client:
            big = orjson.dumps(lean_rows(app, 3000))
            gate = Gate(app, 3000)

            async def chunked() -> AsyncIterator[bytes]:
                for i in range(0, len(big), 50_000):
                    yield big[i : i + 50_000]

            async with anyio.create_task_group() as tg:
                first: dict[str, httpx.Response] = {}

                async def send_first() -> None:
                    first["r"] = await client.post("/predict", content=big, headers=JSON)

                tg.start_soon(send_first)
                await gate.wait_started()
                r = await client.post("/predict", content=chunked(), headers=JSON)
                assert "content-length" not in r.request.headers
                assert_overloaded(r.status_code, dict(r.headers), r.content, "PROPENSITY_MAX_INFLIGHT_BYTES")
                assert budget_of(app).bytes == len(big)  # the refused body's chunks were given back
                gate.open.set()
            assert first["r"].status_code == 200
            r = await client.post("/predict", content=chunked(), headers=JSON)  # alone, it fits
            assert r.status_code == 200 and r.content == first["r"].content
            assert (budget_of(app).rows, budget_of(app).bytes) == (0, 0)

    anyio.run(scenario)


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        ("bad rows", orjson.dumps([ROWS[0], dict(ROWS[1], x44="abc")]), 422),
        ("malformed", b'[{"x44": 1,', 400),
        ("too many rows", orjson.dumps([ROWS[0]] * 11), 413),
        ("answered", orjson.dumps(ROWS), 200),
    ],
)
def test_every_answer_gives_the_budget_back(
    approved_registry: Registry, name: str, body: bytes, status: int
) -> None:
    app = make_app(approved_registry, max_rows=10, max_inflight_rows=10)

    async def scenario() -> None:
        async with served(app) as client:
            for _ in range(3):  # a leak would refuse the later ones
                r = await client.post("/predict", content=body, headers=JSON)
                assert r.status_code == status, (name, r.text)
                assert (budget_of(app).rows, budget_of(app).bytes) == (0, 0), name

    anyio.run(scenario)


def test_a_failure_in_the_worker_thread_gives_the_budget_back(approved_registry: Registry) -> None:
    app = make_app(approved_registry)

    async def scenario() -> None:
        async with served(app) as client:
            model = AppState.of(app).holder.current
            assert model is not None

            def broken(batch: Batch, **kwargs: Any) -> Scored:
                raise RuntimeError("scoring failed")

            model.score_batch = broken  # type: ignore[method-assign]
            r = await client.post("/predict", content=orjson.dumps(lean_rows(app, 2000)), headers=JSON)
            assert r.status_code == 500
            assert (budget_of(app).rows, budget_of(app).bytes) == (0, 0)

    anyio.run(scenario)


def test_a_client_gone_mid_body_gives_the_budget_back(approved_registry: Registry) -> None:
    app = make_app(approved_registry)
    body = orjson.dumps(ROWS * 20)
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:500], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def scenario() -> None:
        async with served(app):
            status, _, _ = await asgi_post(app, receive, [(b"content-length", str(len(body)).encode())])
            assert status == 499  # nobody reads it; counted, not a traceback
            assert (budget_of(app).rows, budget_of(app).bytes) == (0, 0)

    anyio.run(scenario)


def test_a_cancelled_call_gives_the_budget_back(approved_registry: Registry) -> None:
    app = make_app(approved_registry)
    body = orjson.dumps(ROWS * 20)
    reading = anyio.Event()

    async def receive() -> dict[str, Any]:
        if not reading.is_set():
            reading.set()
            return {"type": "http.request", "body": body[:500], "more_body": True}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def scenario() -> None:
        async with served(app):
            async with anyio.create_task_group() as tg:
                tg.start_soon(asgi_post, app, receive, [(b"content-length", str(len(body)).encode())])
                await reading.wait()
                await anyio.sleep(0.05)
                assert budget_of(app).bytes == len(body)
                tg.cancel_scope.cancel()  # a worker shutting down, say
            assert (budget_of(app).rows, budget_of(app).bytes) == (0, 0)

    anyio.run(scenario)
