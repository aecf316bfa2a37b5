"""MLflow as the stack's registry, deployed for real: swarm-stack.mlflow.test.yml (make test-swarm).

The serving image is checked first: none of the extras' packages is in it, and it carries the approved
model. Then the module fixture deploys `mlflow` (the propensity-mlflow image: `mlflow server`, SQLite and
the artifacts on a volume) with api at 0 replicas, publishes the approved model into MLflow from this
process, signed (v1 = production, and again as v2), and scales api to 2 tasks whose registry is MLflow
and whose verify key is a Swarm secret. The tests, in file order, each under bounded load straight to
the two api tasks (every answer checked against in-process scoring): answers from v1; a promotion to v2
followed with 0 failed requests; MLflow scaled to 0: serving goes on and readiness stays green; MLflow
back: the next promotion (back to v1) is followed; `registry history` tells it all.
"""

from __future__ import annotations

import http.client
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from service.cli.errors import EXTRA_OF_MODULE
from service.lifecycle.promotion import promote
from service.model.notebook_import import import_notebook
from service.model.registries import ModelRegistry, open_registry
from service.model.signing import generate_keys
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tests.servers import wait_until
from tests.swarm.node import leave_swarm_made_here, network_exists
from tests.swarm.traffic import BackgroundLoad, Cases, make_cases
from tools import swarm
from tools.cluster_config import ports_in_use
from tools.loadgen import LoadResult

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
STACK_FILE = REPO / "swarm-stack.mlflow.test.yml"
STACK = "propensity-mlflow-e2e"
API, MLFLOW = f"{STACK}_api", f"{STACK}_mlflow"
MLFLOW_PORT = 18500
SLOT_PORTS = (18601, 18602)  # swarm-stack.mlflow.test.yml: 18600 + the task's slot
MLFLOW_URL = f"http://127.0.0.1:{MLFLOW_PORT}"
SLOT_URLS = [f"http://127.0.0.1:{port}" for port in SLOT_PORTS]
RELOAD_SECONDS = 1.0  # the stack's PROPENSITY_RELOAD_INTERVAL_SECONDS


def log(message: str) -> None:
    print(f"[swarm-mlflow {time.strftime('%H:%M:%S')}] {message}", flush=True)


def api_image() -> str:
    return os.environ.get("PROPENSITY_E2E_IMAGE", "propensity-api:dev")


def require_image(name: str) -> None:
    if not swarm.docker("image", "ls", "-q", name).strip():
        pytest.fail(f"image {name} is missing: run `make test-swarm` (it builds it)")


# --- the serving image ----------------------------------------------------------------------------------
def test_the_serving_image_has_no_extra_and_carries_the_approved_model() -> None:
    image = api_image()
    require_image(image)
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = swarm.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c", probe, *EXTRA_OF_MODULE
    )
    assert found.strip() == "[]"
    assert swarm.docker("run", "--rm", "--network", "none", "--entrypoint", "python3", image, "-c",
                        "import numpy, fastapi, cryptography").strip() == ""  # fmt: skip
    listed = swarm.docker("run", "--rm", "--network", "none", "--read-only", image, "registry", "list")
    assert "v1 " in listed and "production" in listed.splitlines()[-1]
    size = int(swarm.docker("image", "inspect", "-f", "{{.Size}}", image))
    log(f"serving image {image}: {size / 1e6:.1f} MB")


# --- the stack ------------------------------------------------------------------------------------------
@dataclass
class MlflowStack:
    registry: ModelRegistry
    cases: Cases
    initialised_swarm: bool
    made_gwbridge: bool


def mlflow_healthy() -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", MLFLOW_PORT, timeout=2)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def ready_versions() -> list[str | None]:
    """Each api task's /health/ready: the version it serves, None when it is not ready."""
    out: list[str | None] = []
    for port in SLOT_PORTS:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health/ready")
            answer = conn.getresponse()
            body = answer.read()
            conn.close()
            out.append(str(orjson.loads(body)["version"]) if answer.status == 200 else None)
        except OSError:
            out.append(None)
    return out


def scale(service: str, replicas: int) -> None:
    swarm.docker("service", "scale", "--detach", f"{service}={replicas}")


