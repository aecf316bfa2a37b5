"""Drift under real gunicorn workers: multiprocess gauges and a shared spool (the production wiring)."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.model.registry import Registry
from tests.servers import start_server
from tests.unit.monitoring.test_drift import UNSHIFTED_INPUTS, metric_values

pytestmark = pytest.mark.slow


def test_two_workers_export_drift_and_fill_the_spool(
    approved_registry: Registry, shifted_rows: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(approved_registry.root, tmp_path / "artifacts")
    spool = tmp_path / "spool"
    env = {
        "PROPENSITY_DRIFT_SPOOL_DIR": str(spool),
        "PROPENSITY_DRIFT_MIN_ROWS": "200",
        "PROPENSITY_DRIFT_CHUNK_ROWS": "500",
        "PROPENSITY_DRIFT_PUBLISH_SECONDS": "0.05",
        "PROPENSITY_CACHE_ENABLED": "false",
    }
    rows = shifted_rows.head(4_000).to_dict(orient="records")
    bodies = [orjson.dumps(rows[i : i + 100]) for i in range(0, len(rows), 100)]

    def post(chunk: list[bytes]) -> list[int]:
        # a fresh connection per request, from several threads: the workers share the accepts
        headers = {"content-type": "application/json", "connection": "close"}
        return [
            httpx.post(server.url + "/predict", content=b, headers=headers, timeout=30).status_code
            for b in chunk
        ]

    with start_server(tmp_path / "artifacts", tmp_path, workers=2, env=env) as server:
        with ThreadPoolExecutor(4) as pool:
            statuses = [s for part in pool.map(post, [bodies[i::4] for i in range(4)]) for s in part]
        assert statuses == [200] * len(bodies)
        # each worker publishes its own gauges when it serves a scrape or on its publish timer: scrape
        # (new connections, so both workers answer) until both have published their last rows
        deadline = time.monotonic() + 15
        while True:
            values = metric_values(httpx.get(server.url + "/metrics", timeout=30).text)
            if values.get(("propensity_drift_rows_in_window", "")) == 4_000 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert values[("propensity_drift_rows_in_window", "")] == 4_000  # livesum over the workers
    assert values[("propensity_drift_psi", "x91")] >= 0.2  # livemax over the workers
    assert values[("propensity_drift_status", "x12")] == 2 and values[("propensity_drift_status", "x31")] == 2
    assert values[("propensity_drift_unseen_share", "")] > 0.1
    for name in UNSHIFTED_INPUTS:
        assert values[("propensity_drift_status", name)] == 0
    files = list(spool.glob("drift-*.jsonl"))
    assert files  # one file per worker that scored something (the kernel decides who accepts)
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("PROPENSITY_DRIFT_SPOOL_DIR", str(spool))
    result = CliRunner().invoke(app, ["drift-report", "--since", "10m", "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "propensity/v1: 4000 rows, overall alert" in result.output  # every row, from both workers
