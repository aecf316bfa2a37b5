"""The local cluster on one machine: N replicas behind nginx, redis-server, prometheus (`make up`/`down`).

    make up REPLICAS=3                     # python -m tools.cluster up --replicas 3; refuses politely if
                                           # a port is taken or it already runs
    make status                            # python -m tools.cluster status
    make down                              # python -m tools.cluster down: stops exactly what `up` started

Each replica is `propensity serve --port P --workers W`: its own gunicorn process tree on its own
loopback port, with its own PROMETHEUS_MULTIPROC_DIR. Everything the cluster writes lives in the run dir
(default run/cluster): cluster.json (the config), nginx.conf and prometheus.yml (generated), pids/,
logs/, metrics/<replica>/, redis/, prometheus/ (its TSDB) and nginx/ (temp files).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from service.errors import PropensityError
from tools import procs
from tools.cluster_config import (
    HOST,
    ClusterConfig,
    nginx_conf,
    ports_in_use,
    prometheus_yml,
    redis_conf,
    write_private,
    write_secrets,
)
from tools.procs import ProcessRecord

STATE_FILE = "cluster.json"
# What `up` sets for each replica itself: the caller's environment does not override these.
REPLICA_OWN_ENV = frozenset(
    {
        "PROPENSITY_REDIS_URL",
        "PROPENSITY_REDIS_PASSWORD_FILE",
        "PROPENSITY_CACHE_SECRET",
        "PROPENSITY_CACHE_SECRET_FILE",
        "PROPENSITY_PORT",
        "PROPENSITY_WORKERS",
        "PROPENSITY_HOST",
    }
)
_MAIN = "from service.cli import main; main()"
APT_PACKAGES = {"nginx": "nginx-light", "redis-server": "redis-server", "prometheus": "prometheus"}


class ClusterError(PropensityError):
    status = 500
    kind = "cluster"
    title = "Local cluster error"


def find_program(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if path is None:
        raise ClusterError(f"{name} not found: install it with `apt-get install {APT_PACKAGES[name]}`")
    return path


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metric_value(text: str, name: str) -> float | None:
    """The value of an unlabelled sample `name` in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Cluster:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.records: dict[str, ProcessRecord] = {}
        self._load_records()

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> Cluster:
        path = Path(run_dir) / STATE_FILE
        if not path.is_file():
            raise ClusterError(f"no cluster in {run_dir} ({STATE_FILE} not found): nothing was started there")
        return cls(ClusterConfig.from_json(json.loads(path.read_text())))

    def _load_records(self) -> None:
        pids = self.config.pids_dir
        if pids.is_dir():
            for path in sorted(pids.glob("*.pid")):
                record = ProcessRecord.load(path)
                self.records[record.name] = record

    # --- what runs ---------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Start order; `down` goes in reverse."""
        return [
            *(["redis"] if self.config.redis else []),
            *self.config.replica_names(),
            "nginx",
            "prometheus",
        ]

    def running(self) -> dict[str, bool]:
        return {name: name in self.records and procs.is_running(self.records[name]) for name in self.names()}

    def status(self) -> list[dict[str, Any]]:
        ports = self.config.ports()
        out = []
        for name in self.names():
            record = self.records.get(name)
            alive = record is not None and procs.is_running(record)
            out.append(
                {
                    "name": name,
                    "pid": record.pid if record else None,
                    "port": ports[name],
                    "state": "running" if alive else "stopped",
                    "log": record.log if record else None,
                }
            )
        return out

    # --- up / down ---------------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> None:
        """Start everything and wait until it all answers; on any failure stop what was started."""
        alive = [name for name, up in self.running().items() if up]
        if alive:
            raise ClusterError(
                f"a cluster is already running from {self.config.run_dir} ({', '.join(alive)}): "
                "`make down` (python -m tools.cluster down) first"
            )
        taken = ports_in_use(self.config.ports())
        if taken:
            listed = ", ".join(f"{port} ({name})" for name, port in taken.items())
            raise ClusterError(
                f"port(s) already in use: {listed}. Stop whatever listens there, or choose other ports "
                "(--nginx-port, --replica-port, --redis-port, --prometheus-port)."
            )
        programs = ["nginx", "prometheus", *(["redis-server"] if self.config.redis else [])]
        for program in programs:
            find_program(program)
        self.prepare()
        self._import_model()
        deadline = time.monotonic() + timeout
        try:
            if self.config.redis:
                self.start("redis", deadline - time.monotonic())
            for name in self.config.replica_names():
                self._spawn(name)
            for name in self.config.replica_names():
                self._wait(name, deadline - time.monotonic())
            self.start("nginx", deadline - time.monotonic())
            self.start("prometheus", deadline - time.monotonic())
            self.wait_scraped(deadline - time.monotonic())
        except BaseException:
            self.down()
            raise

    def down(self, timeout: float = 30.0) -> list[str]:
        """Stop every process of this cluster that is still running, in reverse start order."""
        stopped = []
        for name in reversed(self.names()):
            record = self.records.get(name)
            if record is None:
                continue
            if procs.stop(record, timeout=timeout):
                stopped.append(name)
            (self.config.pids_dir / f"{name}.pid").unlink(missing_ok=True)
            del self.records[name]
        return stopped

    # --- one process -------------------------------------------------------------------------------------
    def start(self, name: str, timeout: float = 60.0) -> ProcessRecord:
        record = self._spawn(name)
        self._wait(name, timeout)
        return record

    def stop(self, name: str, timeout: float = 30.0) -> None:
        record = self.records.pop(name, None)
        if record is not None:
            procs.stop(record, timeout=timeout)
            (self.config.pids_dir / f"{name}.pid").unlink(missing_ok=True)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal a process's whole group at once (SIGKILL: a replica dies with every worker)."""
        record = self.records[name]
        procs.signal_group(record, sig)
        if sig == signal.SIGKILL:
            procs.wait_gone(record, 10.0)

    def _spawn(self, name: str) -> ProcessRecord:
        if name in self.records and procs.is_running(self.records[name]):
            raise ClusterError(f"{name} is already running (pid {self.records[name].pid})")
        argv, env = self._command(name)
        log = self.config.logs_dir / f"{name}.log"
        record = procs.spawn(name, argv, env=env, log=log, cwd=self.config.run_dir)
        record.save(self.config.pids_dir)
        self.records[name] = record
        return record

    def _command(self, name: str) -> tuple[list[str], dict[str, str]]:
        c = self.config
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        run = c.run_dir
        if name == "redis":  # everything in redis.conf, the password included (not on the command line)
            return [find_program("redis-server"), str(c.redis_conf_file)], env
        if name == "nginx":
            conf, error_log = run / "nginx.conf", c.logs_dir / "nginx-error.log"
            argv = [find_program("nginx"), "-c", str(conf), "-p", f"{run}/", "-e", str(error_log)]
            return [*argv, "-g", "daemon off;"], env
        if name == "prometheus":
            argv = [
                find_program("prometheus"),
                f"--config.file={run / 'prometheus.yml'}",
                f"--storage.tsdb.path={run / 'prometheus'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address={HOST}:{c.prometheus_port}",
                "--log.level=warn",
            ]
            return argv, env
        port = c.ports()[name]
        for key in [k for k in env if k.startswith("PROPENSITY_")]:
            if key in REPLICA_OWN_ENV:
                del env[key]
        env.update(
            {
                "PROPENSITY_ARTIFACTS_DIR": str(c.artifacts_dir),
                "PROPENSITY_HOST": HOST,
                "PROMETHEUS_MULTIPROC_DIR": str(c.metrics_dir(name)),
                **(
                    {
                        "PROPENSITY_REDIS_URL": c.redis_url,
                        "PROPENSITY_REDIS_PASSWORD_FILE": str(c.redis_password_file),
                        "PROPENSITY_CACHE_SECRET_FILE": str(c.cache_secret_file),
                    }
                    if c.redis_url
                    else {}
                ),
                **c.env,
            }
        )
        propensity = Path(sys.executable).with_name("propensity")
        cli = [str(propensity)] if propensity.exists() else [sys.executable, "-c", _MAIN]
        return [*cli, "serve", "--port", str(port), "--workers", str(c.workers)], env

    # --- readiness ---------------------------------------------------------------------------------------
    def _wait(self, name: str, timeout: float) -> None:
        check: Callable[[], bool]
        if name == "redis":
            check = self._redis_ready
        elif name == "nginx":
            check = self._nginx_ready
        elif name == "prometheus":
            check = self._prometheus_ready
        else:
            port = self.config.ports()[name]
            check = lambda: self.replica_ready(port)  # noqa: E731
        record = self.records[name]
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            if not procs.is_running(record):
                raise ClusterError(f"{name} exited while starting; its log says:\n{procs.tail(record.log)}")
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise ClusterError(
            f"{name} was not ready within {timeout:.0f}s; its log says:\n{procs.tail(record.log)}"
        )

    def _redis_ready(self) -> bool:
        """Redis answers, and accepts the generated password."""
        password = self.config.redis_password().encode()
        auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password)
        with socket.create_connection((HOST, self.config.redis_port), timeout=1.0) as s:
            s.sendall(auth + b"PING\r\n")
            replies = b""
            while replies.count(b"\r\n") < 2:
                chunk = s.recv(64)
                if not chunk:
                    return False
                replies += chunk
            return replies == b"+OK\r\n+PONG\r\n"

    def replica_ready(self, port: int) -> bool:
        """Every worker is up and has passed its model self-check (not just the first one to answer)."""
        status, body = http_get(port, "/metrics")
        if status != 200:
            return False
        text = body.decode()
        return (
            metric_value(text, "propensity_workers") == self.config.workers
            and metric_value(text, "propensity_model_ready") == 1.0
        )

    def _nginx_ready(self) -> bool:
        return http_get(self.config.nginx_port, "/health")[0] == 200

    def _prometheus_ready(self) -> bool:
        return http_get(self.config.prometheus_port, "/-/ready")[0] == 200

    def wait_scraped(self, timeout: float) -> None:
        """Until Prometheus has scraped every replica successfully at least once."""
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            if len(self.prometheus_targets_up()) == self.config.replicas:
                return
            time.sleep(0.25)
        raise ClusterError(f"prometheus did not scrape every replica within {timeout:.0f}s")

    def prometheus_targets_up(self) -> list[str]:
        status, body = http_get(self.config.prometheus_port, "/api/v1/targets?state=active")
        if status != 200:
            return []
        targets = json.loads(body)["data"]["activeTargets"]
        return [t["labels"].get("replica", "") for t in targets if t["health"] == "up"]

    def prometheus_query(self, query: str) -> list[dict[str, Any]]:
        """An instant query through Prometheus's HTTP API -> its result vector."""
        from urllib.parse import urlencode

        status, body = http_get(self.config.prometheus_port, "/api/v1/query?" + urlencode({"query": query}))
        data = json.loads(body)
        if status != 200 or data.get("status") != "success":
            raise ClusterError(f"prometheus query {query!r} failed: {body[:300]!r}")
        result: list[dict[str, Any]] = data["data"]["result"]
        return result

    # --- files -------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the run dir and write cluster.json, nginx.conf (checked with nginx -t), prometheus.yml."""
        c = self.config
        for path in [
            c.logs_dir,
            c.pids_dir,
            c.run_dir / "redis",
            c.run_dir / "prometheus",
            c.run_dir / "nginx",
        ]:
            path.mkdir(parents=True, exist_ok=True)
        for name in c.replica_names():
            c.metrics_dir(name).mkdir(parents=True, exist_ok=True)
        (c.run_dir / STATE_FILE).write_text(json.dumps(c.to_json(), indent=1) + "\n")
        (c.run_dir / "nginx.conf").write_text(nginx_conf(c))
        (c.run_dir / "prometheus.yml").write_text(prometheus_yml(c))
        if c.redis:
            write_secrets(c)
            write_private(c.redis_conf_file, redis_conf(c))
        check_nginx_conf(c.run_dir / "nginx.conf", c.run_dir)

    def _import_model(self) -> None:
        """Import the approved model once, before N replicas would race to do it on an empty registry."""
        from service.model.notebook_import import ensure_production
        from service.model.registry import Registry
        from service.settings import Settings

        settings = Settings(artifacts_dir=self.config.artifacts_dir)
        if settings.model_version is None:
            ensure_production(Registry(self.config.artifacts_dir, settings.model_name))


