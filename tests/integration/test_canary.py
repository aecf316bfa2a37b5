"""The canary under real gunicorn workers: 10% of customers are answered by `staging`, always the same
customers, each answer the bits of the version its X-Model-Version names; and a canary that fails live
rows is rolled back by the workers themselves while every client call is answered."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pandas as pd
import pytest

from service.model.registry import Registry
from service.model.synthetic import write_synthetic_csv
from service.model.training import train_csv
from service.serving.canary import HASH_SPACE, bucket
from service.serving.scorer import CompiledModel
from tests.integration.conftest import staged_copy
from tests.integration.scraped import Key, key, samples
from tests.servers import Server, start_server, wait_until
from tools.bench.cluster_bench import make_rows

IDS = 10_000  # each sent twice: 20,000 calls
JSON = {"content-type": "application/json"}


def scrape(url: str) -> dict[Key, float]:
    return samples([httpx.get(url + "/metrics").text])


def post(client: httpx.Client, row: dict[str, Any]) -> httpx.Response:
    return client.post("/predict", content=orjson.dumps(row), headers=JSON)


def scored_by(model: CompiledModel, answer: httpx.Response, payload: dict[str, Any]) -> bool:
    """The answer is `model`'s bits for the row (with its customer_id echoed)."""
    got = orjson.loads(answer.content)
    echoed = got.pop("customer_id")
    return echoed == payload["customer_id"] and orjson.dumps(got) == orjson.dumps(
        model.records(model.score([payload]))[0]
    )


# --- a healthy canary at 10% --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry(retrained: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return staged_copy(retrained, tmp_path_factory.mktemp("canary"))


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"PROPENSITY_CANARY_SHARE": "0.1", "PROPENSITY_PREDICTION_LOG_ENABLED": "false"}
    with start_server(registry.root, tmp_path_factory.mktemp("canary-log"), env=env) as srv:
        yield srv


def test_ten_percent_of_customers_are_answered_by_staging_always_the_same(
    server: Server, registry: Registry
) -> None:
    models = {v: CompiledModel.from_artifact(registry.load_serving(v)) for v in ("v1", "v2")}
    info = key("propensity_canary_model_info", model="propensity", version="v2")
    assert wait_until(lambda: scrape(server.url).get(info) == 1, 30), "the workers never loaded staging"
    rows = make_rows(IDS, seed=41)
    answered: dict[str, str] = {}
    with httpx.Client(base_url=server.url) as client:
        for attempt in range(2):
            for i, row in enumerate(rows if attempt == 0 else reversed(rows)):
                ident = f"cust-{i if attempt == 0 else IDS - 1 - i}"
                payload = dict(row, customer_id=ident)
                answer = post(client, payload)
                assert answer.status_code == 200, answer.text
                version = answer.headers["x-model-version"]
                assert answered.setdefault(ident, version) == version, ident  # one model per customer
                assert scored_by(models[version], answer, payload)
    by_version = Counter(answered.values())
    share = by_version["v2"] / IDS
    assert 0.09 <= share <= 0.11, by_version
    expected = {i: "v2" if bucket(i) < int(0.1 * HASH_SPACE) else "v1" for i in answered}
    assert answered == expected  # the routing is the documented hash, nothing else
    want = {"v2": 2 * by_version["v2"], "v1": 2 * by_version["v1"]}

    def calls() -> dict[str, float]:
        metrics = scrape(server.url)
        return {
            v: metrics.get(key("propensity_version_calls_total", version=v, route=r), 0)
            for v, r in (("v2", "canary"), ("v1", "production"))
        }

    # a worker writes its counts every PROPENSITY_METRICS_FLUSH_SECONDS: the last calls' come shortly after
    assert wait_until(lambda: calls() == want, 10), (calls(), want)
    metrics = scrape(server.url)
    assert metrics.get(key("propensity_version_calls_total", version="v1", route="fallback"), 0) == 0
    assert registry.aliases()["staging"]["version"] == "v2"  # a healthy canary stays


# --- a canary that fails live rows ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def failing(approved_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """v2 retrained on a month without a single Friday: it knows no `friday` level, and with unseen
    levels refused it fails every Friday row production answers."""
    root = tmp_path_factory.mktemp("canary-failing")
    shutil.copytree(approved_registry.root, root / "artifacts")
    registry = Registry(root / "artifacts", approved_registry.name)
    write_synthetic_csv(root / "month.csv", 6_000, seed=31)
    month = pd.read_csv(root / "month.csv")
    month[month["x5"] != "friday"].to_csv(root / "no-fridays.csv", index=False)
    version, _ = train_csv(root / "no-fridays.csv", registry)
    registry.set_alias("staging", version, reason="canary test")
    return registry


def test_a_canary_failing_live_rows_is_rolled_back_with_no_failed_call(
    failing: Registry, tmp_path: Path
) -> None:
    env = {
        "PROPENSITY_CANARY_SHARE": "0.5",
        "PROPENSITY_UNSEEN_CATEGORY_POLICY": "reject",
        "PROPENSITY_PREDICTION_LOG_ENABLED": "false",
        "PROPENSITY_RELOAD_INTERVAL_SECONDS": "0.2",
    }
    production = CompiledModel.from_artifact(failing.load_serving("v1"))
    rows = make_rows(3_000, seed=43)
    fridays = sum(row.get("x5") == "friday" for row in rows)
    assert fridays > 300
    versions: Counter[str] = Counter()
    with start_server(failing.root, tmp_path, env=env) as server, httpx.Client(base_url=server.url) as client:
        info = key("propensity_canary_model_info", model="propensity", version="v2")
        assert wait_until(lambda: scrape(server.url).get(info) == 1, 30)
        for i, row in enumerate(rows):
            payload = dict(row, customer_id=f"c{i}")
            answer = post(client, payload)
            assert answer.status_code == 200, answer.text  # never the canary's 422
            versions[answer.headers["x-model-version"]] += 1
            if row.get("x5") == "friday":
                assert answer.headers["x-model-version"] == "v1"
                assert scored_by(production, answer, payload)
        assert "staging" not in failing.aliases()  # rolled back, by a worker
        metrics = scrape(server.url)
        rollbacks = sum(
            metrics.get(key("propensity_canary_rollbacks_total", version="v2", reason=r), 0)
            for r in ("error_rate", "latency")
        )
        assert (
            rollbacks >= 1
            and metrics.get(key("propensity_canary_rollbacks_total", version="v2", reason="error_rate"), 0)
            >= 1
        )
        assert metrics.get(key("propensity_version_calls_total", version="v1", route="fallback"), 0) >= 1
        tail = [post(client, dict(row, customer_id=f"late{i}")) for i, row in enumerate(rows[:300])]
        assert {a.headers["x-model-version"] for a in tail} == {"v1"}  # every worker stopped
        assert {a.status_code for a in tail} == {200}
    assert versions["v2"] > 0  # the canary did answer calls before it was rolled back
    deleted = [e for e in failing.history() if e["event"] == "alias-delete"]
    assert len(deleted) == 1 and deleted[0]["previous"] == "v2"
    assert deleted[0]["reason"].startswith("canary rolled back automatically (error_rate)")
