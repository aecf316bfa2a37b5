"""MLflow's scoring protocol through the app: /invocations answers /predict's records, errors in MLflow's
shape and problem+json at once, /ping, /health and /version, and the OpenAPI document of all four."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.api.app import create_app
from service.api.problems import PROBLEM_TYPE
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.metrics import Metrics
from service.settings import Settings
from tests.conftest import app_client

ROWS: list[dict[str, Any]] = example_rows()["rows"]
FRAME = pd.DataFrame(ROWS)
JSON = {"content-type": "application/json"}


def invoke(client: TestClient, body: Any, path: str = "/invocations", **headers: str) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content, headers={**JSON, **headers})


@pytest.fixture(scope="module")
def predicted(client: TestClient) -> list[dict[str, Any]]:
    r = invoke(client, ROWS, "/predict")
    assert r.status_code == 200
    out: list[dict[str, Any]] = r.json()
    return out


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def test_invocations_answers_the_records_of_predict(
    client: TestClient, predicted: list[dict[str, Any]]
) -> None:
    r = invoke(client, {"dataframe_split": FRAME.to_dict(orient="split")})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-model-version"] == "v1"
    assert r.content == b'{"predictions":' + orjson.dumps(predicted) + b"}"  # the very bytes of each record


def test_a_gzip_body_and_the_reasons_query_and_header(client: TestClient) -> None:
    body = orjson.dumps({"dataframe_records": ROWS})
    r = client.post(
        "/invocations?reasons=2", content=gzip.compress(body), headers={**JSON, "content-encoding": "gzip"}
    )
    assert r.status_code == 200
    expected = client.post("/predict?reasons=2", content=orjson.dumps(ROWS), headers=JSON).json()
    assert r.json()["predictions"] == expected and all(len(p["reasons"]) == 2 for p in expected)
    by_header = invoke(client, body, **{"x-reason-codes": "2"})
    assert by_header.json()["predictions"] == expected


def test_imputed_columns_are_named_in_the_headers(client: TestClient) -> None:
    r = invoke(client, {"dataframe_split": FRAME.drop(columns=["x91"]).to_dict(orient="split")})
    assert r.status_code == 200 and r.headers["x-imputed-columns"] == "5; x91=5"


@pytest.mark.parametrize("content_type", ["text/csv", "text/csv; charset=utf-8", "application/csv"])
def test_a_csv_body_answers_the_records_of_predict(
    client: TestClient, predicted: list[dict[str, Any]], content_type: str
) -> None:
    r = client.post("/invocations", content=FRAME.to_csv(index=False), headers={"content-type": content_type})
    assert r.status_code == 200 and r.content == b'{"predictions":' + orjson.dumps(predicted) + b"}"


def test_a_csv_error_names_its_line_in_mlflows_shape(client: TestClient) -> None:
    bad = FRAME.copy()
    bad.loc[2, "x12"] = "12 dollars"
    r = client.post("/invocations", content=bad.to_csv(index=False), headers={"content-type": "text/csv"})
    body = r.json()
    assert r.status_code == 422 and body["error_code"] == "BAD_REQUEST"
    assert body["message"].startswith("1 of 5 row(s) cannot be scored; first: line 4 (row 2), field x12")
    assert [(e["row"], e["line"], e["field"]) for e in body["errors"]] == [(2, 4, "x12")]
    header = client.post("/invocations", content=b"X5,X12\nmonday,1\n", headers={"content-type": "text/csv"})
    assert header.status_code == 422 and "resembles 'x5'" in header.json()["message"]


# --- errors: MLflow's members, then problem+json -----------------------------------------------------------
def test_a_row_that_cannot_be_scored_names_row_field_and_reason(client: TestClient) -> None:
    r = invoke(client, {"dataframe_records": [ROWS[0], dict(ROWS[1], x12="12 dollars")]})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_TYPE
    body = r.json()
    assert list(body)[:2] == ["error_code", "message"] and body["error_code"] == "BAD_REQUEST"
    assert body["message"] == body["detail"]
    assert body["message"].startswith("1 of 2 row(s) cannot be scored; first: row 1, field x12")
    assert (
        body["type"].endswith("/invalid-rows")
        and body["status"] == 422
        and body["instance"] == "/invocations"
    )
    assert [(e["row"], e["field"], e["value"]) for e in body["errors"]] == [(1, "x12", "12 dollars")]
    assert (body["bad_rows"], body["bad_row_count"], body["error_count"]) == ([1], 1, 1)
    assert r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind", "fix"),
    [
        (FRAME.to_json(orient="split").encode(), {}, 422, "bad-body-shape", '{"dataframe_split": <it>}'),
        (b"{", {}, 400, "malformed-json", "not valid JSON"),
        (b"x5,x12\nmonday,1", {"content-type": "text/plain"}, 415, "unsupported-media-type", "or text/csv"),
        (b"{}", {"content-encoding": "br"}, 415, "unsupported-content-encoding", "gzip"),
        (orjson.dumps({"inputs": ROWS, "params": {"k": 1}}), {}, 422, "bad-option", "one param, 'reasons'"),
        (orjson.dumps({"inputs": ROWS}), {"x-reason-codes": "many"}, 422, "bad-option", "or 'all'"),
    ],
)
def test_every_error_is_in_mlflows_shape(
    client: TestClient, body: bytes, headers: dict[str, str], status: int, kind: str, fix: str
) -> None:
    r = invoke(client, body, **headers)
    assert r.status_code == status and r.headers["content-type"] == PROBLEM_TYPE
    problem = r.json()
    assert problem["error_code"] == "BAD_REQUEST" and problem["type"].endswith("/" + kind)
    assert fix in problem["message"], problem["message"]


def test_too_many_rows_is_a_413(approved_registry: Registry) -> None:
    with app_client(approved_registry, max_rows=2) as small:
        r = invoke(small, {"dataframe_records": ROWS[:3]})
    assert r.status_code == 413 and r.json()["error_code"] == "BAD_REQUEST" and r.json()["max_rows"] == 2


def test_errors_are_counted_as_for_predict(approved_registry: Registry) -> None:
    metrics = Metrics(CollectorRegistry(), flush_interval=3600)
    settings = Settings(artifacts_dir=approved_registry.root, reload_interval_seconds=0)
    with TestClient(create_app(settings, metrics=metrics), raise_server_exceptions=False) as c:
        assert c.get("/ping").status_code in (200, 503)
        invoke(c, ROWS)
    assert (
        metrics.registry.get_sample_value("propensity_input_errors_total", {"kind": "bad-body-shape"}) == 1.0
    )


def test_not_ready_is_a_503_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(artifacts_dir=tmp_path, reload_interval_seconds=0, startup_wait_seconds=0.1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as empty:
        for method, path in (("GET", "/ping"), ("GET", "/health"), ("POST", "/invocations")):
            r = empty.request(method, path, content=orjson.dumps({"inputs": ROWS}), headers=JSON)
            assert r.status_code == 503 and r.headers["retry-after"], (path, r.text)
            assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        version = empty.get("/version").json()
    assert version["model"] is None and version["model_version"] is None


# --- /ping, /health, /version -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/ping", "/health"])
def test_ping_answers_as_mlflows_server(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"\n", "text/plain")
    assert r.headers["x-model-version"] == "v1"


def test_version_names_the_service_and_the_served_model(client: TestClient) -> None:
    r = client.get("/version")
    assert r.status_code == 200
    body = r.json()
    assert body["service"] == "propensity-service" and body["service_version"]
    assert (body["model"], body["model_version"]) == ("propensity", "v1")


# --- the OpenAPI document ---------------------------------------------------------------------------------
def schema_errors(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    root = {**schema, "components": spec["components"]}
    return [e.message for e in jsonschema_rs.validator_for(root).iter_errors(instance)]


def declared(spec: dict[str, Any], path: str, method: str, status: int) -> tuple[str, dict[str, Any]]:
    ((media, content),) = spec["paths"][path][method]["responses"][str(status)]["content"].items()
    return media, content["schema"]


def test_the_paths_and_their_operation_ids(spec: dict[str, Any]) -> None:
    ids = {path: next(iter(ops.values()))["operationId"] for path, ops in spec["paths"].items()}
    assert {p: ids[p] for p in ("/invocations", "/ping", "/health", "/version")} == {
        "/invocations": "invocations",
        "/ping": "ping",
        "/health": "mlflow_health",
        "/version": "mlflow_version",
    }
    body = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "text/csv"}


def test_the_request_examples_are_answered_by_the_answer_example(
    client: TestClient, spec: dict[str, Any]
) -> None:
    operation = spec["paths"]["/invocations"]["post"]
    request = operation["requestBody"]["content"]["application/json"]
    answer = operation["responses"]["200"]["content"]["application/json"]["examples"]["batch"]["value"]
    for name in ("dataframe_split", "dataframe_records", "inputs_columns"):
        example = request["examples"][name]["value"]
        assert schema_errors(spec, request["schema"], example) == [], name
        assert invoke(client, example).json() == answer, name
    reasons = invoke(client, request["examples"]["reasons"]["value"]).json()["predictions"]
    assert len(reasons[0]["reasons"]) == 3


def test_live_answers_match_their_declared_schemas(client: TestClient, spec: dict[str, Any]) -> None:
    answers = [
        ("/invocations", "post", invoke(client, {"inputs": ROWS})),
        ("/invocations", "post", invoke(client, {"inputs": [{"X5": "monday"}]})),
        ("/invocations", "post", invoke(client, b"[", **{"content-type": "application/xml"})),
        ("/ping", "get", client.get("/ping")),
        ("/health", "get", client.get("/health")),
        ("/version", "get", client.get("/version")),
    ]
    for path, method, r in answers:
        media, schema = declared(spec, path, method, r.status_code)
        assert r.headers["content-type"] == media, (path, r.status_code)
        if media != "text/plain":
            assert schema_errors(spec, schema, r.json()) == [], (path, r.status_code, r.text[:300])


def test_the_csv_body_is_declared(spec: dict[str, Any]) -> None:
    csv = spec["paths"]["/invocations"]["post"]["requestBody"]["content"]["text/csv"]
    assert csv["schema"]["type"] == "string"
    unsupported = spec["paths"]["/invocations"]["post"]["responses"]["415"]
    assert unsupported["content"][PROBLEM_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "`error_code` (BAD_REQUEST" in unsupported["description"]
