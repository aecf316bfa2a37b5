"""The OpenAPI document: typed answers that the live answers match, examples that are live answers, and
docs pages that load nothing from another host."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette

from service.api import openapi_docs
from service.api.app import create_app
from service.api.problems import PROBLEM_TYPE
from service.api.state import AppState
from service.model.registry import Registry
from service.model.schema import notebook_reference
from service.settings import Settings
from tests.conftest import make_client
from tests.unit.api.test_bad_input import CASES

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


@pytest.fixture(scope="module")
def lenient(approved_registry: Registry) -> Iterator[TestClient]:
    yield from make_client(approved_registry, batch_error_policy="score-valid")


def schema_errors(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    """What is wrong with `instance` under `schema` (which may $ref the document's components)."""
    root = {**schema, "components": spec["components"]}
    return [e.message for e in jsonschema_rs.validator_for(root).iter_errors(instance)]


def answer_schema(spec: dict[str, Any], path: str, method: str, status: int) -> tuple[str, dict[str, Any]]:
    """The media type and schema the document declares for this answer."""
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not declare {status}"
    content = responses[str(status)]["content"]
    media_type = next(iter(content))  # the first is the default answer (/predict: JSON before CSV)
    return media_type, content[media_type]["schema"]


def assert_conforms(spec: dict[str, Any], path: str, method: str, response: Any) -> None:
    """The live answer has the declared media type, required headers and a body of the declared schema."""
    media_type, schema = answer_schema(spec, path, method, response.status_code)
    assert response.headers["content-type"] == media_type
    declared = spec["paths"][path][method]["responses"][str(response.status_code)].get("headers", {})
    for name, header in declared.items():
        if header.get("required"):
            assert response.headers.get(name), f"{name} missing"
    assert schema_errors(spec, schema, response.json()) == []


# --- the document -----------------------------------------------------------------------------------------
PATHS = {
    # /predict's own
    "/predict": "post",
    "/model": "get",
    "/health/live": "get",
    "/health/ready": "get",
    # the Open Inference Protocol (docs/open-inference-protocol.md)
    "/v2": "get",
    "/v2/health/live": "get",
    "/v2/health/ready": "get",
    "/v2/models/{name}": "get",
    "/v2/models/{name}/ready": "get",
    "/v2/models/{name}/infer": "post",
    "/v2/models/{name}/versions/{version}": "get",
    "/v2/models/{name}/versions/{version}/ready": "get",
    "/v2/models/{name}/versions/{version}/infer": "post",
    # MLflow's scoring protocol (docs/mlflow.md)
    "/invocations": "post",
    "/ping": "get",
    "/health": "get",
    "/version": "get",
    # the loop after the answer (docs/monitoring.md)
    "/feedback": "post",
    "/performance": "get",
    "/performance/shadow": "get",
}
V2_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/V2Error"}}}


def test_every_answer_is_typed_and_every_error_is_a_problem(spec: dict[str, Any]) -> None:
    assert {path: list(ops) for path, ops in spec["paths"].items()} == {p: [m] for p, m in PATHS.items()}
    assert "/metrics" not in spec["paths"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's 422 is never answered
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            success = "202" if "202" in responses else "200"  # /feedback accepts
            media_type, ok = next(iter(responses[success]["content"].items()))
            if media_type == "application/json":
                assert ok["schema"].get("$ref", "").startswith("#/components/schemas/"), (path, ok)
            else:  # MLflow's /ping and /health answer text
                assert path in ("/ping", "/health") and media_type == "text/plain", path
                assert ok["schema"] == {"type": "string"}
            for status, response in responses.items():
                if status == success:
                    continue
                assert int(status) >= 400
                if path.startswith("/v2") and status != "500":  # the protocol's own error body
                    assert response["content"] == V2_ERROR, (method, path, status)
                    continue
                assert response["content"] == {
                    PROBLEM_TYPE: {**response["content"][PROBLEM_TYPE], "schema": {"$ref": PROBLEM_REF}}
                }, (method, path, status)
            assert {"500"} <= set(responses), (path, method)


PROBLEM_REF = "#/components/schemas/Problem"


def test_a_result_lists_the_approved_models_inputs(spec: dict[str, Any]) -> None:
    result = spec["components"]["schemas"]["PredictResult"]
    features = set(notebook_reference()["selected_features_in_selection_order"])
    assert len(features) == 25
    assert set(result["properties"]) == features | {"business_outcome", "phat", "customer_id", "reasons"}
    # a retrained version answers with its own inputs: only these two are promised to every client
    assert result["required"] == ["business_outcome", "phat"]
    # other versions' inputs are numbers; ids under other configured names strings or numbers too
    assert result["additionalProperties"] == {
        "anyOf": [{"type": "number"}, {"type": "string"}, {"type": "null"}]
    }
    assert result["properties"]["x5_tuesday"]["type"] == "integer"
    assert result["properties"]["x91"]["type"] == "number"


def test_the_row_schema_types_the_columns_the_approved_model_reads(spec: dict[str, Any]) -> None:
    row = spec["components"]["schemas"]["Row"]
    columns = {"x5", "x12", "x31", "x44", "x53", "x56", "x58", "x62", "x81", "x91"}
    assert set(row["properties"]) == columns | {"customer_id"}  # and the pass-through id
    assert row["additionalProperties"] is True  # the other 90 columns may come along
    assert row["properties"]["x5"]["type"] == ["string", "null"]
    assert row["properties"]["x12"]["type"] == ["number", "string", "null"]


def test_operation_ids_are_the_route_names(spec: dict[str, Any]) -> None:
    ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    assert ids == {  # generated clients' function names
        *("predict", "model_info", "live", "ready"),
        *("v2_infer", "v2_version_infer", "v2_server_metadata", "v2_live", "v2_ready"),
        *("v2_model_metadata", "v2_model_version_metadata", "v2_model_ready", "v2_model_version_ready"),
        *("invocations", "ping", "mlflow_health", "mlflow_version"),
        *("feedback", "performance", "shadow_performance"),
    }


def test_every_route_is_on_the_app_itself_with_predict_first(tmp_path: Path) -> None:
    """No route sits behind an included router (which FastAPI walks twice per call), and /predict is
    the first route a call is matched against after the document's own."""
    app = create_app(Settings(artifacts_dir=tmp_path))
    paths = [getattr(route, "path", None) for route in app.router.routes]
    assert None not in paths and len(paths) == len(set(paths))
    assert paths[:2] == ["/openapi.json", "/predict"]
    assert paths.index("/v2/models/{name}/infer") < paths.index("/v2")


def test_ready_schema_allows_a_worker_behind_its_alias(spec: dict[str, Any]) -> None:
    ready = {"$ref": "#/components/schemas/Ready"}
    behind = {"status": "ready", "model": "propensity", "version": "v1", "behind_alias": True}
    assert schema_errors(spec, ready, {**behind, "alias_version": "v2"}) == []
    assert schema_errors(spec, ready, {"status": "loading", "model": "p", "version": "v1"}) != []


# --- examples are live answers ------------------------------------------------------------------------------
def examples(spec: dict[str, Any], status: int) -> dict[str, Any]:
    content = spec["paths"]["/predict"]["post"]["responses"][str(status)]["content"]
    media = content["application/json" if status == 200 else PROBLEM_TYPE]
    return media.get("examples") or {"example": {"value": media["example"]}}


def request_example(spec: dict[str, Any], name: str) -> Any:
    return spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["examples"][name][
        "value"
    ]


def assert_live(expected: Any, response: Any, where: str) -> None:
    live = response.json()
    assert live == expected, f"{where}: the example is not the live answer; paste this:\n{live!r}"


@pytest.mark.parametrize("name", ["one_row", "batch"])
def test_200_examples_are_the_live_answers(client: TestClient, spec: dict[str, Any], name: str) -> None:
    sent = request_example(spec, name)
    r = client.post("/predict", content=orjson.dumps(sent), headers=JSON)
    assert r.status_code == 200
    assert_live(examples(spec, 200)[name]["value"], r, f"openapi_examples.{name.upper()}")
    assert orjson.dumps(examples(spec, 200)[name]["value"]) == r.content  # the same bytes, keys in order


def test_score_valid_example_is_the_live_answer(lenient: TestClient, spec: dict[str, Any]) -> None:
    r = lenient.post("/predict", content=orjson.dumps(request_example(spec, "bad_row")), headers=JSON)
    assert r.status_code == 200 and r.headers["x-rejected-rows"] == "1"
    assert_live(examples(spec, 200)["score_valid"]["value"], r, "openapi_examples.SCORE_VALID")


def test_422_example_is_the_live_answer(client: TestClient, spec: dict[str, Any]) -> None:
    r = client.post("/predict", content=orjson.dumps(request_example(spec, "bad_row")), headers=JSON)
    assert r.status_code == 422
    assert_live(examples(spec, 422)["example"]["value"], r, "openapi_examples.BAD_ROW_PROBLEM")


def test_request_examples_are_rows_of_the_schema(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    for name, example in body["examples"].items():
        assert schema_errors(spec, body["schema"], example["value"]) == [], name


# --- live answers match their schemas ----------------------------------------------------------------------
def test_predict_answers_match_the_schema(
    client: TestClient, lenient: TestClient, spec: dict[str, Any], reference_rows: list[dict[str, Any]]
) -> None:
    for body in (reference_rows[0], reference_rows, {"x5": "someday", "x91": None}):
        r = client.post("/predict", content=orjson.dumps(body), headers=JSON)
        assert r.status_code == 200
        assert_conforms(spec, "/predict", "post", r)
    r = lenient.post("/predict", content=orjson.dumps([reference_rows[0], {"x44": "abc"}]), headers=JSON)
    assert r.status_code == 200 and "errors" in r.json()[1]
    assert_conforms(spec, "/predict", "post", r)


def test_model_and_health_answers_match_their_schemas(client: TestClient, spec: dict[str, Any]) -> None:
    for path in ("/model", "/health/live", "/health/ready"):
        r = client.get(path)
        assert r.status_code == 200
        assert_conforms(spec, path, "get", r)
    assert client.get("/model").json()["coefficients"]["x91"] == pytest.approx(0.766, abs=1e-3)


@pytest.mark.parametrize(
    ("name", "body", "headers", "status"), [c[:4] for c in CASES], ids=[c[0] for c in CASES]
)
def test_every_bad_input_answer_is_a_declared_problem(
    client: TestClient, spec: dict[str, Any], name: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    r = client.post("/predict", content=body, headers=headers)
    assert r.status_code == status
    assert_conforms(spec, "/predict", "post", r)


def test_not_ready_answers_are_declared_problems(tmp_path: Path, spec: dict[str, Any]) -> None:
    settings = Settings(artifacts_dir=tmp_path, reload_interval_seconds=0, startup_wait_seconds=0.1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as empty:
        for method, path in (("get", "/health/ready"), ("get", "/model"), ("post", "/predict")):
            r = empty.request(method.upper(), path, content=b"{}", headers=JSON)
            assert r.status_code == 503, r.text
            assert_conforms(spec, path, method, r)
            assert r.headers["retry-after"]


def test_internal_errors_are_declared_problems(
    approved_registry: Registry, spec: dict[str, Any], reference_rows: list[dict[str, Any]]
) -> None:
    clients = make_client(approved_registry)
    c = next(clients)
    assert isinstance(c.app, Starlette)
    model = AppState.of(c.app).holder.current
    assert model is not None

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    model.score_batch = broken  # type: ignore[method-assign]
    r = c.post("/predict", content=orjson.dumps(reference_rows[0]), headers=JSON)
    assert r.status_code == 500
    assert_conforms(spec, "/predict", "post", r)
    clients.close()


# --- the docs pages: Swagger UI and ReDoc from the app itself -----------------------------------------------
ABSOLUTE = re.compile(rb"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# In the assets, URLs in a position that loads them (an image's src, a CSS url(), a fetch): what a page
# could ask another host for. The one there is ReDoc's "API docs by Redocly" logo; the pages'
# Content-Security-Policy (img-src 'self' data:) keeps the browser from requesting it.
LOADED = re.compile(rb"""(?:\bsrc\s*[:=]|\burl\(|\bfetch\(|importScripts\()\s*["'`]?(https?://[^"'`)\s]+)""")
ALLOWED_BLOCKED_LOADS = {b"https://cdn.redoc.ly/redoc/logo-mini.svg"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_name_no_other_host(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert b"http://" not in r.content and b"https://" not in r.content
    assert ABSOLUTE.findall(r.content) == []
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src 'self' data:" in csp
    assert "http" not in csp and "*" not in csp
    refs = re.findall(rb'(?:src|href)="([^"]+)"', r.content) + re.findall(rb'spec-url="([^"]+)"', r.content)
    assert refs, "the page loads its assets"
    for ref in refs:
        assert ref.startswith(b"/"), ref
        asset = client.get(ref.decode())
        assert asset.status_code == 200 and len(asset.content) > 100, ref


def test_docs_assets_load_nothing_from_elsewhere(client: TestClient) -> None:
    loaded: set[bytes] = set()
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = client.get(f"{openapi_docs.DOCS_ASSETS}/{name}")
        assert r.status_code == 200 and len(r.content) > 100_000, name
        loaded |= set(LOADED.findall(r.content))
    assert loaded <= ALLOWED_BLOCKED_LOADS, loaded - ALLOWED_BLOCKED_LOADS
    assert (
        client.get(f"{openapi_docs.DOCS_ASSETS}/swagger-ui.css")
        .headers["content-type"]
        .startswith("text/css")
    )


def test_swagger_ui_asks_no_validator(client: TestClient) -> None:
    assert b'"validatorUrl": null' in client.get("/docs").content  # else a badge image from swagger.io
