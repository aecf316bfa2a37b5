"""Shadow results in the prediction log, under real gunicorn workers: every row `staging` scored beside
`production` is in shadow_predictions with both models' bits, the labels sent back for the served rows
judge the challenger on those same rows, and GET /performance/shadow and `propensity shadow-performance`
say what the offline judgement of the two models on the same rows and labels says."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from service.model.registry import Registry
from service.monitoring.prediction_store import PredictionStore, ShadowFrame
from service.monitoring.shadow_performance import judge
from service.serving.scorer import CompiledModel
from tests.integration.conftest import staged_copy
from tests.servers import PROPENSITY, Server, start_server
from tools.bench.cluster_bench import make_rows

CALLS = 300  # one-row calls and batches of up to 30 rows


@pytest.fixture(scope="module")
def registry(retrained: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return staged_copy(retrained, tmp_path_factory.mktemp("shadow-log"))


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"PROPENSITY_SHADOW_SHARE": "1", "PROPENSITY_PREDICTION_LOG_FLUSH_SECONDS": "0.2"}
    with start_server(registry.root, tmp_path_factory.mktemp("shadow-log-run"), env=env) as srv:
        yield srv


def logged(store: PredictionStore) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return list(
            conn.exec_driver_sql(
                "SELECT request_id, row_index, served_version, served_phat, served_outcome, shadow_version, "
                "shadow_phat, shadow_outcome FROM shadow_predictions"
            ).all()
        )


def assert_same(got: Any, want: Any, path: str = "") -> None:
    """Equal, numbers to 1e-12 relative (the log's rows come back in the workers' write order, so sums
    over them may differ from the offline ones in the last bit)."""
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), path
    else:
        assert got == want, path


def test_the_challenger_is_judged_on_the_labelled_live_rows(server: Server, registry: Registry) -> None:
    served = CompiledModel.from_artifact(registry.load_serving("v1"))
    shadow = CompiledModel.from_artifact(registry.load_serving("v2"))
    rows = make_rows(CALLS * 16, seed=78)
    calls: list[tuple[str, list[dict[str, Any]]]] = []
    offset = 0
    for i in range(CALLS):
        size = 1 if i % 2 else 1 + (i % 30)
        calls.append((f"shadow-log-{i}", rows[offset : offset + size]))
        offset += size
    deadline = time.monotonic() + 30
    with httpx.Client(base_url=server.url) as client:
        while not client.get("/metrics").text.count(
            'propensity_shadow_model_info{model="propensity",version="v2"} 1'
        ):
            assert time.monotonic() < deadline, "the workers never loaded the staging model"
            time.sleep(0.2)
        for request_id, body in calls:
            answer = client.post("/predict", json=body, headers={"x-request-id": request_id})
            assert answer.status_code == 200 and answer.headers["x-model-version"] == "v1"

    expected = {}
    for request_id, body in calls:
        a, b = served.score(body), shadow.score(body)
        assert not a.bad_rows and not b.bad_rows
        for i in range(len(body)):
            expected[request_id, i] = ("v1", a.phat[i], a.outcome[i], "v2", b.phat[i], b.outcome[i])
    store = PredictionStore.open(f"sqlite:///{registry.root / 'prediction-log.sqlite'}")
    deadline = time.monotonic() + 60
    while len(found := logged(store)) < len(expected):
        assert time.monotonic() < deadline, f"{len(found)} of {len(expected)} shadow rows logged"
        time.sleep(0.2)
    assert {(r[0], r[1]): tuple(r[2:]) for r in found} == expected and len(found) == len(expected)
    flips = sum(v[2] != v[5] for v in expected.values())
    assert flips > 0  # two different models (their cutoffs differ too)

    # labels for two thirds of the served rows, drawn from the challenger's phat (it is "right")
    rng = np.random.default_rng(7)
    keys = sorted(expected)
    labels = {k: int(rng.random() < expected[k][4]) for k in keys if rng.random() < 2 / 3}
    items = [{"request_id": k[0], "row": k[1], "label": y} for k, y in labels.items()]
    posted = httpx.post(server.url + "/feedback", json=items, timeout=30)
    assert posted.status_code == 202 and posted.json()["matched"] == len(items), posted.text

    offline = ShadowFrame.of(
        [(0.0, v[0], v[1], v[2], v[3], v[4], v[5], labels.get(k, math.nan)) for k, v in expected.items()]
    )
    (want,) = judge(offline, min_labels=100)
    assert want["labelled"] == len(labels) and want["compared"] == len(expected)
    answer = httpx.get(server.url + "/performance/shadow?since=1h", timeout=30)
    assert answer.status_code == 200, answer.text
    (pair,) = answer.json()["pairs"]
    assert_same(pair, orjson.loads(orjson.dumps(want)))

    url = f"sqlite:///{registry.root / 'prediction-log.sqlite'}"
    cli = subprocess.run(
        [PROPENSITY, "shadow-performance", "--since", "1h", "--url", url, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert orjson.loads(cli.stdout)["pairs"] == [pair]  # the same rows, read the same way
    text = subprocess.run(
        [PROPENSITY, "shadow-performance", "--since", "1h", "--url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert text.startswith(f"v2 (shadow) beside v1 (served): {len(expected):,} rows compared, 0 refused")
    assert f"{len(labels):,} labelled" in text
    print("\n" + text)
    store.close()
