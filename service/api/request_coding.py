"""Request bodies sent compressed (Content-Encoding: gzip or deflate), decoded before anything reads them.

The decoded size is capped as it inflates: past PROPENSITY_MAX_BODY_BYTES the call is a 413 and the rest
is never inflated, so a decompression bomb costs the worker at most the cap (and the in-flight budget
takes the decoded bytes, so a worker's memory stays bounded whatever the ratio). "deflate" is the zlib
format (RFC 9110), and a raw deflate stream is read too, as browsers and some clients send it. A coding
this service cannot decode is a 415 whose Accept-Encoding header names the ones it can (RFC 7694).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from service.errors import PayloadTooLarge, UndecodableBody, UnsupportedContentEncoding
from service.serving.pipeline import Body

SUPPORTED = "gzip, deflate"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # with the gzip header and trailer
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_WBITS = -zlib.MAX_WBITS


def codings(header: str) -> list[str]:
    """The codings a Content-Encoding value lists, in the order they were applied (identity dropped);
    415 for one this service cannot decode."""
    applied = [c.strip().lower() for c in header.split(",") if c.strip()]
    for coding in applied:
        if coding not in ("gzip", "x-gzip", "deflate", "identity"):
            raise UnsupportedContentEncoding(
                f"Content-Encoding {coding[:40]!r} is not supported; send the body as is, or with "
                f"Content-Encoding: gzip or deflate",
                headers={"Accept-Encoding": SUPPORTED},
            )
    return [c for c in applied if c != "identity"]


def decode_body(body: Body, header: str, limit: int, hold: Callable[[int], None]) -> Body:
    """The body with its codings undone (last applied, first undone). `hold(size)` takes the decoded
    size from the worker's budget (503 when it does not fit) before the next coding inflates further."""
    applied = codings(header)
    if not applied:
        return body
    data = body.joined()
    for coding in reversed(applied):
        data = _inflate(data, coding, limit)
        hold(len(data))
    return Body([data], len(data))


def _wbits(data: bytes, coding: str) -> int:
    if coding != "deflate":
        return _GZIP_WBITS
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    return _ZLIB_WBITS if zlib_header else _RAW_WBITS


def _inflate(data: bytes, coding: str, limit: int) -> bytes:
    """One coding undone, at most `limit` bytes out (413 past it); gzip members one after another are
    one body (RFC 1952)."""
    name = "deflate" if coding == "deflate" else "gzip"
    wbits = _wbits(data, coding)
    out: list[bytes] = []
    size = 0
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=wbits)
        try:
            piece = inflater.decompress(rest, limit - size + 1)
        except zlib.error as exc:
            raise UndecodableBody(f"the body is not valid {name} data ({exc})") from None
        size += len(piece)
        if size > limit:
            raise PayloadTooLarge(
                f"the {name} body decodes to more than the limit of {limit} bytes", limit_bytes=limit
            )
        out.append(piece)
        if not inflater.eof:
            raise UndecodableBody(f"the {name} body is cut short (its stream does not end)")
        rest = inflater.unused_data
        if not rest or wbits != _GZIP_WBITS:
            break
    if rest:
        raise UndecodableBody(f"bytes follow the end of the {name} stream")
    return b"".join(out)
