"""The loop after the answer, end to end on real processes: 50,000 synthetic rows scored with pass-through
ids, their labels posted (by request and row, by id, late, duplicated, conflicting, unmatched), and the
realized metrics the service reports checked against scikit-learn's on the same (phat, label) pairs.

Two stores: the embedded default (`propensity serve`, SQLite) and the local cluster (2 replicas behind
nginx, PostgreSQL). Then the alarms: labels drawn from a shifted truth make the estimate-vs-realized gap and
the calibration alert conditions hold in a real Prometheus scraping the service; labels drawn from the
approved model do not. Last, PostgreSQL is killed under load: no /predict fails, and once it is back the
log holds every row that was answered."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import statsmodels.api as sm
import yaml
from scipy.special import expit, logit
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from service.model.registry import Registry
from service.model.synthetic import make_synthetic_frame
from tests.integration.prometheus_server import Prometheus, start_prometheus
from tests.servers import start_server, wait_until
from tools.bench.cluster_bench import running_cluster
from tools.cluster import Cluster
from tools.loadgen import LoadRunner, post
from tools.paths import REPO

ROWS = 50_000
CALL_ROWS = 10_000
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
FAST = {
    "PROPENSITY_PREDICTION_LOG_ENABLED": "true",  # running_cluster's default is off (the bench's cluster)
    "PROPENSITY_PREDICTION_LOG_FLUSH_SECONDS": "0.2",
    "PROPENSITY_PREDICTION_LOG_RETRY_SECONDS": "1",
    "PROPENSITY_PERFORMANCE_REFRESH_SECONDS": "1",
    "PROPENSITY_CACHE_ENABLED": "false",
}


@dataclass
class Scored:
    request_ids: list[str]  # per row
    rows: list[int]  # index in its request
    ids: list[str]  # customer_id
    phat: np.ndarray


def synthetic(n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    frame = make_synthetic_frame(n, seed, target=False)
    records: list[dict[str, Any]] = orjson.loads(frame.to_json(orient="records"))
    for i, record in enumerate(records):
        record["customer_id"] = f"{prefix}{i}"
    return records


def score(url: str, records: list[dict[str, Any]]) -> Scored:
    out = Scored([], [], [], np.empty(0))
    phat: list[float] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for start in range(0, len(records), CALL_ROWS):
            chunk = records[start : start + CALL_ROWS]
            answer = client.post(
                "/predict", content=orjson.dumps(chunk), headers={"content-type": "application/json"}
            )
            assert answer.status_code == 200, answer.text[:500]
            results = orjson.loads(answer.content)
            request_id = answer.headers["x-request-id"]
            for i, (record, result) in enumerate(zip(chunk, results, strict=True)):
                assert result["customer_id"] == record["customer_id"]
                out.request_ids.append(request_id)
                out.rows.append(i)
                out.ids.append(record["customer_id"])
                phat.append(result["phat"])
    out.phat = np.array(phat)
    return out


def post_labels(url: str, items: list[dict[str, Any]]) -> dict[str, int]:
    totals = {"matched": 0, "unmatched": 0, "duplicate": 0, "conflicting": 0}
    with httpx.Client(base_url=url, timeout=120) as client:
        for start in range(0, len(items), 10_000):
            answer = client.post("/feedback", json=items[start : start + 10_000])
            assert answer.status_code == 202, answer.text[:500]
            for key in totals:
                totals[key] += answer.json()[key]
    return totals


def performance(url: str, **params: str) -> dict[str, Any]:
    answer = httpx.get(f"{url}/performance", params={"since": "1d", **params}, timeout=120)
    assert answer.status_code == 200, answer.text[:500]
    body: dict[str, Any] = answer.json()
    return body


def wait_logged(url: str, n: int, timeout: float = 120) -> None:
    def logged() -> bool:
        cohorts = performance(url, by="all")["cohorts"]
        return bool(cohorts) and cohorts[0]["predictions"] >= n

    assert wait_until(logged, timeout, interval=0.5), f"fewer than {n} rows in the log"


def truth(phat: np.ndarray, *, shifted: bool, seed: int) -> np.ndarray:
    """Labels drawn from the approved model (phat itself), or from a shifted truth: half the logit's
    slope and a changed intercept, as if a coefficient had changed in the world."""
    p = expit(0.5 * logit(phat) + 0.4) if shifted else phat
    return (np.random.default_rng(seed).random(phat.shape[0]) < p).astype(int)


def check_the_loop(url: str) -> None:
    scored = score(url, synthetic(ROWS, seed=31, prefix="C"))
    wait_logged(url, ROWS)
    labels = truth(scored.phat, shifted=False, seed=7)
    n = ROWS
    by_request = range(0, 40_000)
    by_id = range(40_000, 49_000)
    late = range(49_000, n)
    items = [
        {"request_id": scored.request_ids[i], "row": scored.rows[i], "label": int(labels[i])}
        for i in by_request
    ]
    items += [
        {"customer_id": scored.ids[i], "label": int(labels[i]), "observed_at": time.time() + 1} for i in by_id
    ]
    items += [dict(items[i]) for i in range(0, 500)]  # sent again: duplicates
    items += [{**items[i], "label": 1 - int(labels[i])} for i in range(1_000, 1_100)]  # conflicting
    items += [{"request_id": f"never-{i}", "row": 0, "label": 1} for i in range(200)]  # unmatched
    counts = post_labels(url, items)
    assert counts == {"matched": 49_000, "unmatched": 200, "duplicate": 500, "conflicting": 100}
    early = performance(url, by="all")["cohorts"][0]
    assert (early["predictions"], early["labelled"]) == (n, 49_000)
    late_items = [{"customer_id": scored.ids[i], "label": int(labels[i])} for i in late]
    assert post_labels(url, late_items)["matched"] == len(late)
    # a repeat of the whole first call changes nothing
    assert post_labels(url, items[:10_000]) == {
        "matched": 0,
        "unmatched": 0,
        "duplicate": 10_000,
        "conflicting": 0,
    }

    report = performance(url, by="all")
    cohort = report["cohorts"][0]
    assert (cohort["predictions"], cohort["labelled"]) == (n, n)
    realized = cohort["realized"]
    assert abs(realized["auc"]["value"] - roc_auc_score(labels, scored.phat)) <= 1e-9
    assert abs(realized["brier"]["value"] - brier_score_loss(labels, scored.phat)) <= 1e-9
    assert abs(realized["log_loss"]["value"] - log_loss(labels, scored.phat)) <= 1e-9
    assert abs(realized["observed_rate"]["value"] - labels.mean()) <= 1e-9
    assert abs(realized["mean_phat"]["value"] - scored.phat.mean()) <= 1e-9
    fit = sm.Logit(labels, sm.add_constant(logit(scored.phat))).fit(disp=0, tol=1e-12)
    assert abs(realized["calibration_intercept"]["value"] - fit.params[0]) <= 1e-6
    assert abs(realized["calibration_slope"]["value"] - fit.params[1]) <= 1e-6
    cutoff = report["cutoff"]
    chosen = scored.phat > cutoff
    assert abs(realized["precision"]["value"] - labels[chosen].mean()) <= 1e-9
    assert abs(realized["recall"]["value"] - chosen[labels == 1].mean()) <= 1e-9
    # labels from the approved model itself: no gap alarm
    assert not any(g["significant"] for g in cohort["gap"].values())
    days = performance(url, by="day")["cohorts"]
    assert sum(c["predictions"] for c in days if c["cohort"] != "all") == n


# --- the embedded default: SQLite --------------------------------------------------------------------------
def own_registry(approved_registry: Registry, root: Path) -> Path:
    shutil.copytree(approved_registry.root, root, ignore=shutil.ignore_patterns("prediction-*"))
    return root


def test_the_loop_on_the_embedded_default(approved_registry: Registry, tmp_path: Path) -> None:
    artifacts = own_registry(approved_registry, tmp_path / "artifacts")
    with start_server(artifacts, tmp_path, env=FAST) as server:
        check_the_loop(server.url)
    assert (artifacts / "prediction-log.sqlite").exists()


# --- the local cluster: nginx, 2 replicas, PostgreSQL ------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, approved_registry: Registry) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("loop-cluster")
    artifacts = own_registry(approved_registry, workdir / "artifacts")
    with running_cluster(workdir, replicas=2, workers=2, artifacts_dir=artifacts, env=FAST) as c:
        yield c


def nginx_url(cluster: Cluster) -> str:
    return f"http://127.0.0.1:{cluster.config.nginx_port}"


def test_the_loop_on_the_cluster_with_postgresql(cluster: Cluster) -> None:
    check_the_loop(nginx_url(cluster))


def log_count(cluster: Cluster, prefix: str) -> int:
    import psycopg

    url = f"postgresql://propensity@127.0.0.1:{cluster.config.postgres_port}/propensity"
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT count(*) FROM predictions WHERE passthrough_id LIKE %s", (prefix + "%",)
        ).fetchone()
    assert row is not None
    return int(row[0])


def cluster_counter(cluster: Cluster, result: str) -> float:
    total = 0.0
    for port in cluster.config.replica_ports():
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("propensity_prediction_log_rows_total{") and f'result="{result}"' in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_postgresql_killed_under_load_fails_no_call_and_loses_no_row(cluster: Cluster) -> None:
    records = synthetic(3_000, seed=44, prefix="K-")
    requests = [post("/predict", orjson.dumps(r)) for r in records]
    runner = LoadRunner(
        nginx_url(cluster), requests, total=len(requests), concurrency=8, max_rate=150, deadline_seconds=120
    )
    spooled_before = cluster_counter(cluster, "spooled")
    import threading

    killer = threading.Timer(4.0, lambda: cluster.kill("postgres"))
    killer.start()
    result = runner.run()
    killer.join()
    assert result.failed == 0, result
    assert result.ok == len(requests)
    assert cluster_counter(cluster, "spooled") > spooled_before  # the outage was seen, and spooled
    assert wait_until(lambda: log_count(cluster, "K-") == len(requests), 120, interval=1), log_count(
        cluster, "K-"
    )
    assert cluster_counter(cluster, "dropped") == 0


# --- the alarms, in a real Prometheus ----------------------------------------------------------------------
def alert_expr(name: str) -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return str(rule["expr"])
    raise AssertionError(f"no alert {name} in {ALERTS}")


def scrape_config(port: int) -> str:
    return (
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: propensity\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )


@pytest.mark.parametrize("shifted", [True, False], ids=["shifted-truth", "approved-truth"])
def test_the_gap_and_calibration_alarms_fire_only_on_a_shifted_truth(
    approved_registry: Registry, tmp_path: Path, shifted: bool
) -> None:
    artifacts = own_registry(approved_registry, tmp_path / "artifacts")
    with start_server(artifacts, tmp_path, env=FAST) as server:
        scored = score(server.url, synthetic(20_000, seed=52, prefix="A"))
        wait_logged(server.url, 20_000)
        labels = truth(scored.phat, shifted=shifted, seed=3)
        items = [{"customer_id": scored.ids[i], "label": int(labels[i])} for i in range(len(labels))]
        assert post_labels(server.url, items)["matched"] == len(labels)
        cohort = performance(server.url, by="all")["cohorts"][0]
        slope = cohort["realized"]["calibration_slope"]
        with start_prometheus(scrape_config(server.port), tmp_path / "prometheus") as prom:
            gap = alert_expr("PropensityEstimateVsRealizedGap")
            calibration = alert_expr("PropensityCalibrationSlopeOutOfBand")
            labelled = 'propensity_performance_labels{window="7d"} >= 20000'
            assert prom.wait_for(labelled, timeout=60), "the gauges never counted the labels"
            if shifted:
                assert cohort["gap"]["observed_rate"]["significant"] and cohort["gap"]["auc"]["significant"]
                assert slope["upper"] < 0.8
                fired = {r["metric"]["metric"] for r in prom.wait_for(gap, timeout=30)}
                assert fired == {"auc", "observed_rate"}
                assert prom.wait_for(calibration, timeout=30)
            else:
                assert not cohort["gap"]["observed_rate"]["significant"]
                assert slope["lower"] < 1.0 < slope["upper"]
                time.sleep(3)  # a few scrapes and refreshes more: still nothing
                assert _quiet(prom, gap) and _quiet(prom, calibration)


def _quiet(prom: Prometheus, expr: str) -> bool:
    return prom.query(expr) == []


# --- a worker killed: what it held unwritten is the loss, and no more -------------------------------------
KILL_RATE = 200  # requests per second, paced
KILL_FLUSH_SECONDS = 0.5


def test_a_killed_worker_loses_at_most_its_flush_window(approved_registry: Registry, tmp_path: Path) -> None:
    import os
    import signal
    import sqlite3
    import threading

    artifacts = own_registry(approved_registry, tmp_path / "artifacts")
    env = {**FAST, "PROPENSITY_PREDICTION_LOG_FLUSH_SECONDS": str(KILL_FLUSH_SECONDS)}
    records = synthetic(2_000, seed=61, prefix="W-")
    answered: set[str] = set()

    def validate(_index: int, status: int, _header: str | None, body: bytes) -> bool:
        answered.add(orjson.loads(body)["customer_id"])
        return True

    with start_server(artifacts, tmp_path, env=env) as server:
        victim = min(server.worker_pids())
        runner = LoadRunner(
            server.url,
            [post("/predict", orjson.dumps(r)) for r in records],
            total=len(records),
            concurrency=4,
            max_rate=KILL_RATE,
            deadline_seconds=120,
            validate=validate,
        )
        killer = threading.Timer(4.0, lambda: os.kill(victim, signal.SIGKILL))
        killer.start()
        runner.run()
        killer.join()
        time.sleep(3 * KILL_FLUSH_SECONDS + 1)  # the survivors and the new worker write what they hold
        with sqlite3.connect(artifacts / "prediction-log.sqlite") as db:
            logged = {
                r[0]
                for r in db.execute("SELECT passthrough_id FROM predictions WHERE passthrough_id LIKE 'W-%'")
            }
    assert len(answered) > 1_500  # the kill cost some calls their connection, not the run
    assert logged <= answered  # nothing logged that was not answered
    lost = answered - logged
    print(f"worker killed under {KILL_RATE} req/s: {len(lost)} of {len(answered)} answered rows not logged")
    # The killed worker held at most its last flush interval of rows (plus the write in flight): at the
    # paced rate, and with a second of slack for the write, no more than this.
    assert len(lost) <= KILL_RATE * (KILL_FLUSH_SECONDS + 1.0), len(lost)
