"""The local cluster on one machine: N replicas behind nginx, redis-server, prometheus and PostgreSQL (the
prediction log's database) (`make up`/`down`).

    make up REPLICAS=3                     # python -m tools.cluster up --replicas 3; refuses politely if
                                           # a port is taken or it already runs
    make status                            # python -m tools.cluster status
    make down                              # python -m tools.cluster down: stops exactly what `up` started

Every process is a program of one supervisord (tools/supervisor_config.py), which restarts a process that
dies and rotates the logs. Each replica is `propensity serve --port P --workers W`: its own gunicorn process
tree on its own loopback port, with its own PROMETHEUS_MULTIPROC_DIR. Everything the cluster writes lives in
the run dir (default run/cluster): cluster.json (the config), supervisord.conf, nginx.conf and
prometheus.yml (generated), supervisor.sock (supervisord's control socket), pids/supervisord.pid, logs/,
metrics/<replica>/, redis/, prometheus/ (its TSDB), nginx/ (temp files) and postgres/ (data/: the
database cluster, made by initdb on the first start and kept across `down`/`up`).

PostgreSQL (Debian's package, tools/postgres.py) listens on 127.0.0.1 only, trusts what reaches it there,
and has no unix socket; the replicas log to its database `propensity` as the role `propensity`
(PROPENSITY_PREDICTION_LOG_URL). It refuses to run as root: as root it runs as the `postgres` user, and
postgres/ is that user's (0700). That user must reach postgres/: when a dir above it is closed to it (a
0700 temp dir, /root), the program runs in a mount namespace of its own where postgres/ is bind-mounted on
/mnt (so it calls its data dir /mnt/data); that takes root's CAP_SYS_ADMIN, which an unprivileged
container lacks: there, choose a run dir the `postgres` user can reach.
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
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from service.errors import PropensityError
from tools import postgres, procs, supervisor_config
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
from tools.paths import REPO
from tools.procs import ProcessRecord
from tools.supervisor_config import SOCKET_NAME, Program

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
PREDICTION_LOG_URL = "PROPENSITY_PREDICTION_LOG_URL"  # set by `up` for the replicas when it runs PostgreSQL
NAMESPACE_MOUNT = "/mnt"  # where postgres/ is bind-mounted when the `postgres` user cannot reach it
_MAIN = "from service.cli import main; main()"
_ENV = shutil.which("env") or "/usr/bin/env"
SUPERVISORD_PID = "supervisord.pid"
# supervisord states of a program that did not come up (BACKOFF: it exited before startsecs; it retries)
_FAILED_TO_START = frozenset({"BACKOFF", "FATAL", "EXITED", "STOPPED", "UNKNOWN"})
APT_PACKAGES = {
    "nginx": "nginx-light",
    "redis-server": "redis-server",
    "prometheus": "prometheus",
    "unshare": "util-linux",
}


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
        self.supervisord: ProcessRecord | None = None
        path = self.config.pids_dir / SUPERVISORD_PID
        if path.is_file():
            self.supervisord = ProcessRecord.load(path)

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> Cluster:
        path = Path(run_dir) / STATE_FILE
        if not path.is_file():
            raise ClusterError(f"no cluster in {run_dir} ({STATE_FILE} not found): nothing was started there")
        return cls(ClusterConfig.from_json(json.loads(path.read_text())))

    # --- what runs ---------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Start order; supervisord stops them in reverse."""
        return [
            *(["postgres"] if self.config.postgres else []),
            *(["mlflow"] if self.config.mlflow else []),
            *(["redis"] if self.config.redis else []),
            *self.config.replica_names(),
            "nginx",
            "prometheus",
        ]

    def supervisor_running(self) -> bool:
        return self.supervisord is not None and procs.is_running(self.supervisord)

    def process_info(self) -> dict[str, dict[str, Any]]:
        """supervisord's view of every program (state, pid, logs); {} when supervisord is not running."""
        if not self.supervisor_running():
            return {}
        try:
            infos = self._rpc("getAllProcessInfo")
        except OSError:
            return {}
        return {info["name"]: info for info in infos if info["name"] in self.names()}

    @property
    def records(self) -> dict[str, ProcessRecord]:
        """The programs running now: pid and start time as supervisord started them, and their logs."""
        out = {}
        for name, info in self.process_info().items():
            if info["statename"] == "RUNNING" and info["pid"]:
                program = self.program(name)
                record = procs.record_of(name, info["pid"], program.argv, program.log)
                if record is not None:
                    out[name] = record
        return out

    def running(self) -> dict[str, bool]:
        info = self.process_info()
        return {name: info.get(name, {}).get("statename") == "RUNNING" for name in self.names()}

    def status(self) -> list[dict[str, Any]]:
        ports, info = self.config.ports(), self.process_info()
        supervisor = self.supervisord if self.supervisor_running() else None
        out: list[dict[str, Any]] = [
            {
                "name": "supervisord",
                "pid": supervisor.pid if supervisor else None,
                "address": str(self.config.run_dir / SOCKET_NAME),
                "state": "running" if supervisor else "stopped",
                "log": str(self.config.logs_dir / "supervisord.log"),
            }
        ]
        for name in self.names():
            state = info.get(name, {}).get("statename", "STOPPED")
            out.append(
                {
                    "name": name,
                    "pid": (info[name]["pid"] or None) if name in info else None,
                    "address": f"{HOST}:{ports[name]}",
                    "state": state.lower(),
                    "log": str(self.program(name).log),
                }
            )
        return out

    # --- up / down ---------------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> None:
        """Start everything and wait until it all answers; on any failure stop what was started."""
        if self.supervisor_running():
            raise ClusterError(
                f"a cluster is already running from {self.config.run_dir} (supervisord, pid "
                f"{self.supervisord.pid if self.supervisord else '?'}): `make down` "
                "(python -m tools.cluster down) first"
            )
        taken = ports_in_use(self.config.ports())
        if taken:
            listed = ", ".join(f"{port} ({name})" for name, port in taken.items())
            raise ClusterError(
                f"port(s) already in use: {listed}. Stop whatever listens there, or choose other ports "
                "(--nginx-port, --replica-port, --redis-port, --prometheus-port, --postgres-port, "
                "--mlflow-port)."
            )
        programs = ["nginx", "prometheus", *(["redis-server"] if self.config.redis else [])]
        for program in programs:
            find_program(program)
        self.prepare()
        if not self.config.mlflow:
            self._import_model()
        deadline = time.monotonic() + timeout
        try:
            if self.config.postgres:
                self.initdb()
            self.start_supervisord(deadline - time.monotonic())
            if self.config.postgres:
                self.start("postgres", deadline - time.monotonic())
            if self.config.mlflow:
                self.start("mlflow", deadline - time.monotonic())
                self._import_model()
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

    def down(self, timeout: float = 120.0) -> list[str]:
        """Stop supervisord, which stops every program first (each as a process group, SIGKILLed after its
        stop timeout); then SIGKILL anything of its session still alive. The names of what was running."""
        stopped = [name for name, up in self.running().items() if up]
        record = self.supervisord
        if record is not None:
            if procs.stop(record, timeout=timeout):
                stopped.append("supervisord")
            procs.kill_session(record)
            (self.config.pids_dir / SUPERVISORD_PID).unlink(missing_ok=True)
            self.supervisord = None
        for path in sorted(self.config.pids_dir.glob("*.pid")):  # a cluster started before supervisord
            legacy = ProcessRecord.load(path)
            if procs.stop(legacy, timeout=30):
                stopped.append(legacy.name)
            path.unlink(missing_ok=True)
        return stopped

    # --- supervisord and one program ---------------------------------------------------------------------
    def _rpc(self, method: str, *args: Any) -> Any:
        return supervisor_config.call(self.config.run_dir / SOCKET_NAME, method, *args)

    def start_supervisord(self, timeout: float = 30.0) -> ProcessRecord:
        """Start supervisord (no program yet but the orphan reaper) unless it runs; wait until it answers."""
        if self.supervisord is not None and procs.is_running(self.supervisord):
            return self.supervisord
        conf = self.config.run_dir / supervisor_config.CONF_NAME
        if not conf.is_file():
            raise ClusterError(f"{conf} not found: prepare() writes it")
        (self.config.run_dir / SOCKET_NAME).unlink(missing_ok=True)  # left by a supervisord that was killed
        argv = [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)]
        log = self.config.logs_dir / "supervisord.out"  # what it prints before its own log is open
        record = procs.spawn("supervisord", argv, env=self._environment(), log=log, cwd=self.config.run_dir)
        record.save(self.config.pids_dir)  # pids/supervisord.pid
        self.supervisord = record
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            if not procs.is_running(record):
                raise ClusterError(f"supervisord exited while starting; it says:\n{procs.tail(log)}")
            try:
                if self._rpc("getState")["statename"] == "RUNNING":
                    return record
            except OSError:
                pass
            time.sleep(0.1)
        raise ClusterError(f"supervisord did not answer within {timeout:.0f}s:\n{procs.tail(log)}")

    def start(self, name: str, timeout: float = 60.0) -> ProcessRecord:
        self.start_supervisord(timeout)
        self._spawn(name)
        self._wait(name, timeout)
        return self.records[name]

    def stop(self, name: str) -> None:
        """Stop one program and wait (supervisord SIGTERMs its group, SIGKILLs it after its stop timeout)."""
        if not self.supervisor_running():
            return
        try:
            self._rpc("stopProcess", name, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise ClusterError(f"stopping {name}: {fault.faultString}") from None

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> ProcessRecord:
        """Signal a program's whole process group at once (SIGKILL: a replica dies with every worker).
        supervisord starts it again; the record returned is the process that was signalled."""
        record = self.records[name]
        procs.signal_group(record, sig)
        if sig == signal.SIGKILL:
            procs.wait_gone(record, 10.0)
        return record

    def _spawn(self, name: str) -> None:
        try:
            self._rpc("startProcess", name, False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" in fault.faultString:
                raise ClusterError(f"{name} is already running") from None
            raise ClusterError(
                f"{name} did not start ({fault.faultString}); its log says:\n"
                f"{procs.tail(self.program(name).log)}"
            ) from None

    def program(self, name: str) -> Program:
        c = self.config
        run, logs = c.run_dir, c.logs_dir
        if name == "postgres":  # fast shutdown on INT; stopped after the replicas, which write to it
            argv = self._postgres_argv(
                postgres.server_argv(self._postgres_bin(), self._postgres_data(), c.postgres_port)
            )
            return Program(name, argv, logs / "postgres.log", stop_seconds=30, stop_signal="INT", priority=50)
        if name == "mlflow":  # SQLite and a local artifact store in the run dir, served through the server
            argv = [
                str(_mlflow_program()), "server", "--workers", "1",
                "--host", HOST, "--port", str(c.mlflow_port),
                "--backend-store-uri", f"sqlite:///{c.mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination", str(c.mlflow_dir / "artifacts"),
            ]  # fmt: skip
            return Program(name, argv, logs / "mlflow.log", stop_seconds=30, priority=50)
        if name == "redis":  # everything in redis.conf, the password included (not on the command line)
            return Program(name, [find_program("redis-server"), str(c.redis_conf_file)], logs / "redis.log")
        if name == "nginx":  # in the foreground; its access log on stdout, its error log on stderr
            argv = [find_program("nginx"), "-c", str(run / "nginx.conf"), "-p", f"{run}/", "-e", "stderr"]
            return Program(
                name,
                [*argv, "-g", "daemon off;"],
                log=logs / "nginx-error.log",
                stdout_log=logs / "nginx-access.log",
                priority=300,  # stopped first: no request reaches a stopping replica
            )
        if name == "prometheus":
            argv = [
                find_program("prometheus"),
                f"--config.file={run / 'prometheus.yml'}",
                f"--storage.tsdb.path={run / 'prometheus'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address={HOST}:{c.prometheus_port}",
                "--log.level=warn",
            ]
            return Program(name, argv, logs / "prometheus.log", priority=300)
        port = c.ports()[name]
        propensity = Path(sys.executable).with_name("propensity")
        cli = [str(propensity)] if propensity.exists() else [sys.executable, "-c", _MAIN]
        # `env` sets the one variable that differs per replica, then execs: supervisord's pid is gunicorn's
        argv = [_ENV, f"PROMETHEUS_MULTIPROC_DIR={c.metrics_dir(name)}", *cli]
        argv += ["serve", "--port", str(port), "--workers", str(c.workers)]
        # > gunicorn's graceful_timeout (30 s): in-flight requests finish before supervisord kills the group
        return Program(name, argv, logs / f"{name}.log", stop_seconds=35, priority=200)

    # --- PostgreSQL ----------------------------------------------------------------------------------------
    @staticmethod
    def _postgres_bin() -> Path:
        try:
            return postgres.bin_dir()
        except postgres.PostgresError as exc:
            raise ClusterError(str(exc)) from None

    def _postgres_namespaced(self) -> bool:
        """As root, when the `postgres` user cannot reach postgres/: bind-mounted on /mnt in a namespace."""
        return postgres.blocking_ancestor(self.config.postgres_dir) is not None

    def _postgres_data(self) -> str:
        """The data dir as the server names it (in its own mount namespace: under /mnt)."""
        base = NAMESPACE_MOUNT if self._postgres_namespaced() else str(self.config.postgres_dir)
        return f"{base}/data"

    def _postgres_argv(self, argv: list[str]) -> list[str]:
        """argv as the `postgres` user (when root); in a mount namespace with postgres/ on /mnt when that
        user cannot reach it. Each step execs: the pid supervisord starts is the command's."""
        argv = postgres.as_server_user(argv)
        if not self._postgres_namespaced():
            return argv
        bind = 'mount --bind "$0" ' + NAMESPACE_MOUNT + ' && exec "$@"'
        unshare = [find_program("unshare"), "--mount", "--propagation", "private", "--"]
        return [*unshare, "/bin/sh", "-c", bind, str(self.config.postgres_dir), *argv]

    def initdb(self) -> None:
        """The database cluster in postgres/data, made on the first start (kept across down and up)."""
        c = self.config
        postgres.make_private_dir(c.postgres_dir)
        if (c.postgres_dir / "data" / "PG_VERSION").is_file():
            return
        argv = self._postgres_argv(postgres.initdb_argv(self._postgres_bin(), self._postgres_data()))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise ClusterError(f"initdb in {c.postgres_dir} failed:\n{done.stdout}{done.stderr}".strip())
        postgres.write_hba(c.postgres_dir / "data")

    def _postgres_ready(self) -> bool:
        """It answers as the server of our data dir, with the role and database the replicas use."""
        import psycopg

        if not postgres.ready(self.config.postgres_port, self._postgres_data()):
            return False
        try:
            postgres.ensure_database(self.config.postgres_port)
        except psycopg.Error:
            return False  # (it may be shutting down again: _wait looks at its state next)
        return True

    def _environment(self) -> dict[str, str]:
        """supervisord's environment, which every program inherits: the caller's, less what the cluster sets
        for the replicas itself, plus the replicas' common settings (per replica: only the metrics dir)."""
        c = self.config
        env = {
            k: v
            for k, v in os.environ.items()
            if k != "PROMETHEUS_MULTIPROC_DIR"
            and not (k.startswith("PROPENSITY_") and k in REPLICA_OWN_ENV)
            and not (k == PREDICTION_LOG_URL and c.postgres)
        }
        env.update(
            {
                "PROPENSITY_ARTIFACTS_DIR": str(c.artifacts_dir),
                "PROPENSITY_HOST": HOST,
                **(
                    {
                        "PROPENSITY_REDIS_URL": c.redis_url,
                        "PROPENSITY_REDIS_PASSWORD_FILE": str(c.redis_password_file),
                        "PROPENSITY_CACHE_SECRET_FILE": str(c.cache_secret_file),
                    }
                    if c.redis_url
                    else {}
                ),
                **({PREDICTION_LOG_URL: c.prediction_log_url} if c.prediction_log_url else {}),
                **({"PROPENSITY_MLFLOW_TRACKING_URI": c.mlflow_url} if c.mlflow_url else {}),
                **c.env,
            }
        )
        return env

    # --- readiness ---------------------------------------------------------------------------------------
    def _wait(self, name: str, timeout: float) -> None:
        check: Callable[[], bool]
        if name == "redis":
            check = self._redis_ready
        elif name == "postgres":
            check = self._postgres_ready
        elif name == "mlflow":
            check = self._mlflow_ready
        elif name == "nginx":
            check = self._nginx_ready
        elif name == "prometheus":
            check = self._prometheus_ready
        else:
            port = self.config.ports()[name]
            check = lambda: self.replica_ready(port)  # noqa: E731
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            if not self.supervisor_running():
                log = self.config.logs_dir / "supervisord.log"
                raise ClusterError(f"supervisord exited while {name} started:\n{procs.tail(log)}")
            state = self._rpc("getProcessInfo", name)["statename"]
            if state in _FAILED_TO_START:
                tail = procs.tail(self.program(name).log)
                raise ClusterError(f"{name} exited while starting ({state}); its log says:\n{tail}")
            try:
                if state == "RUNNING" and check():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        log = self.program(name).log
        raise ClusterError(f"{name} was not ready within {timeout:.0f}s; its log says:\n{procs.tail(log)}")

    def _mlflow_ready(self) -> bool:
        status, _ = http_get(self.config.mlflow_port, "/health")
        return status == 200

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
        """Create the run dir and write cluster.json, nginx.conf (checked with nginx -t), prometheus.yml and
        supervisord.conf."""
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
        (c.run_dir / "nginx.conf").write_text(nginx_conf(c, stdio_logs=True))
        (c.run_dir / "prometheus.yml").write_text(prometheus_yml(c))
        try:
            conf = supervisor_config.supervisord_conf(
                c.run_dir,
                [self.program(name) for name in self.names()],
                log_max_bytes=c.log_max_bytes,
                log_backups=c.log_backups,
            )
        except ValueError as exc:
            raise ClusterError(f"cannot run supervisord in {c.run_dir}: {exc}") from None
        (c.run_dir / supervisor_config.CONF_NAME).write_text(conf)
        if c.redis:
            write_secrets(c)
            write_private(c.redis_conf_file, redis_conf(c))
        check_nginx_conf(c.run_dir / "nginx.conf", c.run_dir)

    def _import_model(self) -> None:
        """Import the approved model once, before N replicas would race to do it on an empty registry."""
        from service.model.notebook_import import ensure_production
        from service.model.registries import open_registry
        from service.settings import Settings

        settings = Settings(
            artifacts_dir=self.config.artifacts_dir, mlflow_tracking_uri=self.config.mlflow_url
        )
        if settings.model_version is None:
            ensure_production(open_registry(settings))


def _mlflow_program() -> Path:
    """`mlflow` of its own venv (deploy/mlflow/requirements.lock), built on first use (a few minutes)."""
    from tools.tool_venvs import tools_venv

    return tools_venv("mlflow-server", REPO / "deploy" / "mlflow" / "requirements.lock").with_name("mlflow")


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
    help="The local cluster: N replicas behind nginx, redis-server, prometheus and PostgreSQL, on 127.0.0.1.",
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
    postgres_port: Annotated[int, typer.Option(help="PostgreSQL's port (the prediction log)")] = 6391,
    mlflow_port: Annotated[
        int, typer.Option(help="the MLflow tracking server's port (with --mlflow)")
    ] = 6392,
    redis: Annotated[
        bool, typer.Option("--redis/--no-redis", help="shared Redis cache or per-worker LRU")
    ] = True,
    with_postgres: Annotated[
        bool,
        typer.Option(
            "--postgres/--no-postgres",
            help="PostgreSQL for the prediction log, or the replicas' own setting (SQLite by default)",
        ),
    ] = True,
    with_mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow/--no-mlflow",
            help="an MLflow tracking server as the replicas' model registry, or the artifacts directory",
        ),
    ] = False,
    rate_limit: Annotated[
        float | None, typer.Option(help="nginx limit on /predict, req/s per client; 0 = off")
    ] = None,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(help='file of `"<key>" <client>;` lines: nginx asks every request for an X-API-Key'),
    ] = None,
    max_large_requests: Annotated[
        int | None,
        typer.Option(min=1, help="nginx: large requests (bodies from 256 KiB) in flight; more get 503"),
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
        postgres_port=postgres_port,
        redis=redis,
        postgres=with_postgres,
        mlflow_port=mlflow_port,
        mlflow=with_mlflow,
        rate_limit_per_second=rate_limit,
        api_keys_file=api_keys_file.resolve() if api_keys_file else None,
        max_large_requests=max_large_requests,
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
    """Stop exactly what `up` started: supervisord, and with it every process of the cluster."""
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
    if not cluster.supervisor_running() or not all(cluster.running().values()):
        raise typer.Exit(3)


def _print_status(cluster: Cluster) -> None:
    typer.echo(f"{'process':<12} {'pid':>8} {'address':<22} {'state':<8} log")
    for row in cluster.status():
        pid = str(row["pid"] or "-")
        typer.echo(f"{row['name']:<12} {pid:>8} {row['address']:<22} {row['state']:<8} {row['log']}")
    c = cluster.config
    typer.echo(f"public: {c.nginx_url}  prometheus: {c.prometheus_url}  redis: {c.redis_url or 'off (LRU)'}")
    log = c.prediction_log_url or "no PostgreSQL (each replica's own setting)"
    typer.echo(f"prediction log: {log}")
    typer.echo(f"model registry: {c.mlflow_url or c.artifacts_dir} ({'MLflow' if c.mlflow else 'directory'})")


if __name__ == "__main__":
    cli()
