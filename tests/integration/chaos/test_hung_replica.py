"""A hung replica (issue 12, defect 6): nginx in front of 3 real replicas (2 workers each), a paced load of
single-row /predict, and one replica SIGSTOPped (master and workers) for 20 s, then SIGCONTed.

The load runs in three phases, each a bounded LoadRunner: 5 s before the stop, the 20 s of the stop, 10 s
after it. Every answer must equal in-process scoring, nothing may fail, and the p99 of the requests sent
during the hang must stay within a few seconds: nginx (least_conn) stops sending to the stopped replica
once it holds a request, and the read timeout sends the few it holds to another one. After SIGCONT the
replica serves again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from service.model.registry import Registry
from service.serving.decoding import decode_rows
from service.serving.scorer import CompiledModel
from tests.conftest import free_port
from tests.integration.chaos.report import record
from tests.integration.nginx_server import Nginx, start_nginx
from tests.servers import Server, start_server
from tools.bench.cluster_bench import free_port_block, make_rows
from tools.cluster_config import ClusterConfig
from tools.loadgen import LoadResult, LoadRunner, post

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

REPLICAS = 3
RATE = 120  # requests/s, all phases
CONCURRENCY = 256  # enough connections that requests stuck on the stopped replica do not stall the pace
BEFORE_SECONDS, HANG_SECONDS, AFTER_SECONDS = 5.0, 20.0, 10.0
P99_LIMIT_MS = 3000.0  # the bound for the p99 through nginx during the hang


@dataclass(frozen=True)
class Phase:
    """Single-row requests tagged with the phase in X-Request-ID (nginx logs it), and their answers."""

    name: str
    requests: list[bytes]
    expected: list[bytes]

    def validator(self) -> Callable[[int, int, str | None, bytes], bool]:
        return lambda index, status, header, body: body == self.expected[index]

    def run(self, url: str, seconds: float) -> LoadRunner:
        return LoadRunner(
            url,
            self.requests,
            total=int(RATE * seconds),
            concurrency=CONCURRENCY,
            deadline_seconds=seconds,
            request_timeout=40.0,  # longer than the stop: a request held by the stopped replica is slow,
            validate=self.validator(),  # not lost
            max_rate=RATE,
        ).start()


def make_phase(name: str, model: CompiledModel, rows: list[bytes]) -> Phase:
    requests, expected = [], []
    for i, body in enumerate(rows):
        decoded = decode_rows(body, max_rows=10_000, max_errors=100)
        expected.append(orjson.dumps(model.records(model.score(decoded.rows))[0]))
        requests.append(post("/predict", body, headers={"X-Request-ID": f"{name}-{i}"}))
    return Phase(name, requests, expected)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, approved_registry: Registry) -> Iterator[list[Server]]:
    logs = tmp_path_factory.mktemp("replicas")
    base = free_port_block(REPLICAS)
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(start_server(approved_registry.root, logs, workers=2, port=base + i))
            for i in range(REPLICAS)
        ]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, replicas: list[Server]) -> Iterator[Nginx]:
    run = tmp_path_factory.mktemp("nginx")
    config = ClusterConfig(
        run_dir=run,
        artifacts_dir=run,
        replicas=REPLICAS,
        replica_port=replicas[0].port,
        nginx_port=free_port(),
        redis=False,
    )
    assert config.replica_ports() == [r.port for r in replicas]
    with start_nginx(config) as server:
        yield server


def process_states(server: Server) -> dict[int, str]:
    pids = [server.process.pid, *server.worker_pids()]
    return {pid: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] for pid in pids}


def test_a_stopped_replica_costs_seconds_not_the_whole_stop(
    nginx: Nginx, replicas: list[Server], approved_compiled: CompiledModel
) -> None:
    rows = [orjson.dumps(row) for row in make_rows(200, seed=1212)]
    phases = {name: make_phase(name, approved_compiled, rows) for name in ("before", "hang", "after")}
    hung = replicas[1]
    hung_addr = f"127.0.0.1:{hung.port}"

    results: dict[str, LoadResult] = {"before": phases["before"].run(nginx.url, BEFORE_SECONDS).wait()}
    os.killpg(hung.process.pid, signal.SIGSTOP)  # its own session: the master and both workers
    try:
        states = process_states(hung)
        assert len(states) == 3 and set(states.values()) == {"T"}, states
        stopped_at = time.monotonic()
        load = phases["hang"].run(nginx.url, HANG_SECONDS)
        time.sleep(max(0.0, stopped_at + HANG_SECONDS - time.monotonic()))
    finally:
        os.killpg(hung.process.pid, signal.SIGCONT)
    results["hang"] = load.wait()
    results["after"] = phases["after"].run(nginx.url, AFTER_SECONDS).wait()
    time.sleep(1.5)  # nginx flushes its access log every second

    for name, result in results.items():
        over = sum(1 for t in result.latencies if t > 1.0)
        print(f"{name}: {result.summary()}, {over} over 1 s")
    for name, result in results.items():
        assert result.failed == 0 and result.sent == result.ok > 0, (name, result.summary())
    hang = results["hang"]
    record("1 of 3 replicas SIGSTOPped for 20 s, through nginx", hang, "0 failed, p99 within 3 s")
    log = nginx.access_log()
    by_phase = {name: [e for e in log if e["request_id"].startswith(name + "-")] for name in phases}
    slow = sorted((e["request_time"], e["upstream"]) for e in by_phase["hang"] if e["request_time"] > 1)
    print(f"slow during the hang (hung: {hung_addr}): {slow}")
    assert hang.percentile_ms(0.99) <= P99_LIMIT_MS, (hang.summary(), slow)

    assert len(by_phase["hang"]) == hang.sent
    # the stopped replica's requests went to another one after the read timeout ("a, b" in the log)
    moved = [e for e in by_phase["hang"] if e["upstream"].startswith(hung_addr + ", ")]
    assert moved and all(e["status"] == 200 for e in moved)
    # ...and after SIGCONT it answers its share again
    assert any(e["upstream"] == hung_addr and e["status"] == 200 for e in by_phase["after"])
