"""The Swarm stack deployed for real: swarm-stack.test.yml on this machine's Docker engine (make test-swarm).

The module fixture prepares a registry (the approved model as v1 = production, and again as v2), an API
key, deploys the stack as `propensity-e2e` and waits until every task is healthy. The tests then run in
file order, each under bounded load through nginx on 127.0.0.1 (tools/loadgen.py): scoring equal to
in-process scoring, scale to 4, a rolling update to a new image tag and model version, a rollback, a
killed task, 32 concurrent 10,000-row requests within the memory limits, the autoscaler (scaled to 1
only then: the earlier steps scale api by hand) raising api from 2 replicas under load and returning it
to 2 after, and the complete teardown. Every listener is on
loopback; the swarm is left as it was found (a one-node swarm created here is left again, with the
docker_gwbridge network it brought).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.model.notebook_import import import_notebook
from service.model.registry import Registry
from service.serving.scorer import CompiledModel
from tests.servers import METRICS_SETTLE_SECONDS
from tests.swarm.node import leave_swarm_made_here, network_exists
from tests.swarm.traffic import BackgroundLoad, Cases, make_cases
from tools import swarm
from tools.bench.cluster_bench import make_rows
from tools.cluster_config import ports_in_use
from tools.loadgen import LoadResult, LoadRunner, post
from tools.swarm_config import NGINX_PORT, POSTGRES_PORT, SLOT_PORT_BASE, loopback_ports

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
STACK_FILE = REPO / "swarm-stack.test.yml"
STACK = "propensity-e2e"
API = f"{STACK}_api"
AUTOSCALER = f"{STACK}_autoscaler"
PROXY = f"{STACK}_docker-proxy"
DOCKER_PROXY_PORT = 18392  # swarm-stack.test.yml: the autoscaler's way to the Engine
AUTOSCALER_METRICS_PORT = 18391  # swarm-stack.test.yml: its settings, e2e timings
AUTOSCALER_MIN = 2
AUTOSCALER_DOWN_WINDOW_SECONDS = 30
PROMETHEUS_PORT = 18390
PREDICT_RATE = 'sum(rate(propensity_http_requests_total{job="propensity",route="/predict"}[15s]))'
NGINX = f"http://127.0.0.1:{NGINX_PORT}"
API_UID = 10001  # the image's user: owns the bind-mounted registry
IN_PROGRESS = {"updating", "rollback_started"}
STEPS: list[dict[str, Any]] = []  # what each step measured, printed by the last test


def log(message: str) -> None:
    print(f"[swarm-e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- the stack ------------------------------------------------------------------------------------------
@dataclass
class Deployed:
    image: str
    testinfra: str
    key: str
    cases: Cases
    deploy_seconds: float
    initialised_swarm: bool
    made_gwbridge: bool
    extra_tags: list[str] = field(default_factory=list)
    torn_down: bool = False
    left_swarm: bool = False

    def teardown(self) -> None:
        if self.torn_down:
            return
        self.torn_down = True
        swarm.remove(STACK, timeout=180)
        for tag in self.extra_tags:
            swarm.docker("image", "rm", tag, check=False)
        if self.initialised_swarm:
            self.left_swarm = leave_swarm_made_here(self.made_gwbridge, log)


def stack_report() -> str:
    """Tasks and the last log lines of every service: attached to failures."""
    parts = [swarm.docker("stack", "ps", "--no-trunc", STACK, check=False)]
    for name in swarm.docker("stack", "services", "--format", "{{.Name}}", STACK, check=False).split():
        logs = swarm.docker("service", "logs", "--tail", "15", "--no-task-ids", name, check=False, timeout=30)
        parts.append(f"--- {name} ---\n{logs}")
    return "\n".join(parts)


def _prepare_registry(root: Path) -> Registry:
    """v1 (production) and v2: the approved model twice, so a rollout can pin a different version."""
    registry = Registry(root / "artifacts", "propensity")
    assert import_notebook(registry) == "v1" and import_notebook(registry) == "v2"
    assert registry.resolve("production") == "v1"
    for path in [registry.root, *registry.root.rglob("*")]:
        os.chown(path, API_UID, API_UID)
    return registry


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    if shutil.which("docker") is None or not swarm.docker(
        "info", "--format", "{{.ServerVersion}}", check=False
    ):
        pytest.fail("no Docker engine answers: run `make test-swarm` (it starts one)")
    image = os.environ.get("PROPENSITY_E2E_IMAGE", "propensity-api:dev")
    testinfra = os.environ.get("PROPENSITY_TESTINFRA_IMAGE", "propensity-testinfra:bookworm")
    for name in (image, testinfra):
        if not swarm.docker("image", "ls", "-q", name).strip():
            pytest.fail(f"image {name} is missing: run `make test-swarm` (it builds it)")
    state = swarm.swarm_state()
    if state.is_manager and swarm.leftovers(STACK):
        log(f"removing a stack {STACK} left over by an earlier run")
        swarm.remove(STACK)
    taken = ports_in_use(loopback_ports())
    if taken:
        pytest.fail(f"the test stack's loopback ports are in use: {taken}")

    work = tmp_path_factory.mktemp("swarm")
    registry = _prepare_registry(work)
    key = secrets.token_hex(24)
    keys_file = work / "api-keys.map"
    keys_file.write_text(f'"{key}" e2e;\n')
    for name in ("redis_password", "cache_secret"):  # Redis asks for the one; replicas sign with the other
        (work / name).write_text(secrets.token_hex(32) + "\n")
    env = {
        **os.environ,
        "PROPENSITY_API_IMAGE": image,
        "PROPENSITY_TESTINFRA_IMAGE": testinfra,
        "PROPENSITY_ARTIFACTS_DIR": str(registry.root),
        "PROPENSITY_API_KEYS_FILE": str(keys_file),
        "PROPENSITY_REDIS_PASSWORD_FILE": str(work / "redis_password"),
        "PROPENSITY_CACHE_SECRET_FILE": str(work / "cache_secret"),
    }
    models = {v: CompiledModel.from_artifact(registry.load(v)) for v in ("v1", "v2")}
    cases = make_cases(key, models["v1"], n_single=150, n_batch=50)
    assert make_cases(key, models["v2"], 150, 50) == cases  # one model twice: either answer is right
    had_gwbridge = network_exists("docker_gwbridge")
    initialised = swarm.require_manager(init=not state.is_manager and state.node_state == "inactive")
    deployed = Deployed(
        image=image,
        testinfra=testinfra,
        key=key,
        cases=cases,
        deploy_seconds=0.0,
        initialised_swarm=initialised,
        made_gwbridge=not had_gwbridge,
    )
    try:
        started = time.monotonic()
        swarm.deploy(STACK_FILE, STACK, env=env, resolve_image="never")
        try:
            swarm.wait_converged(STACK, timeout=180, log=log)
        except swarm.SwarmError as exc:
            pytest.fail(f"{exc}\n{stack_report()}")
        deployed.deploy_seconds = time.monotonic() - started
        log(f"deployed and healthy in {deployed.deploy_seconds:.1f}s")
        yield deployed
    finally:
        deployed.teardown()


# --- requests -------------------------------------------------------------------------------------------
def load(cases: Cases, total: int, versions: set[str], *, concurrency: int = 4) -> LoadResult:
    """`total` requests through nginx (tools/loadgen.py), every answer checked."""
    runner = LoadRunner(
        NGINX,
        cases.requests,
        total=total,
        concurrency=concurrency,
        deadline_seconds=120,
        header="X-Model-Version",
        validate=cases.validator(versions),
    )
    return runner.run()


# --- probes ---------------------------------------------------------------------------------------------
def get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def slot_predictions(slot: int) -> float | None:
    """/predict requests the api task in `slot` has answered (its own /metrics), or None if it is not up."""
    try:  # a short timeout: a starting task's socket accepts before its worker answers
        status, _, body = get(SLOT_PORT_BASE + slot, "/metrics", timeout=2)
    except OSError:
        return None
    if status != 200:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("propensity_http_requests_total{") and 'route="/predict"' in line
    )


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def api_tasks() -> list[dict[str, str]]:
    """The api service's tasks that should run: id, slot, state, image."""
    out = swarm.docker(
        "service", "ps", API, "--filter", "desired-state=running", "--no-trunc",
        "--format", "{{.ID}}\t{{.Name}}\t{{.CurrentState}}\t{{.Image}}",
    )  # fmt: skip
    tasks = []
    for line in out.splitlines():
        task_id, name, state, image = line.split("\t")
        tasks.append({"id": task_id, "slot": name.rsplit(".", 1)[-1], "state": state, "image": image})
    return tasks


