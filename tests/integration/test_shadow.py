"""Shadow scoring under real gunicorn workers: `staging` (a model retrained on another month) scores every
live row beside `production`; every answer stays production's, bit for bit, and the agreement the
workers export equals the comparison of the two models on the same rows in this process."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.model.registry import Registry
from service.monitoring.shadow import RESULTS, compare
from service.serving.batch import JsonBatch
from service.serving.metrics import SHADOW_DIFF_BUCKETS
from service.serving.scorer import CompiledModel
from tests.integration.conftest import staged_copy
from tests.integration.prometheus_server import start_prometheus
from tests.integration.scraped import Key, key, samples, total
from tests.servers import PROPENSITY, Server, start_server, wait_until
from tools.bench.cluster_bench import make_rows

CALLS = 400  # single rows and batches of up to 40 rows: 4,400 rows
PAIR = {"served": "v1", "shadow": "v2"}


@pytest.fixture(scope="module")
def registry(retrained: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return staged_copy(retrained, tmp_path_factory.mktemp("shadow"))


@pytest.fixture(scope="module")
def server(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"PROPENSITY_SHADOW_SHARE": "1", "PROPENSITY_PREDICTION_LOG_ENABLED": "false"}
    with start_server(registry.root, tmp_path_factory.mktemp("shadow-log"), env=env) as srv:
        yield srv


def scrape(url: str) -> dict[Key, float]:
    return samples([httpx.get(url + "/metrics").text])


def shadow_rows(metrics: dict[Key, float]) -> float:
    return total(metrics, "propensity_shadow_rows_total")


def test_every_answer_is_productions_and_the_agreement_is_the_offline_comparison(
    server: Server, registry: Registry
) -> None:
    served = CompiledModel.from_artifact(registry.load_serving("v1"))
    shadow = CompiledModel.from_artifact(registry.load_serving("v2"))
    assert served.cutoff != shadow.cutoff or served.coefficients != shadow.coefficients
    deadline = time.monotonic() + 30
    while scrape(server.url).get(key("propensity_shadow_model_info", model="propensity", version="v2")) != 1:
        assert time.monotonic() < deadline, "the workers never loaded the staging model"
        time.sleep(0.2)

    rows = make_rows(CALLS * 11, seed=77)
    bodies, offset = [], 0
    for i in range(CALLS):
        size = 1 if i % 2 else 1 + (i % 40)
        bodies.append(rows[offset : offset + size])
        offset += size
    sent = rows[:offset]
    with httpx.Client(base_url=server.url) as client:
        for body in bodies:
            answer = client.post(
                "/predict", content=orjson.dumps(body), headers={"content-type": "application/json"}
            )
            assert answer.status_code == 200 and answer.headers["x-model-version"] == "v1"
            assert answer.content == orjson.dumps(served.records(served.score(body)))

    deadline = time.monotonic() + 60
    while (metrics := scrape(server.url)) and shadow_rows(metrics) < len(sent):
        assert time.monotonic() < deadline, f"shadow rows {shadow_rows(metrics)} of {len(sent)}"
        time.sleep(0.25)
    batch = JsonBatch(sent)
    offline = compare(served, served.score_batch(batch), shadow, shadow.score_batch(batch))
    for result in RESULTS:
        assert (
            metrics.get(key("propensity_shadow_rows_total", **PAIR, result=result), 0)
            == offline.counts[result]
        )
    assert offline.counts["flip_up"] + offline.counts["flip_down"] > 0  # two different models
    for bound in SHADOW_DIFF_BUCKETS:
        want = int((offline.differences <= bound).sum())
        assert metrics[key("propensity_shadow_phat_difference_bucket", **PAIR, le=str(bound))] == want, bound
    for feature, shift in offline.shifts.items():
        got = metrics[key("propensity_shadow_contribution_shift_total", **PAIR, feature=feature)]
        assert got == pytest.approx(shift, rel=1e-9)
    skipped = {
        labels: v for (name, labels), v in metrics.items() if name == "propensity_shadow_skipped_rows_total"
    }
    assert sum(skipped.values()) == 0, skipped
    assert metrics[("propensity_shadow_seconds_total", ())] > 0


def test_the_promotion_prints_and_records_what_shadow_scoring_saw(
    server: Server, registry: Registry, tmp_path: Path
) -> None:
    """`registry promote --shadow-from` a real Prometheus scraping the server: the rows by result and the
    contribution shifts are the workers' counters, which the test above held to the offline comparison."""
    exported = scrape(server.url)
    config = f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: propensity
    static_configs: [{{targets: ["127.0.0.1:{server.port}"]}}]
