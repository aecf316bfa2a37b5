"""POST /feedback and GET /performance in process, over the embedded SQLite log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from service.model.notebook_import import import_notebook
from service.model.registry import Registry
from service.model.synthetic import make_synthetic_frame
from tests.conftest import app_client
from tests.unit.api.test_openapi import assert_conforms

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = Registry(tmp_path_factory.mktemp("feedback-registry"), "propensity")
    import_notebook(registry)
    return registry


@pytest.fixture(scope="module")
def api(registry: Registry) -> Iterator[TestClient]:
    with app_client(registry, prediction_log_flush_seconds=0.05, cache_enabled=False) as client:
        yield client


def rows(n: int, seed: int) -> list[dict[str, Any]]:
    frame = make_synthetic_frame(n, seed=seed).drop(columns=["y"], errors="ignore")
    records: list[dict[str, Any]] = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [dict(r, customer_id=f"S{seed}-{i}") for i, r in enumerate(records)]


def wait_logged(api: TestClient, n: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = api.get("/performance?by=all&since=1d").json()
        if body["cohorts"] and body["cohorts"][0]["predictions"] >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows logged")


def test_labels_match_and_realized_metrics_equal_sklearns(api: TestClient) -> None:
    sent = rows(400, seed=5)
    answer = api.post("/predict", json=sent)
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    phat = np.array([r["phat"] for r in answer.json()])
    wait_logged(api, 400)
    rng = np.random.default_rng(3)
    labels = (rng.random(400) < phat).astype(int)
    items = [{"request_id": request_id, "row": i, "label": int(labels[i])} for i in range(300)]
    items += [
        {"customer_id": f"S5-{i}", "label": int(labels[i]), "observed_at": time.time() + 5}
        for i in range(300, 400)
    ]
    items += [{"request_id": request_id, "row": 0, "label": int(labels[0])}]  # again: a duplicate
    items += [{"request_id": request_id, "row": 1, "label": 1 - int(labels[1])}]  # another: a conflict
    items += [{"request_id": "never-scored", "row": 0, "label": 1}]
    posted = api.post("/feedback", json=items)
    assert posted.status_code == 202, posted.text
    assert_conforms(api.get("/openapi.json").json(), "/feedback", "post", posted)
    body = posted.json()
    assert (body["matched"], body["duplicate"], body["conflicting"], body["unmatched"]) == (400, 1, 1, 1)
    assert body["conflicts"] == [{"item": 401, "label": 1 - int(labels[1]), "stored": int(labels[1])}]
    assert body["unmatched_items"] == [402]
    again = api.post("/feedback", json=items[:300]).json()  # idempotent: nothing counted twice
    assert (again["matched"], again["duplicate"]) == (0, 300)

    report = api.get("/performance?by=all&since=1d")
    assert report.status_code == 200
    assert_conforms(api.get("/openapi.json").json(), "/performance", "get", report)
    cohort = report.json()["cohorts"][0]
    assert (cohort["predictions"], cohort["labelled"]) == (400, 400)
    realized = cohort["realized"]
    assert abs(realized["auc"]["value"] - roc_auc_score(labels, phat)) <= 1e-9
    assert abs(realized["brier"]["value"] - brier_score_loss(labels, phat)) <= 1e-9
    assert abs(realized["log_loss"]["value"] - log_loss(labels, phat)) <= 1e-9
    assert realized["auc"]["lower"] < realized["auc"]["value"] < realized["auc"]["upper"]


def test_bad_labels_are_named_by_item_field_and_reason_and_nothing_is_stored(api: TestClient) -> None:
    items = [
        {"request_id": "r", "row": 0, "label": 1},
        {"request_id": "r", "row": -1, "label": 2},
        {"customer_id": "C", "request_id": "r", "label": 1},
        {"label": 1, "colour": "red"},
        {"request_id": "r", "row": 0, "label": 0, "observed_at": "yesterday"},
    ]
    answer = api.post("/feedback", json=items)
    assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
    errors = {(e["row"], e["field"]) for e in answer.json()["errors"]}
    assert {(1, "row"), (1, "label"), (2, "customer_id"), (3, "colour"), (4, "observed_at")} <= errors
    assert (0, "label") not in errors and answer.json()["bad_row_count"] == 4
    assert (
        api.post("/feedback", content=b"[{", headers={"content-type": "application/json"}).status_code == 400
    )
    assert api.post("/feedback", json=[]).status_code == 422
    too_many = [{"request_id": "r", "row": i, "label": 1} for i in range(10_001)]
    assert api.post("/feedback", json=too_many).status_code == 413
    text = api.post("/feedback", content=b"a,b", headers={"content-type": "text/csv"})
    assert text.status_code == 415


def test_performance_refuses_what_it_cannot_read(api: TestClient) -> None:
    assert api.get("/performance?since=soon").status_code == 422
    assert api.get("/performance?by=week").status_code == 422
    assert api.get("/performance?by=version&since=2h").json()["by"] == "version"
    assert api.get("/performance/shadow?since=soon").status_code == 422


def test_shadow_performance_without_shadow_scoring_has_no_pair(api: TestClient) -> None:
    """The real pairs: tests/integration/test_shadow.py (a staging model, real workers, labels)."""
    answer = api.get("/performance/shadow?since=1d")
    assert answer.status_code == 200
    assert_conforms(api.get("/openapi.json").json(), "/performance/shadow", "get", answer)
    body = answer.json()
    assert body["pairs"] == [] and body["min_labels"] == 100 and body["until"] > body["since"]


def test_the_routes_say_when_the_log_is_off(registry: Registry, tmp_path: Path) -> None:
    with app_client(registry, prediction_log_enabled=False) as client:
        answer = client.post("/feedback", json=[{"request_id": "r", "row": 0, "label": 1}])
        assert answer.status_code == 404 and "prediction log is off" in answer.json()["detail"]
        assert client.get("/performance").status_code == 404
        assert client.get("/performance/shadow").status_code == 404


def test_an_answer_from_the_cache_is_logged_too(registry: Registry, tmp_path: Path) -> None:
    own_log = f"sqlite:///{tmp_path / 'log.sqlite'}"  # not the module's: its rows would count below
    with app_client(
        registry, prediction_log_flush_seconds=0.05, cache_enabled=True, prediction_log_url=own_log
    ) as client:
        body = rows(60, seed=9)  # over the cache's minimum body size
        first = client.post("/predict", json=body)
        second = client.post("/predict", json=body)
        assert first.status_code == second.status_code == 200
        assert second.headers.get("x-cache") == "hit"
        wait_logged(client, 120)
        items = [{"request_id": second.headers["x-request-id"], "row": i, "label": 1} for i in range(60)]
        assert client.post("/feedback", json=items).json()["matched"] == 60  # the hit's own rows


def test_answers_from_the_cache_are_left_out_when_asked(registry: Registry, tmp_path: Path) -> None:
    own_log = f"sqlite:///{tmp_path / 'log.sqlite'}"
    with app_client(
        registry,
        prediction_log_flush_seconds=0.05,
        cache_enabled=True,
        prediction_log_url=own_log,
        prediction_log_cache_hits=False,
    ) as client:
        body = rows(60, seed=10)
        client.post("/predict", json=body)
        assert client.post("/predict", json=body).headers.get("x-cache") == "hit"
        client.post("/predict", json=rows(30, seed=11))  # scored: its rows come after the hit's would
        wait_logged(client, 90)
        time.sleep(0.3)
        assert performance_rows(client) == 90  # the 60 scored, not the hit's copy, and the 30


def performance_rows(client: TestClient) -> int:
    cohorts = client.get("/performance?by=all&since=1d").json()["cohorts"]
    return int(cohorts[0]["predictions"])
