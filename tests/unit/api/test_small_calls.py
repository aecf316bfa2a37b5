"""The middleware counts the small calls in flight (SmallCallsFirst): bodies below the offload size and
requests without a body; not big or chunked bodies, which go to a worker thread."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from service.api.app import ObservabilityMiddleware
from service.serving.metrics import Metrics
from service.serving.turns import SmallCallsFirst


def in_flight_seen(headers: list[tuple[bytes, bytes]], *, fail: bool = False) -> tuple[int, int]:
    """(small calls in flight while the app ran, after it returned)."""
    turns = SmallCallsFirst()
    seen: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(turns.in_flight)
        if fail:
            raise RuntimeError("the app failed")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    metrics = Metrics(CollectorRegistry(), flush_interval=3600)
    middleware = ObservabilityMiddleware(app, metrics, turns=turns, small_below_bytes=1000)
    scope = {"type": "http", "path": "/predict", "method": "POST", "headers": headers}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def run() -> None:
        try:
            await middleware(scope, receive, send)
        except RuntimeError:
            assert fail

    anyio.run(run)
    return seen[0], turns.in_flight


@pytest.mark.parametrize(
    ("headers", "counted"),
    [
        ([], 1),  # GET /health/ready, say
        ([(b"content-length", b"999")], 1),
        ([(b"content-length", b"1000")], 0),
        ([(b"content-length", b"junk")], 0),
        ([(b"transfer-encoding", b"chunked")], 0),
    ],
)
def test_small_calls_are_counted_while_they_run(headers: list[tuple[bytes, bytes]], counted: int) -> None:
    assert in_flight_seen(headers) == (counted, 0)


def test_a_failing_call_is_uncounted_too() -> None:
    assert in_flight_seen([(b"content-length", b"10")], fail=True) == (1, 0)
