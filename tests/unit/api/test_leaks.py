"""What a hostile or curious client cannot get: its own Host header back in a redirect, or a server path or
hash out of an error body (the log keeps those)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.api.state import AppState
from service.errors import ArtifactIntegrityError
from service.model.registry import Registry
from service.model.schema import example_rows
from tests.conftest import app_client

ROW: dict[str, Any] = example_rows()["rows"][0]
SECRET = "/srv/secret/registry/propensity/v2: model.joblib sha256 0123456789ab… does not match fedcba987654…"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/predict/"), ("GET", "/health/ready/"), ("GET", "/health/live/"), ("GET", "/model/")],
)
def test_a_hostile_host_is_not_reflected_into_a_redirect(client: TestClient, method: str, path: str) -> None:
    r = client.request(
        method,
        path,
        content=orjson.dumps(ROW) if method == "POST" else None,
        headers={"host": "evil.example", "content-type": "application/json"},
        follow_redirects=False,
    )
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert "location" not in r.headers
    assert "evil" not in r.text and not any("evil" in v for v in r.headers.values())


def test_a_server_side_error_keeps_its_paths_and_hashes_in_the_log(
    approved_registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    with app_client(approved_registry) as client:
        pipeline = AppState.of(client.app).pipeline  # type: ignore[arg-type]

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise ArtifactIntegrityError(SECRET)

        pipeline.infer = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="propensity.api"):
            r = client.post(
                "/predict",
                content=orjson.dumps(ROW),
                headers={"content-type": "application/json", "x-request-id": "req-42"},
            )
    problem = r.json()
    assert r.status_code == 500 and problem["type"].endswith("/problems/artifact-integrity")
    assert problem["detail"] == "the server could not answer; request id req-42"
    assert "/srv" not in r.text and "0123456789ab" not in r.text
    assert any(SECRET in record.getMessage() and "req-42" in record.getMessage() for record in caplog.records)
