"""The autoscaler's docker socket proxy (deploy/swarm/docker-proxy.conf) as a real nginx in front of a fake
Docker Engine on a unix socket: the docker SDK's own calls for scaling <stack>_api pass (the real
DockerScaler reads and scales the service through it), everything else is a 403 that never reaches the
Engine. Everything listens on 127.0.0.1 or on a socket in the test's temp dir."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from service.autoscaler.scaler import DockerScaler, Replicas
from tests.conftest import free_port
from tests.servers import wait_until
from tools import procs
from tools.swarm import docker_proxy_conf

STACK = "propensity-e2e"
API = f"{STACK}_api"
API_VERSION = "1.45"
TASK_TEMPLATE = {
    "ContainerSpec": {"Image": "propensity-api:1", "Env": ["PROPENSITY_WORKERS=2"]},
    "Networks": [{"Target": "hostnet"}],
    "ForceUpdate": 0,
}
TASKS_QUERY = (  # {"service": ["<api>"], "desired-state": ["running"]}, as the docker SDK encodes it
    f"filters=%7B%22service%22%3A+%5B%22{API}%22%5D%2C+%22desired-state%22%3A+%5B%22running%22%5D%7D"
)


@dataclass
class FakeEngine:
    """The one service it has, and every request that reached it."""

    replicas: int = 2
    version: int = 7
    requests: list[tuple[str, str]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        self.requests.append((method, path))
        route = path.split("?", 1)[0].removeprefix(f"/v{API_VERSION}")
        if route == "/_ping":
            return 200, "OK"
        if route == "/version":
            return 200, {"ApiVersion": API_VERSION, "MinAPIVersion": "1.24", "Version": "fake"}
        if (method, route) == ("GET", f"/services/{API}"):
            spec = {
                "Name": API,
                "Labels": {"com.docker.stack.namespace": STACK},
                "Mode": {"Replicated": {"Replicas": self.replicas}},
                "TaskTemplate": TASK_TEMPLATE,
                "UpdateConfig": {"Parallelism": 1, "Order": "start-first"},
            }
            return 200, {"ID": "f" * 25, "Version": {"Index": self.version}, "Spec": spec}
        if (method, route) == ("GET", "/tasks"):
            return 200, [{"Status": {"State": "running"}} for _ in range(self.replicas)]
        if (method, route) == ("POST", f"/services/{API}/update"):
            spec = json.loads(body)
            self.updates.append(spec)
            # the SDK writes "replicated": the Engine's JSON decoding ignores the case of field names
            self.replicas = {k.lower(): v for k, v in spec["Mode"].items()}["replicated"]["Replicas"]
            self.version += 1
            return 200, {"Warnings": None}
        return 200, {"message": "the fake engine answers whatever the proxy lets through"}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(engine: FakeEngine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, answer = engine.answer(self.command, self.path, body)
            data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(answer, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = do_HEAD = _serve

        def address_string(self) -> str:  # a unix socket's peer has no (host, port)
            return "unix"

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass
class Proxy:
    port: int
    engine: FakeEngine
    access_log: Path

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    nginx = shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if nginx is None:
        pytest.skip("nginx not installed")
    work = tmp_path_factory.mktemp("docker-proxy")
    engine = FakeEngine()
    socket_path = work / "docker.sock"
    server = _Server(str(socket_path), _handler(engine))
    threading.Thread(target=server.serve_forever, name="fake-engine", daemon=True).start()
    port = free_port()
    conf = work / "docker-proxy.conf"
    conf.write_text(docker_proxy_conf(STACK, f"127.0.0.1:{port}", docker_socket=str(socket_path)))
    log = work / "nginx.log"
    argv = [nginx, "-c", str(conf), "-p", f"{work}/", "-e", "stderr", "-g", "daemon off;"]
    record = procs.spawn("docker-proxy", argv, env=os.environ, log=log, cwd=work)
    try:
        proxy = Proxy(port, engine, log)

        def answers() -> bool:
            try:
                return proxy.request("GET", "/_ping") == (200, b"OK")
            except OSError:
                return False

        assert wait_until(answers, 20.0), procs.tail(log)
        yield proxy
    finally:
        procs.stop(record, timeout=10)
        server.shutdown()
        server.server_close()


def test_the_docker_sdk_reads_and_scales_the_service_through_the_proxy(proxy: Proxy) -> None:
    proxy.engine.requests.clear()
    scaler = DockerScaler(API, base_url=f"tcp://127.0.0.1:{proxy.port}", timeout=5)
    assert scaler.replicas() == Replicas(2, 2)
    scaler.scale(4)
    assert scaler.replicas() == Replicas(4, 4)
    (update,) = proxy.engine.updates
    # the stored spec sent back with only the replica count changed, as `docker service scale` does
    assert update == {
        "Name": API,
        "Labels": {"com.docker.stack.namespace": STACK},
        "Mode": {"replicated": {"Replicas": 4}},
        "TaskTemplate": TASK_TEMPLATE,
        "UpdateConfig": {"Parallelism": 1, "Order": "start-first"},
    }
    # exactly the calls the proxy passes: nothing the SDK needed was refused (a 403 raises above)
    v = f"/v{API_VERSION}"
    assert proxy.engine.requests == [
        ("GET", "/version"),
        ("GET", f"{v}/services/{API}"),
        ("GET", f"{v}/tasks?{TASKS_QUERY}"),
        ("GET", f"{v}/services/{API}"),
        ("POST", f"{v}/services/{API}/update?version=7"),
        ("GET", f"{v}/services/{API}"),
        ("GET", f"{v}/tasks?{TASKS_QUERY}"),
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_ping"),
        ("HEAD", "/_ping"),
        ("GET", "/version"),
        ("GET", "/v1.51/version"),
        ("GET", f"/v1.51/services/{API}"),
        ("GET", f"/v1.51/tasks?{TASKS_QUERY}"),
        ("POST", f"/v1.51/services/{API}/update?version=12"),
    ],
)
def test_allowed_calls_reach_the_engine(proxy: Proxy, method: str, path: str) -> None:
    proxy.engine.requests.clear()
    spec = b'{"Name": "x", "Mode": {"replicated": {"Replicas": 2}}}'
    status, _ = proxy.request(method, path, spec if method == "POST" else None)
    assert status == 200 and proxy.engine.requests == [(method, path)]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1.45/containers/json"),
        ("POST", "/v1.45/containers/create"),
        ("POST", "/v1.45/services/create"),
        ("GET", "/v1.45/services"),
        ("DELETE", f"/v1.45/services/{API}"),
        ("GET", f"/v1.45/services/{API}/logs?stdout=1"),
        ("GET", "/v1.45/services/propensity_api"),  # another stack's api
        ("POST", "/v1.45/services/propensity-e2e_nginx/update?version=3"),  # another service of this stack
        ("GET", f"/v1.45/services/{API}x"),
        ("GET", f"/v1.45/services/{API}?insertDefaults=True"),
        ("POST", f"/v1.45/services/{API}/update?version=3&registryAuthFrom=spec"),
        ("PUT", f"/v1.45/services/{API}/update?version=3"),
        ("GET", "/v1.45/tasks"),  # every service's tasks
        ("GET", f"/v1.45/tasks?{TASKS_QUERY.replace(API, 'propensity-e2e_redis')}"),
        ("GET", "/v1.45/secrets"),
        ("GET", "/v1.45/swarm"),
        ("GET", "/v1.45/info"),
        ("POST", "/v1.45/images/create?fromImage=alpine"),
        ("GET", f"/v1.45/services/{API}/../../containers/json"),
        ("GET", f"/v1.45/services/{API}/%2e%2e/%2e%2e/containers/json"),
        ("GET", f"/v1.45/services/{API.replace('_', '%5F')}"),
        ("GET", f"/v1.45//services/{API}"),
        ("POST", "/_ping"),
    ],
)
def test_everything_else_is_refused_before_the_engine(proxy: Proxy, method: str, path: str) -> None:
    proxy.engine.requests.clear()
    status, body = proxy.request(method, path, b"{}" if method in ("POST", "PUT") else None)
    assert status == 403 and "refused by the docker socket proxy" in json.loads(body)["message"]
    assert proxy.engine.requests == []
