"""A request as the scoring pipeline takes it: the headers it needs and the body, chunk by chunk."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import Scope

from service.errors import PayloadTooLarge
from service.serving.pipeline import Body


def request_head(scope: Scope) -> tuple[str | None, int | None, str | None]:
    """Content-Type, the declared Content-Length and Accept-Encoding (the first of each; None when absent,
    and a length that is not a number is not declared), in one pass over the raw headers (ASGI gives
    their names in lower case)."""
    content_type = content_length = accept_encoding = None
    for name, value in scope["headers"]:
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and content_length is None:
            content_length = value
        elif name == b"accept-encoding" and accept_encoding is None:
            accept_encoding = value.decode("latin-1")
    return content_type, _number(content_length), accept_encoding


def _number(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


async def read_body(request: Request, limit: int, hasher: Any = None) -> Body:
    """The body as it arrived (chunks, total size), refused past `limit` bytes; `hasher` (if any) is fed
    each chunk as it arrives. Kept in chunks so a cache hit never copies a big body into one buffer."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", limit_bytes=limit)
        if chunk:
            chunks.append(chunk)
            if hasher is not None:
                hasher.update(chunk)
    return Body(chunks, size, hasher)
