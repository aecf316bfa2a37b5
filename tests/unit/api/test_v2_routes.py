"""The Open Inference Protocol door in process: health and metadata, inference in JSON and binary tensor
data with the bits of /predict, the protocol's error bodies and statuses, readiness as /health/ready,
and the OpenAPI document's V2 operations matching their live answers."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from service.api.app import create_app
from service.api.v2_routes import _header_length
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.v2_request import InferenceRequestError
from service.settings import Settings
from tests.conftest import app_client, make_client
from tests.unit.serving.v2_requests import binary_body, columns_of_rows, json_body, outputs_of

ROWS: list[dict[str, Any]] = example_rows()["rows"]
COLUMNS = columns_of_rows(ROWS)
INFER = "/v2/models/propensity/infer"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def cached(approved_registry: Registry) -> Iterator[TestClient]:
    """An app whose cache stores every answer (a hit is served without decoding)."""
    yield from make_client(approved_registry, cache_min_body_bytes=0)


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def predict_phat(client: TestClient, rows: list[dict[str, Any]]) -> list[float]:
    return [r["phat"] for r in client.post("/predict", json=rows).json()]


def infer(
    client: TestClient, body: bytes, header_length: int | None = None, path: str = INFER, **headers: str
) -> Any:
    if header_length is not None:
        headers |= {
            "inference-header-content-length": str(header_length),
            "content-type": "application/octet-stream",
        }
    return client.post(path, content=body, headers={**JSON, **headers})


def outputs(response: Any) -> dict[str, Any]:
    length = response.headers.get("inference-header-content-length")
    return outputs_of(response.content, None if length is None else int(length))


# --- health and metadata --------------------------------------------------------------------------------
def test_server_metadata_liveness_and_readiness(client: TestClient) -> None:
    meta = client.get("/v2").json()
    assert meta["name"] == "propensity-service" and meta["extensions"] == ["binary_tensor_data"]
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    ready = client.get("/v2/models/propensity/ready")
    assert ready.json() == {"name": "propensity", "ready": True} and ready.headers["x-model-version"] == "v1"
    assert client.get("/v2/models/propensity/versions/v1/ready").status_code == 200
    assert (
        client.get("/v2/models/propensity/versions/1/ready").status_code == 200
    )  # Triton spells versions "1"


def test_model_metadata_is_the_served_versions(client: TestClient) -> None:
    meta = client.get("/v2/models/propensity").json()
    assert meta["versions"] == ["v1"] and meta["platform"] == "propensity_glm"
    assert [i["name"] for i in meta["inputs"]] == [
        "x5",
        "x12",
        "x31",
        "x44",
        "x53",
        "x56",
        "x58",
        "x62",
        "x81",
        "x91",
    ]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]}["phat"] == "FP64"
    assert client.get("/v2/models/propensity/versions/v1").json() == meta


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/other",
        "/v2/models/other/ready",
        "/v2/models/propensity/versions/v9",
        "/v2/models/propensity/versions/v9/ready",
    ],
)
def test_unknown_models_and_versions_are_404s_in_the_protocols_shape(client: TestClient, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json()["kind"] == "unknown-model" and "this" in r.json()["error"]


def test_not_ready_is_a_503_everywhere_readiness_is_asked(tmp_path: Path) -> None:
    settings = Settings(artifacts_dir=tmp_path, reload_interval_seconds=0, startup_wait_seconds=0.1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as empty:
        assert empty.get("/v2/health/live").status_code == 200
        for path in ("/v2/health/ready", "/v2/models/propensity/ready", "/v2/models/propensity"):
            r = empty.get(path)
            assert r.status_code == 503 and r.json()["error"] and r.headers["retry-after"], path
        r = infer(empty, json_body(COLUMNS))
        assert r.status_code == 503 and r.json()["kind"] == "not-ready"
        assert empty.get("/v2/models/other/ready").status_code == 404  # a name is known before a model loads


# --- inference ------------------------------------------------------------------------------------------
def test_json_inference_has_the_bits_of_predict(client: TestClient) -> None:
    r = infer(client, json_body(COLUMNS, id="42"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-model-version"] == "v1" and "inference-header-content-length" not in r.headers
    body = r.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("propensity", "v1", "42")
    assert outputs(r)["phat"].tolist() == predict_phat(client, ROWS)


def test_binary_inference_answers_binary_tensor_data(client: TestClient) -> None:
    body, length = binary_body(COLUMNS, parameters={"binary_data_output": True})
    r = infer(client, body, length)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    header = int(r.headers["inference-header-content-length"])
    assert orjson.loads(r.content[:header])["outputs"][0]["parameters"]["binary_data_size"] == 8 * len(ROWS)
    assert outputs(r)["phat"].tolist() == predict_phat(client, ROWS)


def test_a_versioned_path_scores_with_that_version(client: TestClient) -> None:
    r = infer(client, json_body(COLUMNS), path="/v2/models/propensity/versions/v1/infer")
    assert r.status_code == 200 and r.json()["model_version"] == "v1"
    r = infer(client, json_body(COLUMNS), path="/v2/models/propensity/versions/v2/infer")
    assert r.status_code == 404 and "not served here" in r.json()["error"]


def test_a_gzip_request_body_is_read(client: TestClient) -> None:
    body, length = binary_body(COLUMNS)
    r = infer(client, gzip.compress(body), length, **{"content-encoding": "gzip"})
    assert r.status_code == 200 and outputs(r)["phat"].tolist() == predict_phat(client, ROWS)


def test_a_cached_binary_answer_keeps_its_header_length(cached: TestClient) -> None:
    body, length = binary_body(COLUMNS, parameters={"binary_data_output": True})
    for accept in ("identity", "gzip"):
        first = infer(cached, body, length, **{"accept-encoding": accept})
        again = infer(cached, body, length, **{"accept-encoding": accept})
        assert again.headers.get("x-cache") == "hit", accept
        assert again.headers["content-type"] == "application/octet-stream"
        assert (
            again.headers["inference-header-content-length"]
            == first.headers["inference-header-content-length"]
        )
        assert again.content == first.content  # httpx undid the gzip of the stored answer
        assert outputs(again)["phat"].tolist() == outputs(first)["phat"].tolist()


def test_imputed_and_unknown_inputs_are_reported(client: TestClient) -> None:
    lean = {c: v for c, v in COLUMNS.items() if c != "x91"} | {"colour": ["red"] * len(ROWS)}
    r = infer(client, json_body(lean))
    assert r.status_code == 200 and r.headers["x-imputed-columns"] == f"{len(ROWS)}; x91={len(ROWS)}"
    assert r.headers["x-unknown-keys"] == "1; colour"
    assert r.json()["parameters"] == {"imputed_inputs": "x91", "unknown_inputs": "colour"}


def test_reason_codes_from_the_query_or_the_body(client: TestClient) -> None:
    by_query = client.post(INFER + "?reasons=2", content=json_body(COLUMNS), headers=JSON)
    by_body = infer(client, json_body(COLUMNS, parameters={"reasons": 2}))
    assert outputs(by_query)["reasons"].tolist() == outputs(by_body)["reasons"].tolist()
    assert outputs(by_body)["reasons"].shape == (len(ROWS), 2)


# --- errors ---------------------------------------------------------------------------------------------
ERRORS: dict[str, tuple[bytes, dict[str, str], int, str]] = {
    "bad row": (
        json_body({**COLUMNS, "x12": ["12 dollars", *COLUMNS["x12"][1:]]}),
        {},
        400,
        "row 0, field x12: not a money amount",
    ),
    "fp32": (
        orjson.dumps({"inputs": [{"name": "x44", "datatype": "FP32", "shape": [1], "data": [0.5]}]}),
        {},
        400,
        "send it as FP64",
    ),
    "no model column": (
        orjson.dumps({"inputs": [{"name": "input0", "datatype": "FP64", "shape": [1], "data": [0.5]}]}),
        {},
        400,
        "named by the model's columns",
    ),
    "header length not a number": (
        json_body(COLUMNS),
        {"inference-header-content-length": "ten"},
        400,
        "in bytes",
    ),
    "a parameter that is an object": (
        json_body(COLUMNS, parameters={"note": {"a": 1}}),
        {},
        400,
        "is not valid",
    ),
    "csv": (b"x12\n$1\n", {"content-type": "text/csv"}, 415, "application/octet-stream"),
    "malformed": (b'{"inputs": [', {}, 400, "not valid JSON"),
    "unsupported coding": (json_body(COLUMNS), {"content-encoding": "br"}, 415, "gzip or deflate"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_are_the_protocols_error_bodies(client: TestClient, case: str) -> None:
    body, headers, status, fix = ERRORS[case]
    r = infer(client, body, None, **headers)
    assert r.status_code == status and r.headers["content-type"] == "application/json", r.text
    assert fix in r.json()["error"], r.json()


def test_a_bad_row_error_keeps_the_problems_members(client: TestClient) -> None:
    body = ERRORS["bad row"][0]
    got = infer(client, body).json()
    assert got["kind"] == "invalid-rows" and got["bad_rows"] == [0] and got["bad_row_count"] == 1
    assert got["errors"] == [
        {"row": 0, "field": "x12", "reason": got["errors"][0]["reason"], "value": "12 dollars"}
    ]


def test_too_many_rows_answers_413(approved_registry: Registry) -> None:
    with app_client(approved_registry, max_rows=2) as small:
        r = infer(small, json_body(COLUMNS))
        assert r.status_code == 413 and "exceed the limit of 2 rows" in r.json()["error"]
        assert r.json()["max_rows"] == 2


def test_the_metrics_label_v2_routes(client: TestClient) -> None:
    infer(client, json_body(COLUMNS))
    client.get("/v2/health/ready")
    text = client.get("/metrics").text
    assert 'route="/v2/models/propensity/infer"' in text and 'route="/v2/health/ready"' in text


# --- the document ---------------------------------------------------------------------------------------
def schema_of(
    spec: dict[str, Any], path: str, method: str, status: int, media: str = "application/json"
) -> Any:
    schema = spec["paths"][path][method]["responses"][str(status)]["content"][media]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": spec["components"]})


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v2", "/v2"),
        ("/v2/health/live", "/v2/health/live"),
        ("/v2/health/ready", "/v2/health/ready"),
        ("/v2/models/propensity", "/v2/models/{name}"),
        ("/v2/models/propensity/ready", "/v2/models/{name}/ready"),
        ("/v2/models/propensity/versions/v1", "/v2/models/{name}/versions/{version}"),
    ],
)
def test_v2_answers_match_the_document(
    client: TestClient, spec: dict[str, Any], path: str, template: str
) -> None:
    r = client.get(path)
    assert schema_of(spec, template, "get", r.status_code).is_valid(r.json())


def test_inference_answers_and_errors_match_the_document(client: TestClient, spec: dict[str, Any]) -> None:
    template = "/v2/models/{name}/infer"
    ok = infer(client, json_body(COLUMNS, parameters={"reasons": 1}))
    assert list(schema_of(spec, template, "post", 200).iter_errors(ok.json())) == []
    for body, headers, status, _ in ERRORS.values():
        r = infer(client, body, None, **headers)
        assert list(schema_of(spec, template, "post", status).iter_errors(r.json())) == [], r.text
    missing = client.get("/v2/models/other")
    assert schema_of(spec, "/v2/models/{name}", "get", 404).is_valid(missing.json())
    request_schema = spec["paths"][template]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert jsonschema_rs.validator_for(request_schema).is_valid(orjson.loads(json_body(COLUMNS, id="x")))


def test_a_header_length_that_is_a_digit_only_to_str_isdigit_is_a_400() -> None:
    """b"\\xb2" is "²" in latin-1: str.isdigit() says yes and int() raises (a 500 before)."""
    request = Request({"type": "http", "headers": [(b"inference-header-content-length", b"\xb2")]})
    with pytest.raises(InferenceRequestError, match="in bytes"):
        _header_length(request)


@pytest.mark.parametrize(
    "template", ["/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"]
)
def test_the_request_example_is_answered_by_the_answer_example(
    client: TestClient, spec: dict[str, Any], template: str
) -> None:
    operation = spec["paths"][template]["post"]
    request = operation["requestBody"]["content"]["application/json"]
    answer = operation["responses"]["200"]["content"]["application/json"]
    example, expected = request["examples"]["three_rows"]["value"], answer["examples"]["three_rows"]["value"]
    assert jsonschema_rs.validator_for({**request["schema"], "components": spec["components"]}).is_valid(
        example
    )
    path = template.replace("{name}", "propensity").replace("{version}", "v1")
    live = infer(client, orjson.dumps(example), path=path).json()
    assert live == expected, f"the example is not the live answer; it is:\n{live!r}"
    assert schema_of(spec, template, "post", 200).is_valid(expected)
