"""The /predict contract, in process: exact answers, key order, batch independence, shapes."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.model.schema import notebook_reference
from service.model.synthetic import make_synthetic_frame

FEATURES = notebook_reference()["selected_features_in_selection_order"]
EXPECTED_KEYS = sorted([*FEATURES, "business_outcome", "phat"])


def post(client: TestClient, body: Any, **headers: str) -> Any:
    return client.post(
        "/predict", content=orjson.dumps(body), headers={"content-type": "application/json", **headers}
    )


def as_strings(row: dict[str, Any]) -> dict[str, Any]:
    return {k: ("" if v is None else str(v)) for k, v in row.items()}


def test_reference_rows_as_an_array(
    client: TestClient, reference_rows: list[dict[str, Any]], reference_phat: list[float]
) -> None:
    r = post(client, reference_rows)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["x-model-version"] == "v1"
    body = r.json()
    assert [abs(row["phat"] - want) <= 1e-9 for row, want in zip(body, reference_phat, strict=True)] == [
        True
    ] * 5
    assert [row["business_outcome"] for row in body] == [0, 0, 1, 0, 1]


@pytest.mark.parametrize("index", range(5))
def test_each_reference_row_as_an_object_and_all_strings(
    client: TestClient, reference_rows: list[dict[str, Any]], reference_phat: list[float], index: int
) -> None:
    for row in (reference_rows[index], as_strings(reference_rows[index])):
        r = post(client, row)
        assert r.status_code == 200
        body = r.json()
        assert isinstance(body, dict)
        assert abs(body["phat"] - reference_phat[index]) <= 1e-9


def test_keys_exact_and_alphabetical(client: TestClient, reference_rows: list[dict[str, Any]]) -> None:
    raw = post(client, reference_rows[0]).content
    keys = list(orjson.loads(raw))
    assert keys == EXPECTED_KEYS == sorted(keys)
    assert len(keys) == 27
    # the raw bytes really are in that order, not just a parsed dict
    positions = [raw.index(f'"{k}":'.encode()) for k in EXPECTED_KEYS]
    assert positions == sorted(positions)


def test_model_inputs_are_what_the_glm_saw(client: TestClient, reference_rows: list[dict[str, Any]]) -> None:
    body = post(client, reference_rows[0]).json()
    assert body["x5_tuesday"] == 1 and body["x5_monday"] == 0 and body["x31_germany"] == 1
    assert body["x81_July"] == 0  # April is the baseline
    assert body["x12"] == pytest.approx((6882.34 - 20.485288437500007) / 5775.428520080214, abs=1e-15)
    assert type(body["x5_tuesday"]) is int and type(body["x12"]) is float


def test_categories_trimmed_and_case_folded(client: TestClient, reference_rows: list[dict[str, Any]]) -> None:
    base = post(client, reference_rows[0]).content
    row = dict(reference_rows[0], x5="TUESDAY ", x31=" Germany", x81="april")
    assert post(client, row).content == base


def test_missing_spellings_and_absent_keys_agree(
    client: TestClient, reference_rows: list[dict[str, Any]]
) -> None:
    answers = set()
    for spelling in (None, "", "nan", "NaN", "null", "None", "ABSENT"):
        row = dict(reference_rows[0])
        if spelling == "ABSENT":
            del row["x44"]
        else:
            row["x44"] = spelling
        answers.add(post(client, row).content)
    assert len(answers) == 1


def test_unknown_keys_are_ignored(client: TestClient, reference_rows: list[dict[str, Any]]) -> None:
    base = post(client, reference_rows[0]).content
    assert post(client, dict(reference_rows[0], order_ref="abc-1", extra={"a": 1})).content == base
    # a pass-through id (customer_id by default) is not unknown: it comes back with the result
    with_id = post(client, dict(reference_rows[0], customer_id="abc-1")).json()
    assert with_id.pop("customer_id") == "abc-1" and orjson.dumps(with_id) == base
    metrics = client.get("/metrics").text
    assert "propensity_unknown_keys_total" in metrics


def test_unseen_category_scored_as_missing_and_counted(
    client: TestClient, reference_rows: list[dict[str, Any]]
) -> None:
    as_missing = post(client, dict(reference_rows[0], x31=None))
    unseen = post(client, dict(reference_rows[0], x31="mars"))
    assert unseen.status_code == 200 and unseen.headers["x-unseen-categories"] == "1"
    assert unseen.content == as_missing.content
    assert 'propensity_unseen_categories_total{column="x31"}' in client.get("/metrics").text


def test_batch_independence(client: TestClient, reference_rows: list[dict[str, Any]]) -> None:
    rows = make_synthetic_frame(9_995, 11, target=False)
    batch: list[Any] = orjson.loads(rows.to_json(orient="records"))
    rng = random.Random(5)
    positions = rng.sample(range(10_000), 5)
    for pos, row in zip(sorted(positions), reference_rows, strict=True):
        batch.insert(pos, row)
    assert len(batch) == 10_000
    big = post(client, batch)
    assert big.status_code == 200
    out = orjson.loads(big.content)
    for pos, row in zip(sorted(positions), reference_rows, strict=True):
        alone = post(client, [row]).content
        assert orjson.dumps([out[pos]]) == alone


def test_same_answer_whatever_the_order(client: TestClient, reference_rows: list[dict[str, Any]]) -> None:
    forward = post(client, reference_rows).json()
    backward = post(client, list(reversed(reference_rows))).json()
    assert forward == list(reversed(backward))


def test_request_is_not_mutated(client: TestClient, reference_rows: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(reference_rows)
    post(client, reference_rows)
    assert reference_rows == before


def test_model_endpoint(client: TestClient) -> None:
    body = client.get("/model").json()
    assert body["version"] == "v1" and body["name"] == "propensity" and len(body["sha256"]) == 64
    assert body["selected_features"] == FEATURES
    assert body["cutoff"]["value"] == 0.712
    assert body["coefficients"]["x91"] == notebook_reference()["final_coefficients"]["x91"]
    assert set(body["input_schema"]["categories"]) == {"x5", "x31", "x81", "x82"}
    assert body["metrics"]["auc"]["test"] > 0.8


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready").json()
    assert ready["status"] == "ready" and ready["version"] == "v1"
    spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"one_row", "all_strings", "batch", "bad_row"}
    assert examples["one_row"]["value"]["x12"] == "$6,882.34 "
    assert {"200", "400", "413", "415", "422", "503"} <= set(predict["responses"])
    assert client.get("/docs").status_code == 200
