"""The gunicorn worker: uvicorn's, with each response leaving in one write.

uvicorn writes a response's status line and headers, then its body, as two socket writes. A replica
killed between the two (SIGKILL, OOM) leaves nginx holding headers with no body: the response is
already committed to the client, so nginx cannot retry it elsewhere, and the client sees a broken
response. Coalescing the writes made in one event-loop turn into a single `writelines` (one writev)
closes that window: a response (up to the socket buffer's size: every single-row answer) is either
entirely in the kernel, which still delivers it after the process dies, or not sent at all, and then
nginx retries the request on another replica. It also saves a syscall per response.

A worker also takes the GIL back sooner: while a worker thread scores a big batch
(service/serving/pipeline.py), the event loop waits up to the interpreter's switch interval each time it
needs the GIL, several times per small request; a shorter interval keeps that wait short.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

GIL_SWITCH_SECONDS = 0.001  # CPython's default is five times longer

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


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)  # type: ignore[arg-type]


class Worker(UvicornWorker):
    """gunicorn worker class: `worker_class = "service.api.worker.Worker"`."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": CoalescingHttpToolsProtocol}

    def init_process(self) -> None:
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        super().init_process()
