"""The gunicorn worker's transport: the writes of one loop turn leave together, at the end of the turn."""

from __future__ import annotations

import asyncio
import socket

from service.api.worker import CoalescingTransport, HeaderDeadline


async def _exercise() -> tuple[bytes, bytes, bool]:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    wrapped = CoalescingTransport(transport, loop)
    wrapped.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
    try:
        early = peer.recv(1024)  # nothing may have left yet: the headers wait for the body
    except BlockingIOError:
        early = b""
    wrapped.write(b"{}")
    await asyncio.sleep(0.05)
    late = peer.recv(1024)
    wrapped.close()
    await asyncio.sleep(0)
    closing = transport.is_closing()
    peer.close()
    return early, late, closing


def test_headers_and_body_leave_in_one_write_at_the_end_of_the_turn() -> None:
    early, late, closing = asyncio.run(_exercise())
    assert early == b""
    assert late == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert closing


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Cycle:
    def __init__(self, response_complete: bool) -> None:
        self.response_complete = response_complete


class _Conn:
    def __init__(self, headers_since: float | None, cycle: _Cycle | None = None) -> None:
        self.headers_since = headers_since
        self.cycle = cycle
        self.transport = _Transport()


def test_the_header_sweep_closes_only_connections_whose_headers_are_late() -> None:
    loop = asyncio.new_event_loop()
    try:
        now = loop.time()
        late, fresh, idle = _Conn(now - 60), _Conn(now + 60), _Conn(None)
        pipelined = _Conn(now - 60, _Cycle(response_complete=False))  # waits for its previous answer
        deadline = HeaderDeadline(loop, {late, fresh, idle, pipelined}, timeout=0.04)
        deadline.ensure_running()
        deadline.ensure_running()  # one sweep scheduled, not two
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.close()
    assert late.transport.closed and late.headers_since is None and deadline.closed == 1
    assert not any(c.transport.closed for c in (fresh, idle, pipelined))
