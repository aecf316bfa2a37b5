"""The gunicorn worker: uvicorn's, with each response leaving in one write.

uvicorn writes a response's status line and headers, then its body, as two socket writes. A replica
killed between the two (SIGKILL, OOM) leaves nginx holding headers with no body: the response is
already committed to the client, so nginx cannot retry it elsewhere, and the client sees a broken
response. Coalescing the writes made in one event-loop turn into a single `writelines` (one writev)
closes that window: a response (up to the socket buffer's size: every single-row answer) is either
entirely in the kernel, which still delivers it after the process dies, or not sent at all, and then
nginx retries the request on another replica. It also saves a syscall per response.

Request headers have a deadline: uvicorn's only timer is the keep-alive between two requests, so a
client that connects and sends nothing, or half its headers, would hold a connection for as long as it
likes. Each connection notes when its current request's headers began (`headers_since`, a float: the
single-row path pays no timer), and one sweep per worker, about every second, closes every connection
whose headers have taken longer than PROPENSITY_HEADER_READ_TIMEOUT_SECONDS. A keep-alive connection idle
between two requests is not timed here: that is the keep-alive's.

A worker also takes the GIL back sooner: while a worker thread scores a big batch
(service/serving/pipeline.py), the event loop waits up to the interpreter's switch interval each time it
needs the GIL, several times per small request; a shorter interval keeps that wait short.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
import weakref
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

GIL_SWITCH_SECONDS = 0.001  # CPython's default is five times longer
HEADER_SWEEP_SECONDS = 1.0

with warnings.catch_warnings():  # uvicorn.workers points at the separate uvicorn-worker package; same class
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker


class CoalescingTransport:
    """Wraps a transport: writes made in the same loop turn go out together at the end of the turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # everything else is the real transport's
        return getattr(self._transport, name)


class HeaderDeadline:
    """One per event loop: every `interval`, closes the connections whose request headers began more than
    `timeout` seconds ago. It runs while there are connections and starts again with the next one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: Iterable[Any], timeout: float) -> None:
        self.loop = loop
        self.connections = connections
        self.timeout = timeout
        self.interval = min(HEADER_SWEEP_SECONDS, timeout / 4)
        self.closed = 0  # connections closed for slow headers (tests read it)
        self._scheduled = False

    def ensure_running(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_later(self.interval, self._sweep)

    def _sweep(self) -> None:
        self._scheduled = False
        stale = self.loop.time() - self.timeout
        live = False
        for conn in list(self.connections):
            since = getattr(conn, "headers_since", None)
            cycle = getattr(conn, "cycle", None)
            busy = cycle is not None and not cycle.response_complete  # a pipelined request waits for it
            if since is not None and since <= stale and not busy:
                conn.headers_since = None
                self.closed += 1
                conn.transport.close()
            else:
                live = True
        if live:
            self.ensure_running()


_DEADLINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HeaderDeadline] = weakref.WeakKeyDictionary()


def header_deadline(
    loop: asyncio.AbstractEventLoop, connections: Iterable[Any], timeout: float
) -> HeaderDeadline:
    deadline = _DEADLINES.get(loop)
    if deadline is None:
        deadline = _DEADLINES[loop] = HeaderDeadline(loop, connections, timeout)
    return deadline


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = 10.0  # Worker.init_process sets PROPENSITY_HEADER_READ_TIMEOUT_SECONDS
    headers_since: float | None = None  # when the current request's headers began; None once they are in

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)  # type: ignore[arg-type]
        self.headers_since = self.loop.time()  # the first request's headers are due from the connect on
        header_deadline(self.loop, self.connections, self.header_timeout).ensure_running()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.headers_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self.headers_since = None
        super().on_headers_complete()


class Worker(UvicornWorker):
    """gunicorn worker class: `worker_class = "service.api.worker.Worker"`."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": CoalescingHttpToolsProtocol}

    def init_process(self) -> None:
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        CoalescingHttpToolsProtocol.header_timeout = Settings().header_read_timeout_seconds
        super().init_process()
