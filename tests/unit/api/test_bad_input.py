"""Bad input never gets a 500: a 4xx with a problem+json body naming the row, the field and the reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette

from service.api.state import AppState
from service.model.registry import Registry
from service.model.schema import example_rows
from tests.conftest import make_client
from tests.unit.serving.v2_requests import columns_of_rows, json_body

ROW: dict[str, Any] = example_rows()["rows"][0]


def row(**changes: Any) -> dict[str, Any]:
    return {**ROW, **changes}


JSON = {"content-type": "application/json"}

# (name, body bytes, headers, status, kind, [(row, field, reason fragment)])
CASES: list[tuple[str, bytes, dict[str, str], int, str, list[tuple[int | None, str | None, str]]]] = [
    ("truncated json", b'[{"x12": "$1"', JSON, 400, "malformed-json", []),
    ("not json", b"hello", JSON, 400, "malformed-json", []),
    ("empty body", b"", JSON, 400, "malformed-json", []),
    ("whitespace body", b"   \n", JSON, 400, "malformed-json", []),
    # a bare NaN (what json.dumps writes) is read as null: tests/unit/api/test_wrong_envelopes.py
    ("nan literal, lower case", b'{"x12": nan}', JSON, 400, "malformed-json", []),
    ("trailing comma", b'[{"x5": "monday"},]', JSON, 400, "malformed-json", []),
    ("single quotes", b"{'x5': 'monday'}", JSON, 400, "malformed-json", []),
    ("bad utf-8", b'{"x5": "\xff\xfe"}', JSON, 400, "malformed-json", []),
    ("text/plain", orjson.dumps(ROW), {"content-type": "text/plain"}, 415, "unsupported-media-type", []),
    (
        "form",
        b"x5=monday",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported-media-type",
        [],
    ),
    ("no content type", orjson.dumps(ROW), {"content-type": ""}, 415, "unsupported-media-type", []),
    ("xml", b"<row/>", {"content-type": "application/xml"}, 415, "unsupported-media-type", []),
    ("a number", b"42", JSON, 422, "bad-body-shape", []),
    ("a string", b'"row"', JSON, 422, "bad-body-shape", []),
    ("null", b"null", JSON, 422, "bad-body-shape", []),
    ("empty array", b"[]", JSON, 422, "bad-body-shape", []),
    (
        "array of numbers",
        b"[1, 2]",
        JSON,
        422,
        "bad-body-shape",
        [(0, None, "must be a JSON object"), (1, None, "must be a JSON object")],
    ),
    (
        "array with a null",
        orjson.dumps([ROW, None]),
        JSON,
        422,
        "bad-body-shape",
        [(1, None, "got NoneType")],
    ),
    ("nested array", orjson.dumps([[ROW]]), JSON, 422, "bad-body-shape", [(0, None, "got list")]),
    ("too many rows", orjson.dumps([{}] * 10_001), JSON, 413, "payload-too-large", []),
    ("money words", orjson.dumps(row(x12="12 dollars")), JSON, 422, "invalid-rows", [(0, "x12", "money")]),
    (
        "money double sign",
        orjson.dumps(row(x12="($-5.00)")),
        JSON,
        422,
        "invalid-rows",
        [(0, "x12", "money")],
    ),
    ("money as percent", orjson.dumps(row(x12="5%")), JSON, 422, "invalid-rows", [(0, "x12", "money")]),
    ("money bool", orjson.dumps(row(x12=True)), JSON, 422, "invalid-rows", [(0, "x12", "boolean")]),
    ("money object", orjson.dumps(row(x12={"usd": 5})), JSON, 422, "invalid-rows", [(0, "x12", "an object")]),
    ("number word", orjson.dumps(row(x44="lots")), JSON, 422, "invalid-rows", [(0, "x44", "not a number")]),
    ("number inf", orjson.dumps(row(x44="inf")), JSON, 422, "invalid-rows", [(0, "x44", "finite")]),
    ("number overflow", orjson.dumps(row(x44="1e400")), JSON, 422, "invalid-rows", [(0, "x44", "finite")]),
    ("huge number literal", b'{"x44": 1' + b"0" * 400 + b"}", JSON, 400, "malformed-json", []),
    ("number array", orjson.dumps(row(x91=[0.1])), JSON, 422, "invalid-rows", [(0, "x91", "an array")]),
    ("number bool false", orjson.dumps(row(x53=False)), JSON, 422, "invalid-rows", [(0, "x53", "boolean")]),
    ("category number", orjson.dumps(row(x5=3)), JSON, 422, "invalid-rows", [(0, "x5", "string category")]),
    (
        "category bool",
        orjson.dumps(row(x81=True)),
        JSON,
        422,
        "invalid-rows",
        [(0, "x81", "string category")],
    ),
    (
        "category object",
        orjson.dumps(row(x31={})),
        JSON,
        422,
        "invalid-rows",
        [(0, "x31", "string category")],
    ),
    (
        "two bad fields",
        orjson.dumps(row(x12="?", x91="?")),
        JSON,
        422,
        "invalid-rows",
        [(0, "x12", "money"), (0, "x91", "not a number")],
    ),
    (
        "bad rows named",
        orjson.dumps([ROW, row(x62="x"), ROW, row(x56="y")]),
        JSON,
        422,
        "invalid-rows",
        [(1, "x62", "not a number"), (3, "x56", "not a number")],
    ),
    (
        "percent words",
        orjson.dumps([ROW] * 3 + [row(x58="12 %%")]),
        JSON,
        422,
        "invalid-rows",
        [(3, "x58", "not a number")],
    ),
    (
        "bad in last of many",
        orjson.dumps([ROW] * 999 + [row(x44="?")]),
        JSON,
        422,
        "invalid-rows",
        [(999, "x44", "not a number")],
    ),
    ("negative zero money", orjson.dumps(row(x12="$-")), JSON, 422, "invalid-rows", [(0, "x12", "money")]),
    (
        "nan word in category is missing, bad number",
        orjson.dumps(row(x5="nan", x12="$")),
        JSON,
        422,
        "invalid-rows",
        [(0, "x12", "money")],
    ),
    # finite values whose logit is not finite (issue 12): named, never "phat": null
    (
        "overflow after scaling",
        orjson.dumps(row(x44=1e308, x91=1e308)),
        JSON,
        422,
        "invalid-rows",
        [(0, "x44", "out of the range"), (0, "x91", "out of the range")],
    ),
    (
        "overflow in a big batch",
        orjson.dumps([ROW] * 50 + [row(x53="-1e308")]),
        JSON,
        422,
        "invalid-rows",
        [(50, "x53", "out of the range")],
    ),
    # hostile shapes (issue 12): the column decoder's failures are input errors, and a boolean is read by it
    ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, JSON, 400, "malformed-json", []),
    (
        "nested 1,000 deep in a big body",
        b"[" + b",".join([orjson.dumps(ROW)] * 50) + b', {"z": ' + b"[" * 1000 + b"]" * 1000 + b"}]",
        JSON,
        400,
        "malformed-json",
        [],
    ),
    (
        "nested 1,000 deep in a value",
        orjson.dumps({k: v for k, v in ROW.items() if k != "x91"})[:-1]
        + b', "x91": '
        + b"[" * 1000
        + b"]" * 1000
        + b"}",
        JSON,
        422,
        "invalid-rows",
        [(0, "x91", "got an array")],
    ),
    (
        "boolean in a big body",
        orjson.dumps([ROW] * 50 + [row(x44=True)]),
        JSON,
        422,
        "invalid-rows",
        [(50, "x44", "got a boolean")],
    ),
    (
        "not utf-8 in a big body",
        orjson.dumps([ROW] * 50)[:-1] + b', {"x5": "\xff"}]',
        JSON,
        400,
        "malformed-json",
        [],
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "headers", "status", "kind", "errors"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input(
    client: TestClient,
    name: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    kind: str,
    errors: list[tuple[int | None, str | None, str]],
) -> None:
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == status and problem["type"].endswith("/" + kind)
    assert problem["title"] and problem["detail"] and problem["instance"] == "/predict"
    if errors:
        got = [(e["row"], e["field"]) for e in problem["errors"]]
        assert got == [(row_, field) for row_, field, _ in errors]
        for e, (_, _, fragment) in zip(problem["errors"], errors, strict=True):
            assert fragment in e["reason"]
        assert problem["error_count"] == len(errors)
    assert len(r.content) < 20_000  # never echoes huge inputs


def test_at_least_forty_cases() -> None:
    assert len(CASES) >= 40


def test_the_server_still_answers_after_every_bad_case(client: TestClient) -> None:
    assert client.post("/predict", content=orjson.dumps(ROW), headers=JSON).status_code == 200


def test_error_list_is_capped_and_values_truncated(client: TestClient) -> None:
    rows = [row(x44="z" * 5_000) for _ in range(500)]
    r = client.post("/predict", content=orjson.dumps(rows), headers=JSON)
    problem = r.json()
    assert r.status_code == 422
    assert len(problem["errors"]) == 100 and problem["error_count"] == 500 and problem["bad_row_count"] == 500
    assert all(len(e["value"]) <= 40 for e in problem["errors"])
    assert len(r.content) < 40_000


def test_body_over_the_byte_limit(approved_registry: Registry) -> None:
    clients = make_client(approved_registry, max_body_bytes=4096)
    small = next(clients)
    r = small.post("/predict", content=orjson.dumps([ROW] * 5), headers=JSON)
    assert r.status_code == 413 and r.json()["type"].endswith("/payload-too-large")
    assert small.post("/predict", content=orjson.dumps(ROW), headers=JSON).status_code == 200
    clients.close()


def test_strict_unseen_policy_lists_allowed_levels(approved_registry: Registry) -> None:
    clients = make_client(approved_registry, unseen_category_policy="reject")
    strict = next(clients)
    r = strict.post("/predict", content=orjson.dumps([ROW, row(x31="mars")]), headers=JSON)
    assert r.status_code == 422
    [error] = r.json()["errors"]
    assert error["row"] == 1 and error["field"] == "x31" and error["value"] == "mars"
    assert "america, asia, germany, japan" in error["reason"]
    clients.close()


def test_score_valid_policy_scores_good_rows_and_reports_bad(approved_registry: Registry) -> None:
    clients = make_client(approved_registry, batch_error_policy="score-valid")
    lenient = next(clients)
    r = lenient.post("/predict", content=orjson.dumps([ROW, row(x12="??"), ROW]), headers=JSON)
    assert r.status_code == 200 and r.headers["x-rejected-rows"] == "1"
    body = r.json()
    assert body[0] == body[2] and body[0]["phat"] == pytest.approx(0.08938371087386138, abs=1e-12)
    assert body[1]["row"] == 1 and body[1]["errors"][0]["field"] == "x12"
    # a single object with an error is still a 422
    assert lenient.post("/predict", content=orjson.dumps(row(x12="??")), headers=JSON).status_code == 422
    clients.close()


def test_unexpected_errors_are_generic_500_without_echo(approved_registry: Registry) -> None:
    clients = make_client(approved_registry)
    c = next(clients)
    assert isinstance(c.app, Starlette)
    model = AppState.of(c.app).holder.current
    assert model is not None

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    model.score_batch = broken  # type: ignore[method-assign]
    r = c.post("/predict", content=orjson.dumps(ROW), headers=JSON)
    assert r.status_code == 500 and "secret" not in r.text
    assert r.json()["type"].endswith("/internal") and "request id" in r.json()["detail"]
    clients.close()


def test_an_unexpected_error_on_a_protocol_door_carries_what_its_clients_read(
    approved_registry: Registry,
) -> None:
    """tritonclient raises with the body's `error`, MLflow's client reads `error_code` and `message`: a 500
    (or a 404 or 405 no door caught) carries them beside the problem's members."""
    clients = make_client(approved_registry)
    c = next(clients)
    assert isinstance(c.app, Starlette)
    model = AppState.of(c.app).holder.current
    assert model is not None

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    model.score_batch = broken  # type: ignore[method-assign]
    v2 = c.post("/v2/models/propensity/infer", content=json_body(columns_of_rows([ROW])), headers=JSON)
    assert v2.status_code == 500 and "secret" not in v2.text
    assert v2.json()["error"] == v2.json()["detail"] and "request id" in v2.json()["error"]
    mlflow = c.post("/invocations", content=orjson.dumps({"dataframe_records": [ROW]}), headers=JSON)
    assert mlflow.status_code == 500 and "secret" not in mlflow.text
    body = mlflow.json()
    assert list(body)[:2] == ["error_code", "message"]
    assert body["error_code"] == "INTERNAL_ERROR" and body["message"] == body["detail"]
    wrong_method = c.get("/v2/models/propensity/infer")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "Method Not Allowed"
    assert c.get("/v2/nothing/here").json()["error"] == "Not Found"
    plain = c.post("/predict", content=orjson.dumps(ROW), headers=JSON).json()
    assert plain["status"] == 500 and not {"error", "error_code", "message"} & set(plain)
    clients.close()
