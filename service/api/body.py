"""A request as the scoring pipeline takes it: the headers it needs and the body, chunk by chunk.

A body that stops arriving is ended by `BodyReads`, a watchdog over the reads in flight: a client that
reaches a worker directly (not through nginx, whose client_body_timeout does the same) and sends no body
bytes for PROPENSITY_BODY_READ_TIMEOUT_SECONDS gets a 408 and its connection is closed, so a slow-loris
client holds neither a worker's budget nor its memory for long. One watchdog task per worker checks the
reads every second or so: a read costs its request a dict entry, not a timer of its own (asyncio.timeout
costs several microseconds per request; the single-row path is a few hundred).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from service.errors import BodyReadTimeout, PayloadTooLarge
from service.serving.pipeline import Body, Call


class BodyReads:
    """The body reads in flight (task -> when it last got bytes) and the watchdog that cancels a read
    that got none for `timeout` seconds; the read then raises BodyReadTimeout (408)."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self.reading: dict[asyncio.Task[object], float] = {}
        self.expired: set[asyncio.Task[object]] = set()

    def check(self) -> None:
        """Cancel every read that has been waiting too long. A read is always suspended in `receive()`
        when this runs (one thread), so the cancellation arrives there."""
        stale = self.clock() - self.timeout
        for task, since in list(self.reading.items()):
            if since <= stale and task not in self.expired:
                self.expired.add(task)
                task.cancel()

    async def watch(self) -> None:
        """The watchdog: checks about four times per timeout, at least once a second."""
        interval = min(1.0, self.timeout / 4)
        while True:
            await asyncio.sleep(interval)
            self.check()


async def read_body(
    request: Request,
    limit: int,
    hasher: Any = None,
    *,
    call: Call | None = None,
    reads: BodyReads | None = None,
) -> Body:
    """The body as it arrived (chunks, total size), each chunk fed to the hasher (the call's, when a call
    is given) as it arrives. 413 past `limit` bytes; with a call, 503 when a body longer than declared
    (chunked) outgrows the worker's budget; with `reads`, 408 after `reads.timeout` seconds without a
    byte. Kept in chunks so a cache hit never copies a big body into one buffer."""
    if call is not None:
        hasher = call.hasher
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    if reads is None:
        while True:
            message = await receive()
            size = _took(message, chunks, size, limit, call, hasher)
            if not message.get("more_body", False):
                return Body(chunks, size, hasher)
    task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
    reading = reads.reading
    reading[task] = reads.clock()
    try:
        while True:
            message = await receive()
            size = _took(message, chunks, size, limit, call, hasher)
            if not message.get("more_body", False):
                return Body(chunks, size, hasher)
            reading[task] = reads.clock()
    except asyncio.CancelledError:
        if task in reads.expired and task.uncancel() == 0:
            raise BodyReadTimeout(
                f"no body bytes arrived for {reads.timeout:g} s ({size} received); the connection is closed",
                timeout_seconds=reads.timeout,
            ) from None
        raise
    finally:
        del reading[task]
        if reads.expired:
            reads.expired.discard(task)


def _took(
    message: Message, chunks: list[bytes], size: int, limit: int, call: Call | None, hasher: Any
) -> int:
    """One ASGI receive message taken into the body: the size so far."""
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    chunk: bytes = message.get("body", b"")
    if chunk:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit_bytes=limit)
        if call is not None and size > call.held_bytes:
            call.hold_bytes(size)
        chunks.append(chunk)
        if hasher is not None:
            hasher.update(chunk)
    return size
