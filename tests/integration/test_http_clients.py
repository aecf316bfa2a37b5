"""Everyday HTTP clients against a real gunicorn: what Python users send without thinking about it.

`requests` with a body from `json.dumps` (which writes a bare NaN for a missing float; requests' own
`json=` refuses NaN before sending), httpx with a gzip or
deflate request body, curl with `--compressed` bodies, pass-through ids and reason codes. Each gets the
same phat bits as a plain /predict JSON call for the same rows, or a 4xx that names the fix.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import requests

from tests.servers import Server, start_server

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("clients")
    with start_server(root / "artifacts", root, workers=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def plain(server: Server, reference_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference rows' answer from a plain /predict JSON call: what every other client must get."""
    r = httpx.post(server.url + "/predict", content=orjson.dumps(reference_rows), headers=JSON)
    assert r.status_code == 200
    answer: list[dict[str, Any]] = r.json()
    return answer


def with_nan(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows as a pandas user holds them: float NaN where a value is missing."""
    return [{k: math.nan if v is None else v for k, v in row.items()} for row in rows]


def test_requests_json_with_nan_is_read_as_missing(
    server: Server, reference_rows: list[dict[str, Any]], plain: list[dict[str, Any]]
) -> None:
    body = json.dumps(with_nan(reference_rows))
    assert "NaN" in body
    r = requests.post(server.url + "/predict", data=body, headers=JSON, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == plain


def test_requests_json_with_infinity_is_a_422_naming_row_and_field(
    server: Server, reference_rows: list[dict[str, Any]]
) -> None:
    rows = [dict(row) for row in reference_rows]
    rows[2]["x91"] = math.inf
    r = requests.post(server.url + "/predict", data=json.dumps(rows), headers=JSON, timeout=30)
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert [(e["row"], e["field"]) for e in r.json()["errors"]] == [(2, "x91")]


@pytest.mark.parametrize(("coding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_httpx_with_a_compressed_body_gets_the_same_bits(
    server: Server,
    reference_rows: list[dict[str, Any]],
    plain: list[dict[str, Any]],
    coding: str,
    compress: Any,
) -> None:
    body = compress(orjson.dumps(reference_rows))
    r = httpx.post(server.url + "/predict", content=body, headers={**JSON, "content-encoding": coding})
    assert r.status_code == 200, r.text
    assert r.json() == plain


def test_a_gzip_bomb_through_the_server_is_a_413_and_the_worker_lives(server: Server) -> None:
    bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]")  # 64 MiB of blanks, past the 32 MiB limit
    pids = server.worker_pids()
    r = httpx.post(server.url + "/predict", content=bomb, headers={**JSON, "content-encoding": "gzip"})
    assert r.status_code == 413
    assert "decodes to more than the limit" in r.json()["detail"]
    assert server.worker_pids() == pids


def test_curl_sends_a_gzip_file(
    server: Server, reference_rows: list[dict[str, Any]], plain: list[dict[str, Any]], tmp_path: Path
) -> None:
    body = tmp_path / "rows.json.gz"
    body.write_bytes(gzip.compress(orjson.dumps(reference_rows)))
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--data-binary", f"@{body}",
         "-H", "Content-Type: application/json", "-H", "Content-Encoding: gzip", server.url + "/predict"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    assert orjson.loads(out.stdout) == plain


def test_ids_and_reasons_through_requests(
    server: Server, reference_rows: list[dict[str, Any]], plain: list[dict[str, Any]]
) -> None:
    rows = [{**row, "customer_id": f"C-{i:04d}"} for i, row in enumerate(reference_rows)]
    r = requests.post(server.url + "/predict", params={"reasons": 2}, json=rows, timeout=30)
    assert r.status_code == 200
    for i, (result, expected) in enumerate(zip(r.json(), plain, strict=True)):
        assert result["customer_id"] == f"C-{i:04d}"
        assert len(result.pop("reasons")) == 2
        assert {k: v for k, v in result.items() if k != "customer_id"} == expected