def update_status(service: str) -> tuple[str, str]:
    """(state, started at) of the service's last update or rollback; ("", "") if it never had one."""
    out = swarm.docker(
        "service", "inspect", "--format",
        "{{if .UpdateStatus}}{{.UpdateStatus.State}}\t{{.UpdateStatus.StartedAt}}{{else}}\t{{end}}", service,
    )  # fmt: skip
    state, _, started = out.strip("\n").partition("\t")
    return state, started


def record(step: str, result: LoadResult, **facts: Any) -> None:
    STEPS.append(
        {
            "step": step,
            "sent": result.sent,
            "ok": result.ok - result.invalid,
            "failed": result.failed,
            "not_equal_to_in_process": result.invalid,
            "statuses": dict(result.statuses),
            "errors": dict(result.errors),
            "versions": dict(result.header_values),
            "p99_ms": round(result.percentile_ms(0.99), 1),
            **facts,
        }
    )
    log(f"{step}: {json.dumps(STEPS[-1])}")


def assert_no_failures(result: LoadResult) -> None:
    assert result.failed == 0, (
        f"{result.failed} failed requests: statuses {dict(result.statuses)}, errors {dict(result.errors)}, "
        f"{result.invalid} answers not equal to in-process scoring"
    )


# --- the steps ------------------------------------------------------------------------------------------
def test_stack_answers_through_nginx_with_an_api_key(stack: Deployed) -> None:
    assert get(NGINX_PORT, "/health")[0] == 200
    body = orjson.dumps(make_rows(1, seed=5)[0])
    for headers in ({}, {"X-API-Key": "not-a-key"}):
        conn = http.client.HTTPConnection("127.0.0.1", NGINX_PORT, timeout=10)
        conn.request("POST", "/predict", body, {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        problem = orjson.loads(response.read())
        conn.close()
        assert response.status == 401 and problem["status"] == 401, problem
        assert response.getheader("Content-Type") == "application/problem+json"
    status, headers, ready = get(NGINX_PORT, "/health/ready", {"X-API-Key": stack.key})
    assert status == 200 and orjson.loads(ready)["version"] == "v1"
    assert get(NGINX_PORT, "/metrics", {"X-API-Key": stack.key})[0] == 404  # Prometheus scrapes the tasks
    assert sorted(t["slot"] for t in api_tasks()) == ["1", "2"]


def logged_rows() -> int:
    """Rows in the stack's prediction log (its postgres service, on the loopback port of the test stack)."""
    import psycopg

    url = f"postgresql://propensity@127.0.0.1:{POSTGRES_PORT}/propensity"
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM predictions").fetchone()
    return int(row[0]) if row is not None else 0


def settled_logged_rows(timeout: float = 30.0) -> int:
    """The log's row count once it stops moving (the writers flush every second)."""
    deadline = time.monotonic() + timeout
    count = logged_rows()
    while time.monotonic() < deadline:
        time.sleep(1.5)
        again = logged_rows()
        if again == count:
            return count
        count = again
    return count


def test_2000_requests_equal_in_process_scoring(stack: Deployed) -> None:
    time.sleep(METRICS_SETTLE_SECONDS)
    before = {slot: slot_predictions(slot) or 0.0 for slot in (1, 2)}
    log_before = settled_logged_rows()
    result = load(stack.cases, 2_000, {"v1"})
    time.sleep(METRICS_SETTLE_SECONDS)  # every worker has written its counts
    served = {slot: (slot_predictions(slot) or 0.0) - before[slot] for slot in (1, 2)}
    record("2000 requests vs in-process scoring", result, seconds=round(result.elapsed, 1), per_task=served)
    assert_no_failures(result)
    assert result.sent == 2_000 and result.header_values == Counter({"v1": 2_000})
    assert all(n > 0 for n in served.values()), f"a task got no traffic: {served}"
    assert sum(served.values()) == 2_000, served  # each request answered once, by one task
    # every row answered (scored, or from the Redis cache) is in the stack's PostgreSQL prediction log
    answered = stack.cases.rows(2_000)
    assert wait_until(lambda: logged_rows() - log_before == answered, 30), (
        logged_rows() - log_before,
        answered,
    )


def test_scale_to_4_new_tasks_get_traffic_within_30s(stack: Deployed) -> None:
    with BackgroundLoad(stack.cases, {"v1"}, urls=[NGINX], max_seconds=120) as background:
        assert wait_until(lambda: background.result.sent > 200, 15)
        started = time.monotonic()
        swarm.docker("service", "scale", "--detach", f"{API}=4")
        seen: dict[int, float] = {}

        def new_tasks_served() -> bool:
            for slot in (3, 4):
                if slot not in seen and (slot_predictions(slot) or 0) > 0:
                    seen[slot] = time.monotonic() - started
            return len(seen) == 2

        wait_until(new_tasks_served, 45, interval=0.5)
        swarm.wait_converged(STACK, timeout=120)
        time.sleep(2)
        result = background.stop()
    record(
        "scale api 2 -> 4 under load", result, first_traffic_seconds={k: round(v, 1) for k, v in seen.items()}
    )
    assert len(seen) == 2 and max(seen.values()) <= 30, (
        f"new tasks got traffic after {seen}\n{stack_report()}"
    )
    assert_no_failures(result)
    assert result.sent >= 2_000
    assert sorted(t["slot"] for t in api_tasks()) == ["1", "2", "3", "4"]


def _roll(stack: Deployed, step: str, command: list[str], want_version: str, want_image: str) -> None:
    with BackgroundLoad(stack.cases, {"v1", "v2"}, urls=[NGINX], max_seconds=300) as background:
        assert wait_until(lambda: background.result.sent > 200, 15)
        previous = update_status(API)
        started = time.monotonic()
        swarm.docker(*command)
        assert wait_until(lambda: update_status(API)[1] != previous[1], 15), "the update did not start"
        done = wait_until(lambda: update_status(API)[0] not in IN_PROGRESS, 280, interval=1)
        seconds = time.monotonic() - started
        time.sleep(2)
        result = background.stop()
    final = update_status(API)[0]
    record(step, result, seconds=round(seconds, 1), update_state=final)
    assert done and final in {"completed", "rollback_completed"}, f"update ended {final!r}\n{stack_report()}"
    assert_no_failures(result)
    assert result.sent >= 2_000
    tasks = api_tasks()
    assert len(tasks) == 4 and {t["image"] for t in tasks} == {want_image}, tasks
    after = load(stack.cases, 500, {want_version})
    record(f"{step}: requests after it", after)
    assert_no_failures(after)
    assert after.header_values == Counter({want_version: 500})


def test_rolling_update_to_a_new_image_tag_and_model_version(stack: Deployed) -> None:
    new_tag = f"{stack.image.rsplit(':', 1)[0]}:e2e-rollout"
    swarm.docker("tag", stack.image, new_tag)
    stack.extra_tags.append(new_tag)
    command = [
        "service",
        "update",
        "--detach",
        "--image",
        new_tag,
        "--env-add",
        "PROPENSITY_MODEL_VERSION=v2",
        API,
    ]
    _roll(stack, "rolling update to a new tag + model v2 under load", command, "v2", new_tag)


def test_rollback_under_load(stack: Deployed) -> None:
    command = ["service", "update", "--detach", "--rollback", API]
    _roll(stack, "rollback to the previous spec under load", command, "v1", stack.image)


def test_a_killed_task_is_replaced_and_no_request_fails(stack: Deployed) -> None:
    victim = next(t for t in api_tasks() if t["slot"] == "2")
    container = swarm.docker("ps", "-q", "--filter", f"label=com.docker.swarm.task.id={victim['id']}").strip()
    assert container, f"no container for task {victim}"
    with BackgroundLoad(stack.cases, {"v1"}, urls=[NGINX], max_seconds=120) as background:
        assert wait_until(lambda: background.result.sent > 500, 15)
        started = time.monotonic()
        swarm.docker("kill", container)

        def replaced() -> bool:
            slot2 = [t for t in api_tasks() if t["slot"] == "2"]
            return any(t["id"] != victim["id"] and t["state"].startswith("Running") for t in slot2)

        back = wait_until(replaced, 90, interval=0.5)
        seconds = time.monotonic() - started
        swarm.wait_converged(STACK, timeout=60)
        served_before = slot_predictions(2) or 0.0
        wait_until(lambda: (slot_predictions(2) or 0.0) > served_before, 15)
        result = background.stop()
    record("docker kill of one api task under load", result, replaced_seconds=round(seconds, 1))
    assert back, f"task in slot 2 not replaced\n{stack_report()}"
    assert_no_failures(result)
    assert result.sent >= 2_000
    assert len(api_tasks()) == 4


def containers_of(service: str) -> dict[str, tuple[bool, int]]:
    """Container id -> (OOM-killed, restart count) of the service's running tasks."""
    ids = swarm.docker("ps", "-q", "--no-trunc", "--filter", f"label=com.docker.swarm.service.name={service}")
    out = {}
    for cid in ids.split():
        state = swarm.docker("inspect", "--format", "{{.State.OOMKilled}} {{.RestartCount}}", cid).split()
        out[cid] = (state[0] == "true", int(state[1]))
    return out


def test_32_concurrent_10000_row_requests_stay_within_the_memory_limits(
    stack: Deployed, approved_compiled: CompiledModel
) -> None:
    """Issue 12's flood: 32 clients each POST a 10,000-row batch (every value a string, ~23 MB) at once.
    nginx (256 MiB) spools bodies to disk and lets 8 large requests through at a time; each api worker
    (1 GiB per task, 2 workers) holds at most its in-flight budget. Every answer is the in-process bits or
    a 503 with Retry-After; no connection is reset, no container is OOM-killed or restarted."""
    rows = make_rows(10_000, seed=3232)
    body = orjson.dumps(rows)
    expected = orjson.dumps(approved_compiled.records(approved_compiled.score(rows)))
    tasks_before = {t["id"] for t in api_tasks()}
    services = (API, f"{STACK}_nginx")
    runner = LoadRunner(
        NGINX,
        [post("/predict", body, headers={"X-API-Key": stack.key})],
        total=32,
        concurrency=32,
        deadline_seconds=180,
        request_timeout=150,
        header="Retry-After",
        validate=lambda index, status, header, answer: answer == expected,
    )
    result = runner.run()
    containers = {service: containers_of(service) for service in services}
    record("32 concurrent 10,000-row requests (23 MB each)", result, body_bytes=len(body))
    assert result.errors == {}, f"connections reset or timed out: {dict(result.errors)}"
    assert set(result.statuses) <= {200, 503} and result.statuses[200] >= 1, dict(result.statuses)
    assert result.invalid == 0  # every 200 carries the in-process bits
    assert result.header_values == ({"1": result.statuses[503]} if result.statuses[503] else {})
    for service, states in containers.items():
        assert states and not any(oom or restarts for oom, restarts in states.values()), (service, states)
    assert {t["id"] for t in api_tasks()} == tasks_before, "an api task was replaced"


def service_replicas(service: str) -> int:
    """The replica count in the service's spec (what `docker service scale` and the autoscaler set)."""
    return int(swarm.docker("service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", service))


def autoscaler_decisions() -> dict[str, float]:
    """propensity_autoscaler_decisions_total by reason, from the autoscaler's own /metrics ({} if down)."""
    try:
        status, _, body = get(AUTOSCALER_METRICS_PORT, "/metrics", timeout=3)
    except OSError:
        return {}
    if status != 200:
        return {}
    decisions: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("propensity_autoscaler_decisions_total{"):
            labels, value = line.rsplit(" ", 1)
            reason = labels.split('reason="', 1)[1].split('"', 1)[0]
            decisions[reason] = float(value)
    return decisions


def prometheus_value(query: str) -> float | None:
    """The test Prometheus' instant value of a one-series query: 0.0 for no series, None if unanswered."""
    try:
        status, _, body = get(
            PROMETHEUS_PORT, "/api/v1/query?" + urllib.parse.urlencode({"query": query}), timeout=5
        )
    except OSError:
        return None
    if status != 200:
        return None
    result = orjson.loads(body)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def assert_scaled_through_the_docker_proxy() -> None:
    """The autoscaler has no Docker socket: its updates went through the proxy, which refused none of its
    calls, and refuses what it was not built for (asked of the real Engine here)."""
    logs = swarm.docker("service", "logs", "--raw", PROXY, timeout=30)
    update = re.compile(
        rf'"POST /v1\.[0-9]+/services/{re.escape(API)}/update\?version=[0-9]+ HTTP/1\.1" 200 '
    )
    assert update.search(logs), logs[-2000:]
    assert '" 403 ' not in logs, [line for line in logs.splitlines() if '" 403 ' in line]
    for method, path in [("GET", "/v1.45/containers/json"), ("GET", f"/v1.45/services/{STACK}_nginx")]:
        conn = http.client.HTTPConnection("127.0.0.1", DOCKER_PROXY_PORT, timeout=10)
        try:
            conn.request(method, path)
            assert conn.getresponse().status == 403, path
        finally:
            conn.close()


def test_autoscaler_scales_up_under_load_and_back_to_min_after(stack: Deployed) -> None:
    swarm.docker("service", "scale", "--detach", f"{API}={AUTOSCALER_MIN}")
    swarm.wait_converged(STACK, timeout=120)
    assert sorted(t["slot"] for t in api_tasks()) == ["1", "2"]
    # the earlier steps' load must have left the autoscaler's window first (it would scale up on it)
    assert wait_until(lambda: prometheus_value(PREDICT_RATE) == 0.0, 60, interval=1), prometheus_value(
        PREDICT_RATE
    )
    try:
        swarm.docker("service", "scale", "--detach", f"{AUTOSCALER}=1")
        try:
            swarm.wait_converged(STACK, timeout=90)  # its healthcheck: /metrics answers
        except swarm.SwarmError as exc:
            pytest.fail(f"{exc}\n{stack_report()}")
        # idle: it decides (every 3 s) and keeps api at min
        assert wait_until(lambda: sum(autoscaler_decisions().values()) >= 2, 30), stack_report()
        idle = autoscaler_decisions()
        assert service_replicas(API) == AUTOSCALER_MIN, f"{idle}\n{stack_report()}"

        with BackgroundLoad(stack.cases, {"v1"}, urls=[NGINX], max_seconds=240) as background:
            started = time.monotonic()
            up = wait_until(lambda: service_replicas(API) > AUTOSCALER_MIN, 60, interval=0.5)
            up_seconds = time.monotonic() - started
            if up:  # keep the load on while the new tasks start and join nginx
                swarm.wait_converged(STACK, timeout=120)
                peak = service_replicas(API)
                new_slots = range(AUTOSCALER_MIN + 1, peak + 1)
                wait_until(lambda: all((slot_predictions(s) or 0) > 0 for s in new_slots), 20, interval=0.5)
                time.sleep(2)
            else:
                peak = service_replicas(API)
            result = background.stop()
        load_seconds = time.monotonic() - started
        stopped = time.monotonic()
        down = up and wait_until(
            lambda: service_replicas(API) == AUTOSCALER_MIN, AUTOSCALER_DOWN_WINDOW_SECONDS + 60, interval=1
        )
        down_seconds = time.monotonic() - stopped
        decisions = autoscaler_decisions()
        record(
            "autoscaler: bounded load, then idle",
            result,
            requests_per_second=round(result.sent / load_seconds, 1),
            load_seconds=round(load_seconds, 1),
            scale_up_seconds=round(up_seconds, 1),
            peak_replicas=peak,
            scale_down_seconds_after_load=round(down_seconds, 1),
            decisions={k: v - idle.get(k, 0.0) for k, v in decisions.items() if v != idle.get(k, 0.0)},
        )
        assert up, f"api not scaled above {AUTOSCALER_MIN} within 60s of load\n{stack_report()}"
        assert up_seconds <= 45, f"scale-up took {up_seconds:.1f}s"
        assert_no_failures(result)
        assert result.sent >= 1_000
        down_limit = AUTOSCALER_DOWN_WINDOW_SECONDS + 60
        assert down, f"api not back to {AUTOSCALER_MIN} within {down_limit}s\n{stack_report()}"
        assert down_seconds >= AUTOSCALER_DOWN_WINDOW_SECONDS * 0.9, "scaled down before its down window"
        swarm.wait_converged(STACK, timeout=90)
        assert sorted(t["slot"] for t in api_tasks()) == ["1", "2"]
        assert decisions.get("scale_up", 0) - idle.get("scale_up", 0) >= 1, decisions
        assert decisions.get("scale_down", 0) - idle.get("scale_down", 0) >= peak - AUTOSCALER_MIN, decisions
        assert_scaled_through_the_docker_proxy()
    finally:
        swarm.docker("service", "scale", "--detach", f"{AUTOSCALER}=0", check=False)


def test_containers_orphaned_by_a_killed_engine_are_removed(stack: Deployed) -> None:
    """A run killed with its engine leaves task containers that no service reaps: remove() clears them
    (the next run's set-up depends on it), and touches nothing without the stack's label."""
    orphans = "propensity-orphans"
    run = ("run", "--detach", "--network", "host")
    label = ("--label", f"{swarm.STACK_LABEL}={orphans}")
    labelled = swarm.docker(*run, *label, stack.testinfra, "sleep", "600").strip()
    bystander = swarm.docker(*run, stack.testinfra, "sleep", "600").strip()
    try:
        assert swarm.leftovers(orphans) == {"containers": [labelled[:12]]}
        swarm.remove(orphans, timeout=60, orphan_grace=2)
        assert swarm.leftovers(orphans) == {}
        assert swarm.docker("ps", "-q", "--no-trunc", "--filter", f"id={bystander}").strip() == bystander
    finally:
        swarm.docker("rm", "--force", labelled, bystander, check=False)


def test_teardown_removes_everything(stack: Deployed, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    stack.teardown()
    seconds = time.monotonic() - started
    if swarm.swarm_state().is_manager:
        assert swarm.leftovers(STACK) == {}
    if stack.left_swarm:  # the one-node swarm made for the test (unless someone deployed onto it meanwhile)
        assert swarm.swarm_state().node_state == "inactive"
        assert not stack.made_gwbridge or not network_exists("docker_gwbridge")
    assert not ports_in_use(loopback_ports())
    with capsys.disabled():
        print(f"\nswarm e2e: deployed in {stack.deploy_seconds:.1f}s, torn down in {seconds:.1f}s")
        for step in STEPS:
            print("  " + json.dumps(step))
