"""The gunicorn worker's transport: the writes of one loop turn leave together, at the end of the turn."""

from __future__ import annotations

import asyncio
import socket

from service.api.worker import CoalescingTransport


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
