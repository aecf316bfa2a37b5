"""Shadow scoring on the local cluster (2 replicas x 2 workers behind nginx, Redis, under supervisord), at
100%: 20,000 requests, every answer production's bit for bit, and the agreement the replicas export equal
to the offline comparison of the two models on the same rows. Then the same load with shadow idle (the
staging alias deleted), and the latency of both runs reported side by side (the bound is the benchmark's:
`make bench BENCH_ARGS='--only shadow'`)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest

from service.model.registry import Registry
from service.monitoring.shadow import RESULTS, compare
from service.serving.batch import JsonBatch
from service.serving.metrics import SHADOW_DIFF_BUCKETS
from service.serving.scorer import CompiledModel
from tests.integration.conftest import staged_copy
from tests.integration.scraped import Key, key, samples, total
from tools.bench.cluster_bench import make_rows, running_cluster
from tools.cluster import Cluster, http_get
from tools.loadgen import LoadResult, LoadRunner, post

REQUESTS = 20_000


@pytest.fixture(scope="module")
def registry(retrained: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return staged_copy(retrained, tmp_path_factory.mktemp("cluster-shadow"))


@pytest.fixture(scope="module")
def cluster(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"PROPENSITY_SHADOW_SHARE": "1"}
    workdir = tmp_path_factory.mktemp("cluster-shadow-run")
    with running_cluster(workdir, replicas=2, workers=2, artifacts_dir=registry.root, env=env) as c:
        yield c


def scrape(cluster: Cluster) -> dict[Key, float]:
    """Every replica's /metrics, summed over the replicas."""
    return samples(http_get(port, "/metrics")[1].decode() for port in cluster.config.replica_ports())


def run_load(cluster: Cluster, bodies: list[bytes], expected: list[bytes]) -> LoadResult:
    runner = LoadRunner(
        f"http://127.0.0.1:{cluster.config.nginx_port}",
        [post("/predict", body) for body in bodies],
        total=len(bodies),
        concurrency=8,
        deadline_seconds=240,
        header="X-Model-Version",
        validate=lambda i, status, version, body: body == expected[i] and version == "v1",
    )
    return runner.run()


def test_shadow_at_100_percent_on_the_cluster(cluster: Cluster, registry: Registry) -> None:
    served = CompiledModel.from_artifact(registry.load_serving("v1"))
    shadow = CompiledModel.from_artifact(registry.load_serving("v2"))
    deadline = time.monotonic() + 60
    info = key("propensity_shadow_model_info", model="propensity", version="v2")
    while scrape(cluster).get(info) != len(cluster.config.replica_ports()):  # 1 per replica (livemax)
        assert time.monotonic() < deadline, "the replicas never loaded the staging model"
        time.sleep(0.25)
    rows = make_rows(2 * REQUESTS, seed=2015)  # distinct rows: no answer comes from the cache
    on_rows, off_rows = rows[:REQUESTS], rows[REQUESTS:]
    encode = [orjson.dumps(r) for r in rows]
    expected = [orjson.dumps(served.records(served.score([r]))[0]) for r in rows]

    on = run_load(cluster, encode[:REQUESTS], expected[:REQUESTS])
    assert on.sent == REQUESTS and on.failed == 0, on.summary()
    assert on.header_values == {"v1": REQUESTS}
    deadline = time.monotonic() + 120
    while (metrics := scrape(cluster)) and total(metrics, "propensity_shadow_rows_total") < REQUESTS:
        assert time.monotonic() < deadline, total(metrics, "propensity_shadow_rows_total")
        time.sleep(0.5)
    batch = JsonBatch(on_rows)
    offline = compare(served, served.score_batch(batch), shadow, shadow.score_batch(batch))
    pair = {"served": "v1", "shadow": "v2"}
    for result in RESULTS:
        assert (
            metrics.get(key("propensity_shadow_rows_total", **pair, result=result), 0)
            == offline.counts[result]
        )
    for bound in SHADOW_DIFF_BUCKETS:
        want = int((offline.differences <= bound).sum())
        assert metrics[key("propensity_shadow_phat_difference_bucket", **pair, le=str(bound))] == want
    for feature, shift in offline.shifts.items():
        got = metrics[key("propensity_shadow_contribution_shift_total", **pair, feature=feature)]
        assert got == pytest.approx(shift, rel=1e-9)
    assert total(metrics, "propensity_shadow_skipped_rows_total") == 0

    registry.delete_alias("staging", reason="the shadow-off half of the cluster test")
    deadline = time.monotonic() + 60
    while scrape(cluster).get(info):
        assert time.monotonic() < deadline, "the replicas kept the deleted staging model"
        time.sleep(0.25)
    off = run_load(cluster, encode[REQUESTS:], expected[REQUESTS:])
    assert off.sent == REQUESTS and off.failed == 0, off.summary()
    print(
        f"\nshadow on (100%): p50 {on.percentile_ms(0.5):.2f} ms, p99 {on.percentile_ms(0.99):.2f} ms, "
        f"{on.rps:.0f} req/s; shadow idle: p50 {off.percentile_ms(0.5):.2f} ms, p99 "
        f"{off.percentile_ms(0.99):.2f} ms, {off.rps:.0f} req/s; p99 on/off "
        f"{on.percentile_ms(0.99) / off.percentile_ms(0.99):.2f}x ({len(off_rows):,} rows each, c=8)"
    )
