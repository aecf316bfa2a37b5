"""Registry faults, a forged cache and hostile rows, each while a real `propensity serve` (2 workers) takes a
paced load of single reference rows whose every answer is checked bit for bit.

- aliases.json half-written, then whole again with a promotion: no request fails, every worker follows.
- production's model.joblib corrupt, then restored: while it is corrupt every request is a 503 (the
  outage), and once it is restored every worker serves it again without a re-promotion.
- forged answers written to the very Redis keys the service computes: none is ever served.
- rows that overflow the logit (1e308) and bodies nested 100,000 deep, mixed into the load: each is a
  4xx naming the problem, no worker dies, the metrics stay finite, and the other rows are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from service.model.registry import ALIASES_FILE, Registry
from service.model.schema import example_rows
from service.serving.cache import raw_key
from service.serving.cache_integrity import CacheSigner
from tests.integration.chaos.report import record
from tests.servers import Server, launch_server, start_server, tail, wait_until
from tools.bench.redis_server import RedisServer
from tools.loadgen import LoadRunner, post

WORKERS = 2
DEADLINE = 60.0
RATE = 120.0  # requests per second: enough to be "under load", little enough to leave the faults room
FOLLOW = {"PROPENSITY_RELOAD_INTERVAL_SECONDS": "0.1", "PROPENSITY_RELOAD_BACKOFF_MAX_SECONDS": "0.4"}
ROWS: list[dict[str, Any]] = example_rows()["rows"]
JSON = {"content-type": "application/json"}


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def bodies() -> list[bytes]:
    return [orjson.dumps(row) for row in ROWS]


def expected_answers(server: Server, requests: list[bytes]) -> list[bytes]:
    """What the server answers to each body when nothing is wrong: the bits every answer must keep."""
    answers = []
    for body in requests:
        reply = httpx.post(server.url + "/predict", content=body, headers=JSON)
        assert reply.status_code == 200, reply.text
        answers.append(reply.content)
    return answers


def same_bits(expected: list[bytes | None]) -> Callable[[int, int, str | None, bytes], bool]:
    def validate(index: int, status: int, header: str | None, body: bytes) -> bool:
        return expected[index] is None or body == expected[index]

    return validate


def load(
    server: Server,
    requests: list[bytes],
    expected: list[bytes | None],
    *,
    seconds: float,
    header: str | None = None,
) -> LoadRunner:
    wire = [post("/predict", body) for body in requests]
    return LoadRunner(
        server.url,
        wire,
        total=int(RATE * seconds),
        concurrency=4,
        deadline_seconds=seconds + 30,
        max_rate=RATE,
        header=header,
        validate=same_bits(expected),
    ).start()


def metrics_of(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(server.url + "/metrics", timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def metric(server: Server, name: str, **labels: str) -> float | None:
    try:
        samples = metrics_of(server)
    except httpx.HTTPError:
        return None
    return samples.get((name, tuple(sorted(labels.items()))))


def served(server: Server, version: str) -> bool:
    """Every live worker is ready and serves `version` (model_info is the max over workers, ready the min)."""
    samples = metrics_of(server)
    versions = {
        dict(labels)["version"]: value
        for (name, labels), value in samples.items()
        if name == "propensity_model_info"
    }
    return (
        samples.get(("propensity_model_ready", ())) == 1.0
        and samples.get(("propensity_model_behind_alias", ())) != 1.0
        and versions.get(version) == 1.0
        and all(v == 0.0 for name, v in versions.items() if name != version)
    )


def test_a_half_written_aliases_file_under_load_fails_no_request(
    registry: Registry, tmp_path: Path, servers: list[Server]
) -> None:
    server = start_server(registry.root, tmp_path, workers=WORKERS, env=FOLLOW)
    servers.append(server)
    requests = bodies()
    runner = load(server, requests, list(expected_answers(server, requests)), seconds=20)
    assert runner.wait_for_progress(200, DEADLINE)
    aliases = registry.dir / ALIASES_FILE
    whole = aliases.read_bytes()
    aliases.write_bytes(whole[: len(whole) // 2])  # a writer stopped half-way
    assert wait_until(
        lambda: (metric(server, "propensity_model_swaps_total", result="failed") or 0) >= 10, DEADLINE
    ), "the followers stopped retrying"
    aliases.write_bytes(whole)
    registry.set_alias("production", "v2")  # the same approved model: the same bits, another version
    assert wait_until(lambda: served(server, "v2"), DEADLINE), tail(server.log)
    result = runner.wait()
    row = record("aliases.json half-written, then a promotion", result, "every worker follows v2")
    assert result.sent == int(RATE * 20) and row.failed == 0, result.summary()


def test_a_corrupt_artifact_under_load_is_an_outage_that_ends_when_it_is_restored(
    registry: Registry, tmp_path: Path, servers: list[Server]
) -> None:
    model_file = registry.dir / "v1" / "model.joblib"
    original = model_file.read_bytes()
    model_file.write_bytes(original[:-64] + bytes(64))
    server = launch_server(registry.root, tmp_path, workers=WORKERS, env=FOLLOW)
    servers.append(server)
    assert wait_until(lambda: metric(server, "propensity_workers") == WORKERS, DEADLINE), tail(server.log)
    assert wait_until(
        lambda: (metric(server, "propensity_model_swaps_total", result="failed") or 0) >= 4, DEADLINE
    )
    requests = bodies()
    during = load(server, requests, [None] * len(requests), seconds=5).wait()
    assert during.statuses == {503: during.sent}  # the outage: every answer a 503, none a wrong score
    model_file.write_bytes(original)  # restored; the alias is not touched
    assert wait_until(lambda: served(server, "v1"), DEADLINE), tail(server.log)
    after = load(server, requests, list(expected_answers(server, requests)), seconds=10).wait()
    record(
        "model.joblib corrupt (503), then restored",
        during,
        "503 while corrupt",
        refused=during.statuses[503],
    )
    row = record("  ... after the restore, no re-promotion", after, "every worker serves v1")
    assert row.failed == 0, after.summary()


def test_forged_answers_at_the_computed_keys_are_never_served_under_load(
    approved_registry: Registry, tmp_path: Path, servers: list[Server]
) -> None:
    secret = "chaos-suite-cache-secret-0123456789abcdef"
    with RedisServer(tmp_path / "redis") as redis_server:
        env = {
            "PROPENSITY_REDIS_URL": redis_server.url,
            "PROPENSITY_CACHE_SECRET": secret,
            "PROPENSITY_CACHE_MIN_BODY_BYTES": "0",
        }
        server = start_server(approved_registry.root, tmp_path, workers=WORKERS, env=env)
        servers.append(server)
        requests = bodies()
        expected = expected_answers(server, requests)  # computed, stored and signed by the service
        sha = approved_registry.load("production").sha256
        fake = orjson.dumps({"business_outcome": 1, "phat": 0.999})
        forger = CacheSigner(b"a secret that is not this deployment's")
        client = redis.Redis.from_url(redis_server.url)
        try:
            runner = load(server, requests, list(expected), seconds=12)
            rounds = 0
            while runner.progress < runner.total and rounds < 1000:  # forge again and again under the load
                for body in requests:
                    key = raw_key(sha, body)
                    client.set(key, fake if rounds % 2 else forger.seal(key, fake))
                rounds += 1
                runner.wait_for_progress(runner.progress + 20, 5)
            result = runner.wait()
        finally:
            client.close()
        refused = metric(server, "propensity_cache_requests_total", result="rejected") or 0.0
        row = record("forged values at the computed Redis keys", result, f"{refused:g} refused, 0 served")
        assert row.failed == 0, result.summary()
        assert refused >= 10


def overflow_row() -> bytes:
    return orjson.dumps(dict(ROWS[0], x44=1e308, x91=1e308))


def deep_body() -> bytes:
    padding = b",".join([orjson.dumps(ROWS[0])] * 60)  # past the column decoder's 64 KiB
    return b"[" + padding + b"," + b"[" * 100_000 + b"]" * 100_000 + b"]"


def test_overflowing_and_deeply_nested_bodies_under_load_are_4xx_and_harm_nothing(
    approved_registry: Registry, tmp_path: Path, servers: list[Server]
) -> None:
    server = start_server(approved_registry.root, tmp_path, workers=WORKERS)
    servers.append(server)
    good = bodies()
    expected: list[bytes | None] = list(expected_answers(server, good))
    requests = [*good, overflow_row(), deep_body()]
    pids = server.worker_pids()
    result = load(server, requests, [*expected, None, None], seconds=15).wait()
    per_cycle = len(requests)
    sent_of = {k: len(range(k, result.sent, per_cycle)) for k in range(per_cycle)}
    assert result.statuses[422] == sent_of[len(good)], result.summary()  # every overflow row, and only them
    assert result.statuses[400] == sent_of[len(good) + 1], result.summary()  # every deep body
    refused = result.statuses[422] + result.statuses[400]
    row = record("1e308 rows and 100,000-deep bodies in the load", result, "422 / 400 each", refused=refused)
    assert row.failed == 0
    assert server.worker_pids() == pids  # no worker died
    samples = metrics_of(server)
    phat_sum = samples[("propensity_phat_sum", ())]
    assert math.isfinite(phat_sum) and phat_sum > 0
