"""Reading a request for the pipeline: the headers it needs, and bodies without a Content-Length."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from service.api.body import request_head
from service.model.registry import Registry
from service.model.schema import example_rows
from tests.conftest import app_client

ROW: dict[str, Any] = example_rows()["rows"][0]


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"headers": list(headers)}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), (None, None, None)),
        (
            ((b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"12")),
            ("application/json", 12, None),
        ),
        (((b"content-length", b"abc"), (b"accept-encoding", b"gzip, br")), (None, None, "gzip, br")),
        (((b"content-type", b"text/csv"), (b"content-type", b"application/json")), ("text/csv", None, None)),
        (((b"content-length", b"7"), (b"content-length", b"9")), (None, 7, None)),  # the first one counts
    ],
)
def test_request_head(headers: tuple[tuple[bytes, bytes], ...], expected: tuple[Any, ...]) -> None:
    assert request_head(scope(*headers)) == expected


def chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """A body sent in pieces without a Content-Length (a chunked upload)."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_a_chunked_body_over_the_limit_is_a_413(approved_registry: Registry) -> None:
    with app_client(approved_registry, max_body_bytes=4096) as client:
        big = orjson.dumps([ROW] * 5)
        r = client.post("/predict", content=chunked(big), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")
        assert r.json()["limit_bytes"] == 4096


def test_a_chunked_body_is_hashed_after_it_arrived_and_cached(approved_registry: Registry) -> None:
    with app_client(approved_registry, cache_min_body_bytes=1000) as client:
        body = orjson.dumps([ROW] * 3)
        assert len(body) > 1000
        headers = {"content-type": "application/json"}
        first = client.post("/predict", content=chunked(body), headers=headers)
        again = client.post("/predict", content=body, headers=headers)  # the same bytes, with a length
        assert first.status_code == again.status_code == 200 and "x-cache" not in first.headers
        assert again.headers["x-cache"] == "hit" and again.content == first.content
