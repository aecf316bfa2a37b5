"""The gzip helpers of cached answers."""

from __future__ import annotations

import gzip

from service.serving.compression import gunzip_body, gzip_body, is_gzip


def test_gzip_round_trip_is_standard_gzip_and_recognised() -> None:
    data = b'[{"business_outcome":0,"phat":0.089}]' * 1000
    packed = gzip_body(data)
    assert is_gzip(packed) and not is_gzip(data) and not is_gzip(b"@alias")
    assert len(packed) < len(data) / 10
    assert gzip.decompress(packed) == data and gunzip_body(packed, len(data)) == data
    assert gzip_body(data) == packed  # deterministic (mtime 0): the same answer stores the same bytes
