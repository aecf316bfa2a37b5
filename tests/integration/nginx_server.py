"""Start and stop a real nginx for tests: the config `tools.cluster_config.nginx_conf` renders (checked
with `nginx -t`), on 127.0.0.1, in its own session, stopped by PID however the block ends.

    with start_nginx(config) as nginx:     # config: a ClusterConfig whose replicas the test started
        nginx.url, nginx.access_log()
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import stop_process, tail
from tools.cluster import check_nginx_conf, find_program
from tools.cluster_config import ClusterConfig, nginx_conf


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    config: ClusterConfig

    @property
    def url(self) -> str:
        return self.config.nginx_url

    @property
    def log(self) -> Path:
        return self.config.logs_dir / "nginx-error.log"

    def access_log(self) -> list[dict[str, Any]]:
        """Every line of the JSON access log so far (nginx flushes its buffer at least every second)."""
        path = self.config.logs_dir / "nginx-access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def start_nginx(config: ClusterConfig, *, timeout: float = 20.0) -> Iterator[Nginx]:
    run = config.run_dir
    conf = run / "nginx.conf"
    run.mkdir(parents=True, exist_ok=True)
    conf.write_text(nginx_conf(config))
    check_nginx_conf(conf, run)  # also makes logs/ and nginx/ (the temp paths' parent)
    argv = [find_program("nginx"), "-c", str(conf), "-p", f"{run}/", "-e", str(run / "logs/nginx-error.log")]
    with (run / "logs" / "nginx.log").open("wb") as out:
        process = subprocess.Popen(
            [*argv, "-g", "daemon off;"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    nginx = Nginx(process, config)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(nginx):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start:\n{tail(nginx.log)}")
            time.sleep(0.05)
        yield nginx
    finally:
        stop_process(process, timeout=10)


def _answers(nginx: Nginx) -> bool:
    try:
        return httpx.get(nginx.url + "/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