def check_nginx_conf(conf: Path, prefix: Path) -> str:
    """`nginx -t` on a generated config; raises with nginx's own message when it is invalid."""
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "nginx").mkdir(parents=True, exist_ok=True)
    argv = [find_program("nginx"), "-t", "-q", "-c", str(conf), "-p", f"{prefix}/"]
    done = subprocess.run(
        [*argv, "-e", str(prefix / "logs" / "nginx-error.log")], capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise ClusterError(f"nginx -t rejected {conf}:\n{done.stderr.strip()}")
    return done.stderr


# --- CLI: `python -m tools.cluster ...` (make up / status / down) -------------------------------------------
cli = typer.Typer(
    help="The local cluster: N replicas behind nginx, redis-server and prometheus, on 127.0.0.1.",
    no_args_is_help=True,
)
RunDir = Annotated[Path, typer.Option(help="where PID files, logs and generated configs go")]


@cli.command("up")
def cli_up(
    run_dir: RunDir = Path("run/cluster"),
    replicas: Annotated[int, typer.Option(min=1, max=64, help="number of replicas")] = 2,
    workers: Annotated[int, typer.Option(min=1, help="gunicorn workers per replica")] = 2,
    nginx_port: Annotated[int, typer.Option(help="the public port (nginx)")] = 1313,
    replica_port: Annotated[int, typer.Option(help="first replica's port; the others follow")] = 8001,
    redis_port: Annotated[int, typer.Option(help="redis-server's port")] = 6390,
    prometheus_port: Annotated[int, typer.Option(help="prometheus's port")] = 9091,
    redis: Annotated[
        bool, typer.Option("--redis/--no-redis", help="shared Redis cache or per-worker LRU")
    ] = True,
    rate_limit: Annotated[
        float | None, typer.Option(help="nginx limit on /predict, req/s per client; 0 = off")
    ] = None,
) -> None:
    """Start the cluster and wait until every part answers."""
    config = ClusterConfig.from_settings(
        run_dir,
        replicas=replicas,
        workers=workers,
        nginx_port=nginx_port,
        replica_port=replica_port,
        redis_port=redis_port,
        prometheus_port=prometheus_port,
        redis=redis,
        rate_limit_per_second=rate_limit,
    )
    cluster = Cluster(config)
    started = time.monotonic()
    try:
        cluster.up()
    except PropensityError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"cluster up in {time.monotonic() - started:.1f}s ({config.run_dir})")
    _print_status(cluster)
    typer.echo(f"try: curl -s {config.nginx_url}/health/ready; stop with `make down`")


