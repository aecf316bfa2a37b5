"""No silent wrong answers, through the app: every wrong envelope, key spelling and pandas orient is a 4xx
whose detail names the fix (none is a 200 of imputed rows); bare NaN is null, bare Infinity a 422; a BOM
is skipped; NDJSON is its own content type; what was imputed or ignored is named in the headers."""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote

import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from service.model.schema import example_rows
from tests.unit.serving.envelopes import WRONG, Wrong

ROWS: list[dict[str, Any]] = example_rows()["rows"]
PHAT = [e["phat"] for e in example_rows()["expected"]]  # the notebook's: the answers agree to 1e-12
JSON = {"content-type": "application/json"}
BIG = 64 * 1024  # from here on the column decoder reads the body


def post(client: TestClient, body: bytes, **headers: str) -> Any:
    return client.post("/predict", content=body, headers={**JSON, **headers})


def served(client: TestClient, rows: list[dict[str, Any]]) -> list[float]:
    """The phat of each row as /predict answers it sent the one right way (an array of row objects)."""
    answer = post(client, orjson.dumps(rows))
    assert answer.status_code == 200 and "x-unknown-keys" not in answer.headers
    phat = [r["phat"] for r in answer.json()]
    assert phat == pytest.approx(PHAT * (len(rows) // len(PHAT)), abs=1e-12)
    return phat


def grown(case: Wrong, big: bool) -> bytes:
    rows = ROWS
    body = case.build(rows)
    while big and len(body) < BIG:
        rows = rows * 2
        body = case.build(rows)
    return body


SIZES = [(c, big) for c in WRONG for big in (False, True) if c.grows or not big]


@pytest.mark.parametrize(("case", "big"), SIZES, ids=[f"{c.name}{' big' if b else ''}" for c, b in SIZES])
def test_a_wrong_envelope_is_a_4xx_naming_the_fix(client: TestClient, case: Wrong, big: bool) -> None:
    body = grown(case, big)
    assert (len(body) >= BIG) == big
    r = post(client, body)
    assert r.status_code == case.status, r.text[:500]
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith("/" + case.kind) and problem["instance"] == "/predict"
    assert case.fix in problem["detail"], problem["detail"]
    assert len(r.content) < 60_000  # a bounded answer, however many rows were wrong


def test_the_catalogue_covers_the_issue(client: TestClient) -> None:
    names = {c.name for c in WRONG}
    for name in ("instances", "dataframe_records", "dataframe_split", "empty object", "upper-case keys",
                 "x_12 keys", "rows wrapped in data", "open inference protocol inputs"):  # fmt: skip
        assert name in names
    assert {f"pandas orient {o}" for o in ("split", "index", "columns", "values", "table")} <= names


def test_pandas_records_is_the_right_orient(client: TestClient) -> None:
    frame = pd.DataFrame(ROWS)
    r = post(client, frame.to_json(orient="records").encode())
    assert r.status_code == 200 and [x["phat"] for x in r.json()] == served(client, ROWS)
    assert "x-imputed-columns" not in r.headers and "x-unknown-keys" not in r.headers
    one = post(client, frame.iloc[0].to_json().encode())  # a Series is one row object
    assert one.status_code == 200 and one.json()["phat"] == served(client, ROWS)[0]
    assert one.content == post(client, orjson.dumps(ROWS[0])).content


def test_a_wrapped_row_names_its_keys_and_the_expected_shape(client: TestClient) -> None:
    r = post(client, orjson.dumps({"data": ROWS[0], "meta": {"source": "crm"}}))
    [error] = r.json()["errors"]
    assert (error["row"], error["field"]) == (0, None)
    assert error["reason"].startswith(
        "none of the model's columns is a key of this row (its keys: 'data', 'meta')"
    )
    assert "rows are sent bare, not wrapped in 'data': send the value of 'data' itself" in error["reason"]
    assert "columns as keys: x5, x12, x31, x44, x53, x56, x58, x62, x81, x91" in error["reason"]


def test_many_keys_are_named_up_to_a_bound(client: TestClient) -> None:
    r = post(client, orjson.dumps({f"k{i}": i for i in range(500)}))
    reason = r.json()["errors"][0]["reason"]
    assert "'k0', 'k1', 'k2', 'k3', 'k4' and 495 more" in reason and len(reason) < 400


# --- NaN, Infinity, BOM, NDJSON -----------------------------------------------------------------------------
def test_json_dumps_nan_is_read_as_null(client: TestClient) -> None:
    as_python = json.dumps([dict(ROWS[0], x44=math.nan, x12=math.nan), ROWS[1]]).encode()
    as_null = orjson.dumps([dict(ROWS[0], x44=None, x12=None), ROWS[1]])
    r = post(client, as_python)
    assert r.status_code == 200 and r.content == post(client, as_null).content
    assert r.json()[1]["phat"] == served(client, ROWS)[1]


@pytest.mark.parametrize("rows", [2, 200])
def test_infinity_is_a_422_naming_row_and_field(client: TestClient, rows: int) -> None:
    batch = [*ROWS, *ROWS][: rows - 1] if rows == 2 else (ROWS * 40)[: rows - 1]
    body = json.dumps([*batch, dict(ROWS[0], x53=math.inf, x58=-math.inf)]).encode()
    assert (len(body) >= BIG) == (rows == 200)
    r = post(client, body)
    assert r.status_code == 422 and r.json()["type"].endswith("/invalid-rows")
    problem = r.json()
    assert [(e["row"], e["field"], e["value"]) for e in problem["errors"]] == [
        (rows - 1, "x53", "Infinity"),
        (rows - 1, "x58", "-Infinity"),
    ]
    assert (
        f"first: row {rows - 1}, field x53" in problem["detail"]
        and "or null for a missing value" in problem["detail"]
    )


@pytest.mark.parametrize("body", [orjson.dumps(ROWS[0]), orjson.dumps(ROWS * 40)])
def test_a_byte_order_mark_is_skipped(client: TestClient, body: bytes) -> None:
    r = post(client, b"\xef\xbb\xbf" + body)
    assert r.status_code == 200 and r.content == post(client, body).content


def test_ndjson_is_its_own_content_type(client: TestClient) -> None:
    lines = b"\n".join(orjson.dumps(r) for r in ROWS)
    r = post(client, lines, **{"content-type": "application/x-ndjson"})
    assert r.status_code == 415 and r.json()["type"].endswith("/unsupported-media-type")
    assert "Content-Type: application/json" in r.json()["detail"]
    as_json = post(client, lines)
    assert as_json.status_code == 400 and "(NDJSON)" in as_json.json()["detail"]
    fixed = post(client, b"[" + lines.replace(b"\n", b",") + b"]")
    assert [x["phat"] for x in fixed.json()] == served(client, ROWS)


# --- what is only reported: imputed columns, unknown keys, unseen values ------------------------------------
def test_absent_columns_and_unknown_keys_are_named(client: TestClient) -> None:
    rows = [
        {k: v for k, v in ROWS[0].items() if k not in ("x12", "x31")},
        dict(ROWS[1], note="a", customer_name="b"),
    ]
    r = post(client, orjson.dumps(rows))
    assert r.status_code == 200
    assert r.headers["x-imputed-columns"] == "1; x12=1,x31=1"
    assert r.headers["x-unknown-keys"] == "2; note,customer_name"
    nulls = post(client, orjson.dumps([dict(ROWS[0], x12=None, x31=None), ROWS[1]]))
    assert "x-imputed-columns" not in nulls.headers  # null is present: an explicit missing value
    assert r.json()[0] == nulls.json()[0] and r.json()[1]["phat"] == served(client, ROWS)[1]


def test_reported_names_are_bounded_and_header_safe(client: TestClient) -> None:
    row = dict(ROWS[0], x31="марс, mars;=", **{f"extra {i} ключ": i for i in range(20)})
    r = post(client, orjson.dumps(row))
    assert r.status_code == 200
    count, _, names = r.headers["x-unknown-keys"].partition("; ")
    assert count == "20" and len(names.split(",")) == 10
    assert unquote(names.split(",")[0]) == "extra 0 ключ"
    assert r.headers["x-unseen-categories"] == "1"
    assert unquote(r.headers["x-unseen-values"].partition("; ")[2].partition("=")[2]) == "марс, mars;="


def test_answers_with_reports_are_never_served_from_the_cache(client: TestClient) -> None:
    body = orjson.dumps([{k: v for k, v in r.items() if k != "x91"} for r in ROWS] * 40)
    assert len(body) >= BIG  # big enough to be cached
    for _ in range(2):
        r = post(client, body)
        assert r.headers["x-imputed-columns"] == "200; x91=200" and "x-cache" not in r.headers
