"""Shared fixtures: a registry holding the approved model, the reference rows, free ports."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from service.model.registry import Registry
from service.model.schema import example_rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def approved_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A registry with the approved notebook model as v1 = production (built once per session)."""
    from service.model.notebook_import import import_notebook

    registry = Registry(tmp_path_factory.mktemp("registry"), "propensity")
    import_notebook(registry)
    return registry


@pytest.fixture(scope="session")
def approved_artifact_dir(approved_registry: Registry) -> Path:
    return approved_registry.path("production")


@pytest.fixture(scope="session")
def reference_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = example_rows()["rows"]
    return rows


@pytest.fixture(scope="session")
def reference_phat() -> list[float]:
    return [e["phat"] for e in example_rows()["expected"]]