@cli.command("down")
def cli_down(run_dir: RunDir = Path("run/cluster")) -> None:
    """Stop exactly what `up` started (by its PID files)."""
    try:
        cluster = Cluster.from_run_dir(run_dir)
    except PropensityError as exc:
        typer.echo(exc.detail)
        return
    stopped = cluster.down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cli.command("status")
def cli_status(run_dir: RunDir = Path("run/cluster")) -> None:
    """What runs where."""
    try:
        cluster = Cluster.from_run_dir(run_dir)
    except PropensityError as exc:
        typer.echo(exc.detail)
        raise typer.Exit(1) from None
    _print_status(cluster)
    if not all(cluster.running().values()):
        raise typer.Exit(3)


def _print_status(cluster: Cluster) -> None:
    typer.echo(f"{'process':<12} {'pid':>8} {'address':<22} {'state':<8} log")
    for row in cluster.status():
        pid = str(row["pid"] or "-")
        address = f"{HOST}:{row['port']}"
        typer.echo(f"{row['name']:<12} {pid:>8} {address:<22} {row['state']:<8} {row['log'] or '-'}")
    c = cluster.config
    typer.echo(f"public: {c.nginx_url}  prometheus: {c.prometheus_url}  redis: {c.redis_url or 'off (LRU)'}")


if __name__ == "__main__":
    cli()
