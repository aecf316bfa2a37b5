"""/docs and /redoc in a real headless browser (Debian's chromium) with no network: they render the
endpoints from the app's own assets, and the page asks no other host for anything."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.model.registry import Registry
from tests.servers import Server, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Nothing leaves the machine: every name but 127.0.0.1 resolves to nothing, and any proxied request goes
# to a closed local port. The browser's own background requests (updates, sign-in) fail the same way;
# the page's requests are told apart by their initiator.
NO_NETWORK = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
]
QUIET = [
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
]


@pytest.fixture(scope="module")
def server(approved_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing: make system-deps installs it")
    root = tmp_path_factory.mktemp("docs-browser")
    shutil.copytree(approved_registry.root, root / "artifacts")
    with start_server(root / "artifacts", root, workers=1) as srv:
        yield srv


def render(url: str, out: Path) -> tuple[str, list[dict[str, str]]]:
    """The DOM of `url` after its scripts ran, and the requests the page made; a screenshot in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    net_log = out / "net-log.json"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # as root, in a container
            "--disable-gpu",
            f"--user-data-dir={out / 'profile'}",
            *QUIET,
            *NO_NETWORK,
            f"--log-net-log={net_log}",
            "--window-size=1280,1600",
            "--virtual-time-budget=20000",  # virtual time: the page's scripts run until idle
            f"--screenshot={out / 'page.png'}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, page_requests(net_log, url)


def page_requests(net_log: Path, url: str) -> list[dict[str, str]]:
    """Every request the page made (the navigation and what its origin initiated), from chromium's net
    log."""
    origin = re.match(r"https?://[^/]+", url)
    assert origin is not None
    log = json.loads(net_log.read_text())
    kinds = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    out = []
    for event in log["events"]:
        params = event.get("params") or {}
        if kinds.get(event["type"]) != "URL_REQUEST_START_JOB" or "url" not in params:
            continue
        if params.get("initiator") == origin.group(0) or params["url"] == url:
            out.append({"url": params["url"], "initiator": params.get("initiator", "")})
    return out


def operation_paths(dom: str) -> list[str]:
    return re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom)


def test_swagger_ui_renders_the_endpoints_offline(server: Server, tmp_path: Path) -> None:
    dom, requests = render(server.url + "/docs", tmp_path / "docs")
    print(f"screenshot of /docs: {tmp_path / 'docs' / 'page.png'}")
    assert operation_paths(dom) == [  # by tag: /predict's, the Open Inference Protocol's, MLflow's, labels
        *("/predict", "/health/live", "/health/ready", "/model"),
        *("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer", "/v2"),
        *("/v2/health/live", "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/versions/{version}"),
        *("/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready"),
        *("/invocations", "/ping", "/health", "/version"),
        *("/feedback", "/performance", "/performance/shadow"),
    ]
    assert "Score 1 to 10,000 rows" in dom
    assert {r["url"] for r in requests} == {
        server.url + p
        for p in (
            "/docs",
            "/openapi.json",
            "/docs/assets/swagger-ui-bundle.js",
            "/docs/assets/swagger-ui.css",
            "/docs/assets/favicon.png",
        )
    }
    assert (tmp_path / "docs" / "page.png").stat().st_size > 10_000


def test_redoc_renders_the_endpoints_offline(server: Server, tmp_path: Path) -> None:
    dom, requests = render(server.url + "/redoc", tmp_path / "redoc")
    print(f"screenshot of /redoc: {tmp_path / 'redoc' / 'page.png'}")
    for path in ("/predict", "/model", "/health/ready"):
        assert path in dom
    assert "Score 1 to 10,000 rows" in dom and "Response samples" in dom
    assert all(r["url"].startswith(server.url + "/") for r in requests), requests
    assert server.url + "/openapi.json" in {r["url"] for r in requests}
