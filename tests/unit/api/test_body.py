"""Reading a request for the pipeline: the headers it needs, and bodies without a Content-Length."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import orjson

from service.api.state import AppState
from service.model.registry import Registry
from service.model.schema import example_rows
from tests.conftest import app_client
from tests.unit.api.test_load_shedding import JSON, asgi_post, make_app, served

ROW: dict[str, Any] = example_rows()["rows"][0]


def chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """A body sent in pieces without a Content-Length (a chunked upload)."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_a_chunked_body_over_the_limit_is_a_413(approved_registry: Registry) -> None:
    with app_client(approved_registry, max_body_bytes=4096) as client:
        big = orjson.dumps([ROW] * 5)
        r = client.post("/predict", content=chunked(big), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")
        assert r.json()["limit_bytes"] == 4096


def test_a_chunked_body_is_hashed_after_it_arrived_and_cached(approved_registry: Registry) -> None:
    with app_client(approved_registry, cache_min_body_bytes=1000) as client:
        body = orjson.dumps([ROW] * 3)
        assert len(body) > 1000
        headers = {"content-type": "application/json"}
        first = client.post("/predict", content=chunked(body), headers=headers)
        again = client.post("/predict", content=body, headers=headers)  # the same bytes, with a length
        assert first.status_code == again.status_code == 200 and "x-cache" not in first.headers
        assert again.headers["x-cache"] == "hit" and again.content == first.content


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_body_that_stops_arriving_is_a_408_that_closes_the_connection(
    approved_registry: Registry,
) -> None:
    app = make_app(approved_registry, body_read_timeout_seconds=15)
    body = orjson.dumps([ROW] * 20)
    clock = Clock()
    answered: list[tuple[int, dict[str, str], bytes]] = []
    sender, messages = anyio.create_memory_object_stream[dict[str, Any]](10)

    async def post() -> None:
        length = [(b"content-length", str(len(body)).encode())]
        answered.append(await asgi_post(app, messages.receive, length))

    async def scenario() -> None:
        async with served(app) as client, sender, messages:
            reads = AppState.of(app).body_reads
            reads.clock = clock
            async with anyio.create_task_group() as tg:
                tg.start_soon(post)
                await sender.send({"type": "http.request", "body": body[:100], "more_body": True})
                await wait_for(lambda: AppState.of(app).pipeline.budget.bytes == len(body))
                clock.now += 14.9
                reads.check()
                await sender.send({"type": "http.request", "body": body[100:200], "more_body": True})
                await anyio.sleep(0.01)  # the read takes the chunk: it made progress
                clock.now += 14.9
                reads.check()
                await anyio.sleep(0.01)
                assert not answered and not reads.expired  # bytes arrived within the timeout
                clock.now += 0.2
                reads.check()
            ((status, headers, raw),) = answered
            problem = orjson.loads(raw)
            assert status == 408 and headers["content-type"] == "application/problem+json"
            assert problem["type"].endswith("/problems/body-timeout") and "15 s" in problem["detail"]
            assert problem["timeout_seconds"] == 15
            assert headers["connection"] == "close"  # the rest of this body is not waited for
            assert AppState.of(app).pipeline.budget.bytes == 0 and not reads.reading
            r = await client.post("/predict", content=orjson.dumps(ROW), headers=JSON)  # still serving
            assert r.status_code == 200

    anyio.run(scenario)


def test_the_watchdog_ends_a_stalled_read_by_itself(approved_registry: Registry) -> None:
    app = make_app(approved_registry, body_read_timeout_seconds=0.2)
    answered: list[int] = []

    async def stalls() -> dict[str, Any]:
        if not answered:
            answered.append(0)
            return {"type": "http.request", "body": b"[", "more_body": True}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def scenario() -> None:
        async with served(app):
            with anyio.fail_after(30):
                status, _, _ = await asgi_post(app, stalls, [(b"content-length", b"1000")])
            assert status == 408

    anyio.run(scenario)


def test_a_stalled_read_that_is_cancelled_otherwise_stays_cancelled(approved_registry: Registry) -> None:
    """A shutdown's cancellation is not turned into a 408: only the watchdog's own is."""
    app = make_app(approved_registry)

    async def stalls() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def scenario() -> None:
        async with served(app):
            with anyio.move_on_after(0.1) as scope:
                await asgi_post(app, stalls, [(b"content-length", b"1000")])
            assert scope.cancelled_caught
            assert not AppState.of(app).body_reads.reading

    anyio.run(scenario)


async def wait_for(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not predicate():
            await anyio.sleep(0.005)
