"""The HTTP side every scoring door shares (service/api/calls.py): the request head, compressed request
bodies (gzip and deflate, capped as they inflate), reason codes and pass-through ids, through /predict."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.api.calls import request_head
from service.errors import PropensityError
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tests.conftest import app_client

ROWS: list[dict[str, Any]] = example_rows()["rows"]
JSON = {"content-type": "application/json"}


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"headers": list(headers)}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((), (None, None, None, None, None, None)),
        (
            ((b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"12")),
            ("application/json", 12, None, None, None, None),
        ),
        (
            ((b"content-length", b"abc"), (b"accept-encoding", b"gzip, br")),
            (None, None, "gzip, br", None, None, None),
        ),
        (
            ((b"content-type", b"text/csv"), (b"content-type", b"application/json")),
            ("text/csv", None, None, None, None, None),
        ),
        (
            ((b"content-length", b"7"), (b"content-length", b"9")),
            (None, 7, None, None, None, None),
        ),  # the first one counts
        (
            ((b"content-encoding", b"gzip"), (b"x-reason-codes", b"3"), (b"content-length", b"-5")),
            (None, None, None, "gzip", "3", None),
        ),
        (
            ((b"accept", b"text/csv"), (b"accept", b"application/json")),
            (None, None, None, None, None, "text/csv"),
        ),
    ],
)
def test_request_head(headers: tuple[tuple[bytes, bytes], ...], expected: tuple[Any, ...]) -> None:
    assert request_head(scope(*headers)) == expected


@pytest.fixture(scope="module")
def client(approved_registry: Registry) -> Iterator[TestClient]:
    with app_client(approved_registry, max_body_bytes=1024 * 1024, cache_enabled=False) as c:
        yield c


def post(client: TestClient, body: bytes, path: str = "/predict", **headers: str) -> Any:
    return client.post(path, content=body, headers={**JSON, **headers})


def plain(client: TestClient, rows: Any) -> Any:
    r = post(client, orjson.dumps(rows))
    assert r.status_code == 200
    return r.json()


# --- Content-Encoding --------------------------------------------------------------------------------
def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),  # the zlib format, as RFC 9110 names it
        ("deflate", raw_deflate),  # a raw stream, as some clients send it
        ("identity", lambda b: b),
        ("gzip, identity", gzip.compress),
        ("gzip, gzip", lambda b: gzip.compress(gzip.compress(b))),
        ("deflate, gzip", lambda b: gzip.compress(zlib.compress(b))),  # applied in order, undone in reverse
    ],
)
def test_a_compressed_body_is_answered_as_the_plain_one(
    client: TestClient, coding: str, compress: Any
) -> None:
    body = orjson.dumps(ROWS)
    r = post(client, compress(body), **{"content-encoding": coding})
    assert r.status_code == 200, r.text
    assert r.json() == plain(client, ROWS)


def test_gzip_members_one_after_another_are_one_body(client: TestClient) -> None:
    body = orjson.dumps(ROWS)
    r = post(client, gzip.compress(body[:100]) + gzip.compress(body[100:]), **{"content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json() == plain(client, ROWS)


def test_a_big_compressed_body_is_scored_like_the_plain_one(client: TestClient) -> None:
    rows = [ROWS[i % 5] for i in range(300)]  # past the column decoder's and the offload's thresholds
    r = post(client, gzip.compress(orjson.dumps(rows)), **{"content-encoding": "gzip"})
    assert r.status_code == 200
    assert r.json() == plain(client, rows)


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br"])
def test_an_unsupported_coding_is_a_415_naming_the_ones_read(client: TestClient, coding: str) -> None:
    r = post(client, orjson.dumps(ROWS), **{"content-encoding": coding})
    assert r.status_code == 415
    assert r.headers["accept-encoding"] == "gzip, deflate"
    problem = r.json()
    assert problem["type"].endswith("/unsupported-content-encoding")
    assert "gzip or deflate" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(orjson.dumps(ROWS))[:-20], "cut short"),
        (gzip.compress(orjson.dumps(ROWS)) + b"trailing", "not valid gzip"),
    ],
)
def test_a_body_that_does_not_decode_is_a_400(client: TestClient, body: bytes, words: str) -> None:
    r = post(client, body, **{"content-encoding": "gzip"})
    assert r.status_code == 400
    assert r.json()["type"].endswith("/undecodable-body")
    assert words in r.json()["detail"]


def test_bytes_after_a_deflate_stream_are_a_400(client: TestClient) -> None:
    r = post(client, zlib.compress(orjson.dumps(ROWS)) + b"xx", **{"content-encoding": "deflate"})
    assert r.status_code == 400
    assert "follow the end" in r.json()["detail"]


def test_a_decompression_bomb_is_a_413_and_never_inflates_past_the_cap(client: TestClient) -> None:
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]")  # 200 MiB of blanks in 200 KiB
    assert len(bomb) < 1024 * 1024  # within the body limit as sent
    r = post(client, bomb, **{"content-encoding": "gzip"})
    assert r.status_code == 413
    assert "decodes to more than the limit of 1048576 bytes" in r.json()["detail"]
    state = client.app.state.propensity  # type: ignore[attr-defined]
    assert state.pipeline.budget.bytes == 0  # the call gave back what it held


# --- reason codes --------------------------------------------------------------------------------------
def test_reasons_are_the_top_contributions_and_all_of_them_sum_to_the_logit(
    client: TestClient, approved_registry: Registry
) -> None:
    model = CompiledModel.from_artifact(approved_registry.load("production"))
    r = post(client, orjson.dumps(ROWS), path="/predict?reasons=all")
    assert r.status_code == 200
    for result, expected in zip(r.json(), plain(client, ROWS), strict=True):
        phat = result["phat"]
        assert phat == expected["phat"]
        reasons = result["reasons"]
        assert len(reasons) == len(model.features) == 25
        assert all(list(x) == ["contribution", "input"] for x in reasons)
        by_input = {x["input"]: x["contribution"] for x in reasons}
        # exact: coefficient x the model input as the answer shows it, summed in the model's order
        eta = 0.0
        for feature, coef in zip(model.features, model.coefficients, strict=True):
            assert by_input[feature] == coef * float(result[feature])
            eta += by_input[feature]
        assert 1.0 / (1.0 + np.exp(-eta)) == phat
        sizes = [abs(x["contribution"]) for x in reasons]
        assert sizes == sorted(sizes, reverse=True)


def test_reasons_by_header_and_query_give_the_top_k(client: TestClient) -> None:
    full = post(client, orjson.dumps(ROWS[0]), path="/predict?reasons=all").json()["reasons"]
    by_query = post(client, orjson.dumps(ROWS[0]), path="/predict?reasons=3").json()
    by_header = post(client, orjson.dumps(ROWS[0]), **{"x-reason-codes": "3"}).json()
    assert by_query == by_header
    assert by_query["reasons"] == full[:3]
    assert list(by_query) == sorted(by_query)  # "reasons" in its alphabetical place
    off = post(client, orjson.dumps(ROWS[0])).json()
    assert "reasons" not in off
    assert {k: v for k, v in by_query.items() if k != "reasons"} == off
    assert post(client, orjson.dumps(ROWS[0]), path="/predict?reasons=99").json()["reasons"] == full


@pytest.mark.parametrize("value", ["-1", "three", "2.5", "", "%C2%B2"])  # "²" is a digit to str.isdigit
def test_a_bad_reasons_value_is_a_422_naming_the_option(client: TestClient, value: str) -> None:
    r = post(client, orjson.dumps(ROWS[0]), path=f"/predict?reasons={value}")
    assert r.status_code == 422
    assert r.json()["option"] == "reasons"
    assert "whole number" in r.json()["detail"]
    assert client.app.state.propensity.pipeline.budget.bytes == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("header", ["", "x", "3.0"])
def test_a_bad_header_is_refused_even_beside_a_good_query(client: TestClient, header: str) -> None:
    r = post(client, orjson.dumps(ROWS[0]), path="/predict?reasons=3", **{"x-reason-codes": header})
    assert r.status_code == 422 and r.json()["option"] == "reasons"
    assert "X-Reason-Codes must be a whole number" in r.json()["detail"]
    # both good: the query wins
    both = post(client, orjson.dumps(ROWS[0]), path="/predict?reasons=1", **{"x-reason-codes": "3"})
    assert len(both.json()["reasons"]) == 1


def test_answers_with_and_without_reasons_are_cached_apart(approved_registry: Registry) -> None:
    rows = [ROWS[i % 5] for i in range(40)]  # over the cache's minimum body size
    body = orjson.dumps(rows)
    with app_client(approved_registry) as c:
        first = post(c, body).json()
        with_reasons = post(c, body, path="/predict?reasons=2")
        assert with_reasons.headers.get("x-cache") != "hit"
        assert all(len(x["reasons"]) == 2 for x in with_reasons.json())
        again = post(c, body, path="/predict?reasons=2")
        assert again.headers["x-cache"] == "hit" and again.json() == with_reasons.json()
        assert post(c, body).json() == first


# --- pass-through ids ---------------------------------------------------------------------------------
def test_ids_come_back_unchanged_and_are_not_unknown_keys(client: TestClient) -> None:
    ids: list[Any] = ["C-0001", 12345678901234, None, "0042", 7.5]
    rows = [{**row, "customer_id": i} for row, i in zip(ROWS, ids, strict=True)]
    r = post(client, orjson.dumps(rows))
    assert r.status_code == 200
    assert [x["customer_id"] for x in r.json()] == ids
    assert [type(x["customer_id"]) for x in r.json()] == [type(i) for i in ids]
    assert [x["phat"] for x in r.json()] == [x["phat"] for x in plain(client, ROWS)]
    assert "x-unknown-keys" not in r.headers
    assert all(list(x) == sorted(x) for x in r.json())


def test_a_row_without_the_id_gets_no_id_key(client: TestClient) -> None:
    rows = [{**ROWS[0], "customer_id": "a"}, ROWS[1]]
    out = post(client, orjson.dumps(rows)).json()
    assert out[0]["customer_id"] == "a" and "customer_id" not in out[1]


def test_ids_in_a_big_body_keep_their_json_types(client: TestClient) -> None:
    rows = [{**ROWS[i % 5], "customer_id": i if i % 2 else f"c{i}"} for i in range(400)]
    r = post(client, orjson.dumps(rows))  # decoded by columns (>= 64 KiB), in a worker thread
    assert r.status_code == 200
    assert [x["customer_id"] for x in r.json()] == [i if i % 2 else f"c{i}" for i in range(400)]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"id": 1}, "a string, an integer or a finite number"),
        ([1, 2], "a string, an integer or a finite number"),
        (True, "a string, an integer or a finite number"),
        ("x" * 129, "at most 128 characters; this one has 129"),
    ],
)
def test_an_id_that_cannot_be_echoed_is_a_422_naming_row_and_field(
    client: TestClient, value: Any, words: str
) -> None:
    rows = [ROWS[0], {**ROWS[1], "customer_id": value}]
    r = post(client, orjson.dumps(rows))
    assert r.status_code == 422
    problem = r.json()
    assert problem["errors"][0]["row"] == 1 and problem["errors"][0]["field"] == "customer_id"
    assert words in problem["errors"][0]["reason"]


def test_the_pass_through_fields_are_configurable(approved_registry: Registry) -> None:
    with app_client(approved_registry, passthrough_fields=("order_id", "campaign")) as c:
        out = post(c, orjson.dumps({**ROWS[0], "order_id": "o-1", "campaign": 3, "customer_id": "c"}))
        assert out.json()["order_id"] == "o-1" and out.json()["campaign"] == 3
        assert "customer_id" not in out.json()
        assert out.headers["x-unknown-keys"].endswith("customer_id")


@pytest.mark.parametrize("fields", [("phat",), ("x5",), ("a", "a"), ("bad name",)])
def test_pass_through_fields_that_would_clash_are_refused(approved_registry: Registry, fields: Any) -> None:

    try:
        settings = Settings(artifacts_dir=approved_registry.root, passthrough_fields=fields)
    except ValueError:
        return  # refused by the settings (a result key, a repeat, not a name)
    assert fields == ("x5",)
    with pytest.raises(PropensityError, match="x5 are columns of the model's input"):
        CompiledModel.from_artifact(approved_registry.load("production"), settings.passthrough_fields)
