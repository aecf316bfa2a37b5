"""Shared fixtures: the approved registry, reference rows, free ports, an in-process client, drift rows."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.model.registry import Registry
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel
from service.settings import Settings


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


# --- the HTTP API in process ---


def wait_ready(client: TestClient, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("the app never became ready")


@contextlib.contextmanager
def app_client(registry: Registry, **overrides: Any) -> Iterator[TestClient]:
    """`with app_client(registry, **settings) as client:` the app, ready, in process; shut down on exit."""
    settings = Settings(artifacts_dir=registry.root, reload_interval_seconds=0, **overrides)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wait_ready(client)
        yield client


def make_client(registry: Registry, **overrides: Any) -> Generator[TestClient, None, None]:
    """The same as a generator, for `yield from` in fixtures (shut down when the fixture is torn down)."""
    with app_client(registry, **overrides) as client:
        yield client


@pytest.fixture(scope="module")
def client(approved_registry: Registry) -> Iterator[TestClient]:
    yield from make_client(approved_registry)


# --- drift: the approved model compiled, synthetic rows with and without a planted shift ---


SHIFTED = ("x91", "x31", "x12")
NEW_LEVEL = "europe"


def plant_shift(frame: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """The issue's planted shift: x91 mean +0.1 (a third of its std), a new x31 level in 15% of rows,
    and x12 missing in 30% of rows. Every other column is left as drawn."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["x91"] = out["x91"] + 0.1
    out.loc[rng.random(len(out)) < 0.15, "x31"] = NEW_LEVEL
    out.loc[rng.random(len(out)) < 0.30, "x12"] = np.nan
    return out


@pytest.fixture(scope="session")
def approved_compiled(approved_registry: Registry) -> CompiledModel:
    return CompiledModel.from_artifact(approved_registry.load("production"))


@pytest.fixture(scope="session")
def fresh_rows() -> pd.DataFrame:
    """Unshifted synthetic rows (a different seed than the reference's 26)."""
    return make_synthetic_frame(10_000, 7, target=False)


@pytest.fixture(scope="session")
def shifted_rows(fresh_rows: pd.DataFrame) -> pd.DataFrame:
    return plant_shift(fresh_rows)


@pytest.fixture(scope="session")
def shifted_csv(shifted_rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("drift") / "shifted.csv"
    shifted_rows.to_csv(path, index=False)
    return path