"""
    copy = staged_copy(registry, tmp_path)  # promoting there leaves the server's registry as it is
    with start_prometheus(config, tmp_path / "prometheus") as prom:
        want = str(int(shadow_rows(exported)))
        assert wait_until(
            lambda: [r["value"][1] for r in prom.query("sum(propensity_shadow_rows_total)")] == [want], 30
        )
        done = subprocess.run(
            [
                PROPENSITY,
                "registry",
                "promote",
                "staging",
                "--cutoff",
                "take",
                "--reason",
                "shadow clean",
                "--shadow-from",
                prom.url,
            ],
            env={**os.environ, "PROPENSITY_ARTIFACTS_DIR": str(copy.root)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    rows = {r: int(exported.get(key("propensity_shadow_rows_total", **PAIR, result=r), 0)) for r in RESULTS}
    compared = rows["same"] + rows["flip_up"] + rows["flip_down"]
    assert f"shadow (v1 served, v2 shadow): {compared:,} rows compared" in done.stdout
    assert f"({rows['flip_up']:,} up, {rows['flip_down']:,} down)" in done.stdout
    event = [e for e in copy.history() if e["event"] == "promote" and e["alias"] == "production"][-1]
    summary = event["shadow"]
    assert summary["rows"] == rows and summary["compared"] == compared
    assert summary["flip_share"] == (rows["flip_up"] + rows["flip_down"]) / compared
    shifts = {
        dict(labels)["feature"]: v
        for (name, labels), v in exported.items()
        if name == "propensity_shadow_contribution_shift_total"
    }
    top = sorted(shifts.items(), key=lambda kv: -kv[1])[:5]
    assert [s["feature"] for s in summary["contribution_shift"]] == [f for f, _ in top]
    for item, (_, total_shift) in zip(summary["contribution_shift"], top, strict=True):
        assert item["mean"] == pytest.approx(total_shift / compared, rel=1e-9)
    mean = (
        exported[key("propensity_shadow_phat_difference_sum", **PAIR)]
        / exported[key("propensity_shadow_phat_difference_count", **PAIR)]
    )
    assert summary["phat_difference"]["mean"] == pytest.approx(mean, rel=1e-9)
    assert summary["phat_difference"]["q01"] < summary["phat_difference"]["q99"]


def test_no_staging_alias_no_shadow(
    server: Server, registry: Registry, reference_rows: list[dict[str, Any]]
) -> None:
    """The alias deleted: the workers let the challenger go and count the rows as not shadowed."""
    registry.delete_alias("staging", reason="the shadow test is done")
    deadline = time.monotonic() + 30
    while scrape(server.url).get(
        ("propensity_shadow_model_info", (("model", "propensity"), ("version", "v2")))
    ):
        assert time.monotonic() < deadline, "the workers kept the deleted staging model"
        time.sleep(0.2)
    before = scrape(server.url)
    for _ in range(10):
        assert httpx.post(server.url + "/predict", json=reference_rows).status_code == 200
    time.sleep(0.6)  # two metric flushes
    after = scrape(server.url)
    no_model = key("propensity_shadow_skipped_rows_total", reason="no_model")
    assert after.get(no_model, 0) - before.get(no_model, 0) == 10 * len(reference_rows)
    assert shadow_rows(after) == shadow_rows(before)
