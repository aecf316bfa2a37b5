"""gunicorn configuration (`-c python:service.api.gunicorn_conf`; deploy/gunicorn.conf.py re-exports it).

Workers and port come from the one Settings class. Prometheus multiprocess mode: a fresh metrics
directory per server, and child_exit marks a dead worker's live gauges gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from service.settings import Settings

_settings = Settings()

bind = [f"{_settings.host}:{_settings.listen_port}"]
# SO_REUSEPORT (off unless PROPENSITY_REUSE_PORT): on a shared host network a Swarm start-first update
# starts the new task on its slot's port while the old one still drains. gunicorn then gives every worker
# its own listening socket, bound as it forks, and the kernel spreads new connections over all of them.
reuse_port = _settings.reuse_port
# PROPENSITY_PRELOAD: the app (numpy, pandas, ...) is imported in the master before the workers fork, so a
# worker's socket (reuse_port: bound at fork) waits only for its model, not for its imports too.
preload_app = _settings.preload
workers = _settings.workers
worker_class = "service.api.worker.Worker"  # uvicorn, one write per response (see worker.py)
keepalive = 75  # longer than nginx's upstream keepalive_timeout, so nginx closes idle connections first
graceful_timeout = 30
timeout = 60
backlog = 4096  # the kernel caps it at net.core.somaxconn (4096 here): room for nginx's bursts
accesslog = None
loglevel = _settings.log_level
proc_name = f"propensity:{_settings.listen_port}"
control_socket_disable = True  # several servers share a host; each would fight over one default socket path

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix=f"propensity-metrics-{_settings.listen_port}-"
    )
if preload_app:  # the master builds the app (and its metrics) before on_starting runs
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def on_starting(server: Any) -> None:
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if os.path.isdir(path):  # stale files from an earlier run would double-count
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
    os.makedirs(path, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if path.startswith(tempfile.gettempdir() + "/propensity-metrics-"):
        shutil.rmtree(path, ignore_errors=True)
