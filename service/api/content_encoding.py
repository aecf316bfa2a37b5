"""gzip for cached /predict answers: compressed once when stored, sent as stored on every hit.

Through nginx a big answer is gzipped for every client that accepts it (~5 MB of JSON for 10,000 rows:
tens of milliseconds at level 1, paid by every hit). For a response the cache will store, the app gzips
it itself (nginx passes a response that already has a Content-Encoding through untouched) and stores the
gzip bytes: hits then cost no compression, Redis moves and holds ~half the bytes, and a client that does
not accept gzip gets the stored answer decompressed (a few ms). The JSON inside is the same bytes either way.
"""

from __future__ import annotations

import gzip

GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 1  # nginx's gzip_comp_level here: fast, and most of the size win on JSON numbers


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value admits gzip (RFC 9110, 12.5.3): gzip, x-gzip or * with q > 0;
    an explicit gzip entry overrides *."""
    if not header:
        return False
    explicit: float | None = None
    wildcard: float | None = None
    for item in header.split(","):
        name, _, params = item.partition(";")
        coding = name.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding == "*":
            wildcard = q
        else:
            explicit = q if explicit is None else max(explicit, q)
    q_gzip = explicit if explicit is not None else wildcard
    return q_gzip is not None and q_gzip > 0


def gzip_body(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


def is_gzip(data: bytes) -> bool:
    """A stored value that is gzip (stored JSON starts with { or [, an alias with @)."""
    return data[:2] == GZIP_MAGIC


def gunzip_body(data: bytes) -> bytes:
    return gzip.decompress(data)
