"""gzip for cached answers: compressed once when stored, sent as stored on every hit.

Through nginx a big answer is gzipped for every client that accepts it (megabytes of JSON for 10,000
rows, compressed again for every hit). For an answer the cache will store, the pipeline
gzips it itself when the client accepts gzip (nginx passes a response that already has a
Content-Encoding through untouched) and stores the gzip bytes: hits then cost no compression, Redis
moves and holds about half the bytes, and a client that does not accept gzip gets the stored answer
decompressed. The JSON inside is the same bytes either way.

Decompression is capped: a value is inflated by a streaming zlib decompressor that produces at most one
byte more than the cap, so a small value that would inflate to gigabytes (a gzip bomb) costs no more
memory than the cap before it is refused.
"""

from __future__ import annotations

import gzip
import zlib

GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 1  # nginx's gzip_comp_level here: fast, and most of the size win on JSON numbers


def gzip_body(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def is_gzip(data: bytes) -> bool:
    """A stored value that is gzip (stored JSON starts with { or [, an alias with @)."""
    return data[:2] == GZIP_MAGIC


def gunzip_body(data: bytes, max_bytes: int) -> bytes | None:
    """`data` decompressed, or None when it is not exactly one whole gzip member or would inflate to more
    than `max_bytes`."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # 16 +: with the gzip header and trailer
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error:
        return None
    if len(out) > max_bytes or not inflater.eof or inflater.unused_data:
        return None
    return out
