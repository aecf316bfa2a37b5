"""Readiness flips only after the model loaded and passed its golden-row self-check."""

from __future__ import annotations

import json
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


def test_not_ready_until_a_good_model_is_loaded(tmp_path: Path, approved_artifact_dir: Path) -> None:
    registry = _registry_with_bad_production(tmp_path, approved_artifact_dir)
    settings = Settings(artifacts_dir=registry.root, reload_interval_seconds=0.1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        time.sleep(0.5)
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.headers["retry-after"] == "1"
        assert "sha256" in ready.json()["detail"]
        assert client.get("/health/live").status_code == 200
        r = client.post(
            "/predict",
            content=orjson.dumps(example_rows()["rows"][0]),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 503 and r.json()["type"].endswith("/not-ready")
        registry.rollback("production")  # back to the good v1
        deadline = time.monotonic() + 10
        while client.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health/ready").json()["version"] == "v1"
        metrics = client.get("/metrics").text
        assert 'propensity_model_swaps_total{result="failed"}' in metrics
        assert 'propensity_model_info{name="propensity",sha256=' in metrics
