"""Zero-downtime model rollout and rollback on the local cluster, under load.

Two replicas (2 workers each) behind nginx follow the registry's `production` alias. While a bounded load
of single-row requests runs, production is promoted from v1 (the approved model) to v2 (a model trained on
synthetic data, so its answers differ) and rolled back. Every answer must be a 200 whose body is exactly what
the version named in its X-Model-Version header computes for that row, and Prometheus must show the switch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest

from service.model.notebook_import import import_notebook
from service.model.registry import Registry
from service.model.synthetic import make_synthetic_frame, write_synthetic_csv
from service.model.training import train_csv
from service.serving.scorer import CompiledModel
from tools.bench.cluster_bench import running_cluster
from tools.cluster import Cluster
from tools.loadgen import LoadRunner, post

REQUESTS = 6_000


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("rollout")
    reg = Registry(root / "artifacts", "propensity")
    import_notebook(reg)  # v1 = production
    write_synthetic_csv(root / "train.csv", 4_000, 9)
    version, _ = train_csv(root / "train.csv", reg)  # v2, not promoted
    assert (reg.resolve("production"), version) == ("v1", "v2")
    return reg


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> Iterator[Cluster]:
    env = {"PROPENSITY_RELOAD_INTERVAL_SECONDS": "0.2"}
    with running_cluster(
        tmp_path_factory.mktemp("rollout-cluster"),
        replicas=2,
        workers=2,
        artifacts_dir=registry.root,
        env=env,
    ) as c:
        yield c


def expected_bodies(registry: Registry, rows: list[dict[str, object]]) -> dict[str, list[bytes]]:
    out = {}
    for version in ("v1", "v2"):
        model = CompiledModel.from_artifact(registry.load(version))
        out[version] = [orjson.dumps(model.records(model.score([row]))[0]) for row in rows]
    return out


def wait_for(predicate: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def model_info(cluster: Cluster, version: str) -> float:
    result = cluster.prometheus_query(f'max(propensity_model_info{{version="{version}"}})')
    return float(result[0]["value"][1]) if result else 0.0


def test_promote_and_rollback_under_load(cluster: Cluster, registry: Registry) -> None:
    rows: list[dict[str, object]] = orjson.loads(
        make_synthetic_frame(50, 31, target=False).to_json(orient="records")
    )
    expected = expected_bodies(registry, rows)
    assert all(a != b for a, b in zip(expected["v1"], expected["v2"], strict=True))
    requests = [post("/predict", orjson.dumps(row)) for row in rows]

    def consistent(index: int, status: int, version: str | None, body: bytes) -> bool:
        return version in expected and body == expected[version][index]

    load = LoadRunner(
        f"http://127.0.0.1:{cluster.config.nginx_port}",
        requests,
        total=REQUESTS,
        concurrency=32,
        deadline_seconds=240,
        max_rate=250,  # ~24 s of load: time to promote, see it everywhere, and roll back under it
        header="X-Model-Version",
        validate=consistent,
    ).start()
    assert load.wait_for_progress(800, timeout=60)
    registry.set_alias("production", "v2")
    promoted_at = load.progress
    assert wait_for(lambda: load.result.header_values["v2"] >= 500, timeout=60)
    assert wait_for(lambda: model_info(cluster, "v2") == 1.0, timeout=30), "Prometheus never saw v2 served"
    registry.rollback("production")
    rolled_back_at = load.progress
    result = load.wait()

    assert result.sent == REQUESTS
    assert result.failed == 0, result.summary()
    assert result.invalid == 0
    assert set(result.header_values) == {"v1", "v2"}
    assert result.header_values["v1"] + result.header_values["v2"] == REQUESTS
    assert REQUESTS - rolled_back_at >= 1_000, "the rollback happened too late in the load to prove anything"
    assert promoted_at >= 800
    assert wait_for(lambda: model_info(cluster, "v2") == 0.0 and model_info(cluster, "v1") == 1.0, timeout=30)
    swaps = cluster.prometheus_query('sum(propensity_model_swaps_total{result="swapped"})')
    assert swaps and float(swaps[0]["value"][1]) >= 8  # 2 replicas x 2 workers x (promote + rollback)