def report() -> str:
    parts = [swarm.docker("stack", "ps", "--no-trunc", STACK, check=False)]
    for name in (API, MLFLOW):
        parts.append(f"--- {name} ---\n" + swarm.docker("service", "logs", "--tail", "20", name, check=False))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowStack]:
    mlflow_image = os.environ.get("PROPENSITY_E2E_MLFLOW_IMAGE", "propensity-mlflow:dev")
    for name in (api_image(), mlflow_image):
        require_image(name)
    taken = ports_in_use({"mlflow": MLFLOW_PORT, **{f"api.{i}": p for i, p in enumerate(SLOT_PORTS, 1)}})
    if taken:
        pytest.fail(f"the MLflow stack's loopback ports are in use: {taken}")
    state = swarm.swarm_state()
    if state.is_manager and swarm.leftovers(STACK):
        swarm.remove(STACK)
    work = tmp_path_factory.mktemp("swarm-mlflow")
    private, public = generate_keys(work / "keys")
    env = {
        **os.environ,
        "PROPENSITY_API_IMAGE": api_image(),
        "PROPENSITY_MLFLOW_IMAGE": mlflow_image,
        "PROPENSITY_VERIFY_KEY_FILE": str(public),
    }
    made_gwbridge = not network_exists("docker_gwbridge")
    initialised = swarm.require_manager(init=not state.is_manager and state.node_state == "inactive")
    try:
        swarm.deploy(STACK_FILE, STACK, env=env, resolve_image="never")
        if not wait_until(mlflow_healthy, 180, 0.5):
            pytest.fail(f"mlflow never answered\n{report()}")
        settings = Settings(
            artifacts_dir=work / "cache", mlflow_tracking_uri=MLFLOW_URL, signing_key_file=private
        )
        registry = open_registry(settings)
        assert import_notebook(registry) == "v1"  # production
        assert import_notebook(registry, promote_if_empty=False) == "v2"
        model = CompiledModel.from_artifact(registry.load_serving("v1"))
        cases = make_cases(secrets.token_hex(8), model, n_single=100, n_batch=30)
        scale(API, 2)
        try:
            swarm.wait_converged(STACK, timeout=180, log=log)
        except swarm.SwarmError as exc:
            pytest.fail(f"{exc}\n{report()}")
        assert wait_until(lambda: ready_versions() == ["v1", "v1"], 60), ready_versions()
        yield MlflowStack(registry, cases, initialised, made_gwbridge)
    finally:
        swarm.remove(STACK, timeout=180)
        swarm.docker("volume", "rm", f"{STACK}_mlflow-data", check=False)
        if initialised:
            leave_swarm_made_here(made_gwbridge, log)


def assert_no_failures(result: LoadResult, versions: set[str]) -> None:
    assert result.sent > 0
    assert result.failed == 0, (result.statuses, result.errors, result.invalid)
    assert set(result.header_values) <= versions, result.header_values
    log(f"{result.sent} requests, 0 failed, versions {dict(result.header_values)}")


def no_v1_in_next(background: BackgroundLoad, requests: int) -> bool:
    v1, sent = background.result.header_values["v1"], background.result.sent
    assert wait_until(lambda: background.result.sent >= sent + requests, 30)
    return background.result.header_values["v1"] == v1


def test_the_tasks_serve_the_signed_production_version_from_mlflow(stack: MlflowStack) -> None:
    with BackgroundLoad(stack.cases, {"v1"}, urls=SLOT_URLS, max_seconds=60) as background:
        assert wait_until(lambda: background.result.sent >= 400, 60)
    result = background.stop()
    assert_no_failures(result, {"v1"})


def test_a_promotion_in_mlflow_is_followed_with_no_failed_request(stack: MlflowStack) -> None:
    with BackgroundLoad(stack.cases, {"v1", "v2"}, urls=SLOT_URLS, max_seconds=120) as background:
        assert wait_until(lambda: background.result.sent >= 200, 30)
        promote(stack.registry, "v2", reason="swarm suite: the second import", by="swarm-e2e")
        assert wait_until(lambda: ready_versions() == ["v2", "v2"], 60), ready_versions()
        # /health/ready is one worker's answer per task: the others follow within their own poll. Settled
        # when a run on each task in a row got no v1 (the next test expects v2 from every worker).
        assert wait_until(lambda: no_v1_in_next(background, 2 * background.RUN_REQUESTS), 60), (
            background.result.header_values
        )
    result = background.stop()
    assert_no_failures(result, {"v1", "v2"})
    assert result.header_values["v2"] > 0


def test_mlflow_down_serving_goes_on_and_readiness_stays_green(stack: MlflowStack) -> None:
    with BackgroundLoad(stack.cases, {"v2"}, urls=SLOT_URLS, max_seconds=150) as background:
        scale(MLFLOW, 0)
        assert wait_until(lambda: not mlflow_healthy(), 60), "mlflow still answers"
        down_since = time.monotonic()
        while time.monotonic() - down_since < 8 * RELOAD_SECONDS:  # several failed alias checks
            assert ready_versions() == ["v2", "v2"]
            time.sleep(0.5)
    result = background.stop()
    assert_no_failures(result, {"v2"})


def test_mlflow_back_the_next_promotion_is_followed(stack: MlflowStack) -> None:
    scale(MLFLOW, 1)
    assert wait_until(mlflow_healthy, 120, 0.5), report()
    with BackgroundLoad(stack.cases, {"v1", "v2"}, urls=SLOT_URLS, max_seconds=120) as background:
        promote(stack.registry, "v1", reason="swarm suite: back to the first", by="swarm-e2e")
        assert wait_until(lambda: ready_versions() == ["v1", "v1"], 60), ready_versions()
        sent = background.result.sent
        assert wait_until(lambda: background.result.sent >= sent + 200, 30)
    result = background.stop()
    assert_no_failures(result, {"v1", "v2"})
    story = [(e["event"], e["alias"], e["version"]) for e in stack.registry.history()]
    assert story == [("promote", "production", "v1"), ("promote", "production", "v2"),
                     ("promote", "production", "v1")]  # fmt: skip
