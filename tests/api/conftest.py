"""Fixtures for the HTTP API: an in-process client over the approved model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.model.registry import Registry
from service.settings import Settings


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("the app never became ready")


def make_client(registry: Registry, **overrides: Any) -> Iterator[TestClient]:
    settings = Settings(artifacts_dir=registry.root, reload_interval_seconds=0, **overrides)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def client(approved_registry: Registry) -> Iterator[TestClient]:
    yield from make_client(approved_registry)
