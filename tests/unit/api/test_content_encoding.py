"""Accept-Encoding parsing and the gzip helpers of cached answers."""

from __future__ import annotations

import gzip

import pytest

from service.api.content_encoding import accepts_gzip, gunzip_body, gzip_body, is_gzip


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip, deflate, br", True),
        ("x-gzip", True),
        ("*", True),
        ("br;q=1, *;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("gzip;q=0, *", False),  # an explicit refusal beats the wildcard
        ("*;q=0", False),
        ("gzip;q=abc", False),
        ("br, deflate", False),
        ("gzipped", False),
    ],
)
def test_accepts_gzip(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_gzip_round_trip_is_standard_gzip_and_recognised() -> None:
    data = b'[{"business_outcome":0,"phat":0.089}]' * 1000
    packed = gzip_body(data)
    assert is_gzip(packed) and not is_gzip(data) and not is_gzip(b"@alias")
    assert len(packed) < len(data) / 10
    assert gzip.decompress(packed) == data and gunzip_body(packed) == data
    assert gzip_body(data) == packed  # deterministic (mtime 0): the same answer stores the same bytes
