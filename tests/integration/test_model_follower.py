"""The model follower of a real `propensity serve` (2 workers, a free loopback port, a tmp registry) outlives
registry faults, and an outage ends with its cause.

- aliases.json half-written mid-run (what a non-atomic writer leaves): every worker keeps serving, a worker
  started inside the window (one killed, gunicorn starts another) is not ready; once the file is whole, a
  promotion is followed by every worker, without a restart.
- production's model.joblib corrupt when the server starts: every worker is not ready; once the file is
  restored, every worker serves it, without a re-promotion.

"Every worker" is read from /metrics, aggregated over the workers by multiprocess mode: model_ready is the
minimum over the live workers, model_info and model_behind_alias the maximum.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.model.registry import ALIASES_FILE, Registry
from service.model.schema import example_rows
from tests.servers import Server, launch_server, stop_process, tail, wait_until

WORKERS = 2
DEADLINE = 60.0
ENV = {"PROPENSITY_RELOAD_INTERVAL_SECONDS": "0.1", "PROPENSITY_RELOAD_BACKOFF_MAX_SECONDS": "0.4"}


def start_live_server(registry: Registry, log_dir: Path) -> Server:
    """A `propensity serve` whose workers have all started; unlike tests.servers.start_server, it does not
    wait for them to be ready (a worker without a loadable model still answers /health/live)."""
    server = launch_server(registry.root, log_dir, workers=WORKERS, env=ENV)
    process, log = server.process, server.log
    if not wait_until(
        lambda: process.poll() is None and metric(server, "propensity_workers") == WORKERS, DEADLINE
    ):
        stop_process(process, timeout=30)
        raise AssertionError(f"server never started {WORKERS} workers:\n{tail(log)}")
    return server


@pytest.fixture
def serve() -> Iterator[list[Server]]:
    """`serve.append(start_live_server(...))`; every server started is stopped at the end."""
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def metric(server: Server, name: str, **labels: str) -> float | None:
    """A sample of the server's /metrics (None when absent or the server does not answer)."""
    try:
        text = httpx.get(server.url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def version_served(server: Server, version: str) -> float:
    """1 if some live worker serves `version`, else 0."""
    value = None
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == "propensity_model_info" and sample.labels["version"] == version:
                value = max(value or 0.0, float(sample.value))
    return value or 0.0


def every_worker_serves(server: Server, version: str, other: str) -> bool:
    return (
        metric(server, "propensity_model_ready") == 1.0
        and metric(server, "propensity_model_behind_alias") != 1.0
        and version_served(server, version) == 1.0
        and version_served(server, other) == 0.0
    )


def failures(server: Server) -> float:
    return metric(server, "propensity_model_swaps_total", result="failed") or 0.0


def predict_versions(server: Server, count: int = 20) -> list[tuple[int, str | None]]:
    body = orjson.dumps(example_rows()["rows"][0])
    out = []
    for _ in range(count):  # a new connection each time, so both workers answer some
        r = httpx.post(server.url + "/predict", content=body, headers={"content-type": "application/json"})
        out.append((r.status_code, r.headers.get("x-model-version")))
    return out


def test_a_half_written_aliases_file_then_a_promotion_is_followed_by_every_worker(
    registry: Registry, tmp_path: Path, serve: list[Server]
) -> None:
    server = start_live_server(registry, tmp_path)
    serve.append(server)
    assert wait_until(lambda: every_worker_serves(server, "v1", "v2"), DEADLINE), tail(server.log)
    aliases = registry.dir / ALIASES_FILE
    full = aliases.read_bytes()
    aliases.write_bytes(full[: len(full) // 2])  # a writer stopped half-way
    assert wait_until(lambda: failures(server) >= 10, DEADLINE), "the followers stopped retrying"
    assert metric(server, "propensity_model_behind_alias") == 1.0
    assert {status for status, _ in predict_versions(server)} == {200}  # still serving v1

    before = server.worker_pids()
    os.kill(min(before), signal.SIGKILL)  # gunicorn starts a replacement inside the window
    assert wait_until(
        lambda: len(server.worker_pids() - before) == 1 and len(server.worker_pids()) == 2, DEADLINE
    )
    assert wait_until(lambda: metric(server, "propensity_workers") == WORKERS, DEADLINE)
    assert wait_until(lambda: metric(server, "propensity_model_ready") == 0.0, DEADLINE)  # no model yet

    aliases.write_bytes(full)  # the writer finishes
    registry.set_alias("production", "v2")
    assert wait_until(lambda: every_worker_serves(server, "v2", "v1"), DEADLINE), tail(server.log)
    assert set(predict_versions(server)) == {(200, "v2")}
    assert metric(server, "propensity_model_behind_alias") == 0.0
    log = server.log.read_text(errors="replace")
    assert "Exception in thread" not in log
    refusals = log.count("not valid JSON")
    assert 1 <= refusals <= 3, log[-3000:]  # once per worker (2, then the replacement), not once per attempt
    assert failures(server) >= 10


def test_a_corrupt_production_restored_is_served_without_a_re_promotion(
    registry: Registry, tmp_path: Path, serve: list[Server]
) -> None:
    model_file = registry.dir / "v1" / "model.joblib"
    original = model_file.read_bytes()
    model_file.write_bytes(original[:-64] + bytes(64))
    aliases_before = (registry.dir / ALIASES_FILE).read_bytes()
    server = start_live_server(registry, tmp_path)
    serve.append(server)
    assert wait_until(lambda: failures(server) >= 10, DEADLINE), "the workers stopped retrying"
    assert metric(server, "propensity_model_ready") == 0.0
    assert {status for status, _ in predict_versions(server)} == {503}
    ready = httpx.get(server.url + "/health/ready")
    assert ready.status_code == 503 and ready.headers["retry-after"] == "1"

    model_file.write_bytes(original)  # restored; the alias is not touched
    assert wait_until(lambda: every_worker_serves(server, "v1", "v2"), DEADLINE), tail(server.log)
    assert set(predict_versions(server)) == {(200, "v1")}
    assert metric(server, "propensity_model_behind_alias") == 0.0
    assert (registry.dir / ALIASES_FILE).read_bytes() == aliases_before
    assert server.log.read_text(errors="replace").count("model.joblib sha256") <= WORKERS
