"""Readiness flips only after the model loaded and passed its golden-row self-check."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import orjson
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.model.registry import Registry
from service.model.schema import example_rows
from service.settings import Settings


def _registry_with_bad_production(tmp_path: Path, good: Path) -> Registry:
    registry = Registry(tmp_path, "propensity")
    registry.dir.mkdir(parents=True)
    shutil.copytree(good, registry.dir / "v1")
    registry.set_alias("production", "v1")
    shutil.copytree(good, registry.dir / "v2")
    meta_path = registry.dir / "v2" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["version"] = "v2"
    meta_path.write_text(json.dumps(meta))  # v2 now fails its sha256 check
    (registry.dir / "aliases.json").write_text(
        json.dumps({"production": {"version": "v2", "history": ["v1"]}})
    )
    return registry


HASH = re.compile(r"[0-9a-f]{12}")


def assert_no_leak(text: str, root: Path) -> None:
    """Nothing a client should not see: no server path, no hash."""
    assert str(root) not in text and "/propensity/" not in text and not HASH.search(text), text


def test_a_refused_version_is_not_loading_and_leaks_nothing(
    tmp_path: Path, approved_artifact_dir: Path
) -> None:
    registry = _registry_with_bad_production(tmp_path, approved_artifact_dir)
    settings = Settings(artifacts_dir=registry.root, reload_interval_seconds=0.1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        time.sleep(0.5)
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"  # a probe polls anyway
        assert ready.json()["type"].endswith("/model-refused")
        assert_no_leak(ready.text, tmp_path)
        assert client.get("/health/live").status_code == 200
        for r in (
            client.post(
                "/predict",
                content=orjson.dumps(example_rows()["rows"][0]),
                headers={"content-type": "application/json"},
            ),
            client.get("/model"),
        ):
            problem = r.json()
            assert r.status_code == 503 and problem["type"].endswith("/model-refused"), problem
            assert "retry-after" not in r.headers  # retrying does not help: an operator must act
            assert "v2" in problem["detail"] and "operator" in problem["detail"]
            assert "integrity" in problem["detail"] and "loading" not in problem["detail"]
            assert problem["version"] == "v2"
            assert_no_leak(r.text, tmp_path)
        registry.rollback("production")  # back to the good v1
        deadline = time.monotonic() + 10
        while client.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = client.get("/health/ready")
        assert ready.json() == {"status": "ready", "model": "propensity", "version": "v1"}
        assert_no_leak(ready.text, tmp_path)
        metrics = client.get("/metrics").text
        assert 'propensity_model_swaps_total{result="failed"}' in metrics
        assert 'propensity_model_info{name="propensity",sha256=' in metrics


def test_a_registry_with_nothing_to_serve_yet_is_loading(tmp_path: Path) -> None:
    settings = Settings(artifacts_dir=tmp_path, reload_interval_seconds=0.1, startup_wait_seconds=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        r = client.post(
            "/predict",
            content=orjson.dumps(example_rows()["rows"][0]),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 503 and r.json()["type"].endswith("/not-ready")
        assert r.headers["retry-after"] == "1" and "retry" in r.json()["detail"]
        assert_no_leak(r.text, tmp_path)
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["type"].endswith("/not-ready")
        assert_no_leak(ready.text, tmp_path)
