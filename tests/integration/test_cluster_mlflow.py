"""The local cluster with `--mlflow`: an MLflow tracking server under supervisord is the replicas' model
registry. `up` imports the approved model into it once; a version published and promoted on MLflow is
followed by every replica."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.model.mlflow_rest import MlflowRest
from service.model.notebook_import import import_notebook
from service.model.registries import open_registry
from service.model.schema import example_rows
from service.settings import Settings
from tests.conftest import free_port
from tests.servers import wait_until
from tools.bench.cluster_bench import running_cluster
from tools.cluster import Cluster, http_get


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster-mlflow")
    env = {"PROPENSITY_RELOAD_INTERVAL_SECONDS": "0.2"}
    options: dict[str, Any] = {"mlflow": True, "mlflow_port": free_port(), "redis": False, "postgres": False}
    with running_cluster(workdir, replicas=2, workers=1, env=env, **options) as c:
        yield c


def served_versions(cluster: Cluster) -> set[str]:
    versions = set()
    for port in cluster.config.replica_ports():
        status, body = http_get(port, "/health/ready")
        versions.add(json.loads(body)["version"] if status == 200 else f"not ready ({status})")
    return versions


def test_the_replicas_serve_the_approved_model_from_mlflow(cluster: Cluster) -> None:
    url = cluster.config.mlflow_url
    assert url is not None
    model = MlflowRest(url).registered_model("propensity")
    assert [(a["alias"], a["version"]) for a in model["aliases"]] == [("production", "1")]
    assert served_versions(cluster) == {"v1"}
    rows = example_rows()
    status, _ = http_get(cluster.config.nginx_port, "/health/ready")
    assert status == 200
    answer = httpx.post(cluster.config.nginx_url + "/predict", json=rows["rows"][:2]).json()
    assert [r["phat"] for r in answer] == pytest.approx([e["phat"] for e in rows["expected"][:2]], abs=1e-9)
    assert {row["name"]: row["state"] for row in cluster.status()}["mlflow"] == "running"


def test_a_promotion_on_mlflow_is_followed_by_every_replica(cluster: Cluster, tmp_path: Path) -> None:
    settings = Settings(artifacts_dir=tmp_path, mlflow_tracking_uri=cluster.config.mlflow_url)
    registry = open_registry(settings)
    version = import_notebook(registry, promote_if_empty=False)
    assert version == "v2"
    registry.set_alias("production", version)
    assert wait_until(lambda: served_versions(cluster) == {"v2"}, 60)
