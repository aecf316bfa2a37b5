"""The app logs request ids: of errors and slow requests always, of every request with access_log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from service.model.registry import Registry
from tests.conftest import make_client


def lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"request_id={request_id} " in r.getMessage()]


@pytest.fixture(scope="module")
def quiet(approved_registry: Registry) -> Iterator[Any]:
    yield from make_client(approved_registry)


def test_errors_are_logged_with_their_id_and_fast_successes_are_not(
    quiet: Any, reference_rows: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="propensity.api")
    ok = quiet.post(
        "/predict",
        content=orjson.dumps(reference_rows[0]),
        headers={"x-request-id": "ok-1", "content-type": "application/json"},
    )
    bad = quiet.post(
        "/predict", content=b"{", headers={"x-request-id": "bad-1", "content-type": "application/json"}
    )
    assert (ok.status_code, bad.status_code) == (200, 400)
    assert ok.headers["x-request-id"] == "ok-1" and bad.headers["x-request-id"] == "bad-1"
    assert lines(caplog, "ok-1") == []
    assert len(lines(caplog, "bad-1")) == 1 and "POST /predict -> 400" in lines(caplog, "bad-1")[0]


@pytest.mark.parametrize("overrides", [{"access_log": True}, {"slow_request_seconds": 1e-6}])
def test_every_request_or_every_slow_one_is_logged(
    approved_registry: Registry,
    reference_rows: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
) -> None:
    caplog.set_level("INFO", logger="propensity.api")
    for client in make_client(approved_registry, **overrides):
        r = client.post(
            "/predict",
            content=orjson.dumps(reference_rows[0]),
            headers={"x-request-id": "r-2", "content-type": "application/json"},
        )
        assert r.status_code == 200
    assert len(lines(caplog, "r-2")) == 1 and "POST /predict -> 200 in " in lines(caplog, "r-2")[0]
