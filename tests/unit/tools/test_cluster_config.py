"""The local cluster's generated configs (nginx -t on them), its PostgreSQL's command line and its process
bookkeeping."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from tools import postgres, procs
from tools.cluster import Cluster, ClusterError, check_nginx_conf
from tools.cluster_config import (
    ClusterConfig,
    nginx_conf,
    ports_in_use,
    prometheus_yml,
    redis_conf,
    render,
    write_private,
    write_secrets,
)
from tools.supervisor_config import supervisord_conf

needs_nginx = pytest.mark.skipif(
    shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin") is None, reason="needs nginx"
)


def config(tmp_path: Path, **overrides: object) -> ClusterConfig:
    return ClusterConfig(run_dir=tmp_path / "run", artifacts_dir=tmp_path / "artifacts", **overrides)  # type: ignore[arg-type]


@needs_nginx
@pytest.mark.parametrize("rate", [0.0, 25.0])
def test_generated_nginx_conf_passes_nginx_t(tmp_path: Path, rate: float) -> None:
    c = config(tmp_path, replicas=3, rate_limit_per_second=rate, rate_limit_burst=5)
    c.run_dir.mkdir(parents=True)
    text = nginx_conf(c)
    (c.run_dir / "nginx.conf").write_text(text)
    check_nginx_conf(c.run_dir / "nginx.conf", c.run_dir)
    assert "{{" not in text
    for port in (8001, 8002, 8003):
        assert f"server 127.0.0.1:{port} max_fails=3 fail_timeout=2s;" in text
    assert "listen 127.0.0.1:1313" in text
    assert "proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;" in text
    assert f"client_max_body_size {32 * 1024 * 1024};" in text
    if rate:
        assert "limit_req_zone $binary_remote_addr zone=predict:10m rate=25r/s;" in text
        assert "limit_req zone=predict burst=5 nodelay;" in text
    else:
        assert "limit_req " not in text and "limit_req_zone" not in text


@needs_nginx
def test_nginx_t_reports_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "nginx.conf").write_text(
        "events {}\nhttp { server { listen 127.0.0.1:1; bogus_directive; } }\n"
    )
    with pytest.raises(ClusterError, match="bogus_directive"):
        check_nginx_conf(tmp_path / "nginx.conf", tmp_path)


def test_render_refuses_unknown_placeholders_and_unused_values() -> None:
    assert render("a {{X}} $host", {"X": "1"}) == "a 1 $host"
    with pytest.raises(KeyError, match="Y"):
        render("{{X}} {{Y}}", {"X": "1"})
    with pytest.raises(KeyError, match="unused"):
        render("{{X}}", {"X": "1", "unused": "2"})


def test_prometheus_config_scrapes_every_replica_with_a_label(tmp_path: Path) -> None:
    text = prometheus_yml(config(tmp_path, replicas=2, replica_port=9100, scrape_interval_seconds=2))
    assert "scrape_interval: 2s" in text
    assert '- targets: ["127.0.0.1:9100"]\n        labels: {replica: "replica-1"}' in text
    assert '- targets: ["127.0.0.1:9101"]\n        labels: {replica: "replica-2"}' in text


def test_config_rejects_overlapping_ports_and_round_trips_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overlap"):
        config(tmp_path, nginx_port=8002)
    c = config(tmp_path, replicas=3, env={"A": "b"})
    assert ClusterConfig.from_json(json.loads(json.dumps(c.to_json()))) == c
    assert c.ports()["replica-3"] == 8003 and c.redis_url == "redis://127.0.0.1:6390/0"
    assert dataclasses.replace(c, redis=False).redis_url is None


needs_redis_and_prometheus = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("prometheus") is None,
    reason="needs redis-server and prometheus (their commands name the programs' paths)",
)


@needs_redis_and_prometheus
def test_redis_asks_for_a_generated_password_that_no_command_line_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = config(tmp_path, replicas=2)
    write_secrets(c)
    password, secret = c.redis_password(), c.cache_secret_file.read_text().strip()
    assert len(password) == len(secret) == 64 and password != secret
    for path in (c.redis_password_file, c.cache_secret_file):
        assert path.stat().st_mode & 0o777 == 0o600, path
    write_secrets(c)  # a restart keeps them: Redis and every replica must agree
    assert c.redis_password() == password
    conf = redis_conf(c)
    assert f"requirepass {password}\n" in conf and "bind 127.0.0.1\nport 6390\n" in conf
    c.redis_conf_file.write_text("# an older, readable one\n")
    c.redis_conf_file.chmod(0o644)
    write_private(c.redis_conf_file, conf)
    assert c.redis_conf_file.stat().st_mode & 0o777 == 0o600 and c.redis_conf_file.read_text() == conf

    monkeypatch.setenv("PROPENSITY_CACHE_SECRET", "the caller's, not the cluster's")
    cluster = Cluster(c)
    redis_argv = cluster.program("redis").argv
    assert redis_argv[1:] == [str(c.redis_conf_file)]
    replica_argv = cluster.program("replica-1").argv
    env = cluster._environment()  # supervisord's, which every program inherits
    assert env["PROPENSITY_REDIS_URL"] == "redis://127.0.0.1:6390/0"  # no password in the URL
    assert env["PROPENSITY_REDIS_PASSWORD_FILE"] == str(c.redis_password_file)
    assert env["PROPENSITY_CACHE_SECRET_FILE"] == str(c.cache_secret_file)
    assert "PROPENSITY_CACHE_SECRET" not in env
    prometheus = cluster.program("prometheus").argv
    for argv in (redis_argv, replica_argv, prometheus):
        assert not any(password in arg or secret in arg for arg in argv)
    assert not any(password in value or secret in value for value in env.values())
    conf = supervisord_conf(
        c.run_dir, [cluster.program(n) for n in cluster.names()], log_max_bytes=1, log_backups=1
    )
    assert password not in conf and secret not in conf
    assert not any(arg.startswith("--web.enable-lifecycle") for arg in prometheus)  # no /-/reload, /-/quit
    no_redis = Cluster(dataclasses.replace(c, redis=False))._environment()
    assert "PROPENSITY_REDIS_URL" not in no_redis and "PROPENSITY_CACHE_SECRET_FILE" not in no_redis


def test_redis_conf_refuses_a_password_it_cannot_write_safely(tmp_path: Path) -> None:
    c = config(tmp_path)
    c.secrets_dir.mkdir(parents=True)
    c.redis_password_file.write_text("two words\n")
    with pytest.raises(ValueError, match="letters and digits only"):
        redis_conf(c)


def test_up_refuses_politely_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert ports_in_use({"x": port}) == {"x": port}
        c = config(tmp_path, nginx_port=port, replica_port=port + 10, redis_port=port + 20)
        with pytest.raises(ClusterError, match=rf"port\(s\) already in use: {port} \(nginx\)"):
            Cluster(c).up()
    assert not (c.run_dir / "pids").exists()  # nothing was started


def test_a_pid_file_never_matches_another_process(tmp_path: Path) -> None:
    record = procs.spawn(
        "sleeper",
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=os.environ,
        log=tmp_path / "s.log",
    )
    try:
        assert procs.is_running(record)
        impostor = dataclasses.replace(record, start_time=record.start_time + 1)  # same pid, other process
        assert not procs.is_running(impostor)
        procs.signal_group(impostor, signal.SIGKILL)  # must not touch the real one
        assert procs.is_running(record)
        path = record.save(tmp_path / "pids")
        assert procs.ProcessRecord.load(path) == record
        assert procs.stop(record, timeout=5)
        assert not procs.is_running(record)
        assert not procs.stop(record)  # already gone: nothing to do
    finally:
        procs.stop(record, timeout=1)  # whatever failed above, the sleeper does not outlive the test


def test_stop_kills_a_group_whose_leader_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n"
        "    time.sleep(60)\n"
        "time.sleep(60)\n"
    )
    record = procs.spawn("stubborn", [sys.executable, "-c", code], env=os.environ, log=tmp_path / "s.log")
    try:
        assert procs.stop(record, timeout=0.5)
        assert not procs.is_running(record) and procs.group_members(record.pid) == []
    finally:
        procs.signal_group(record, signal.SIGKILL)  # (a no-op once stop() did its job)


# --- PostgreSQL: the prediction log's database -------------------------------------------------------------
def test_postgres_is_a_port_of_the_cluster_and_every_replica_logs_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = config(tmp_path, postgres_port=6400)
    assert c.ports()["postgres"] == 6400
    assert c.prediction_log_url == "postgresql+psycopg://propensity@127.0.0.1:6400/propensity"
    with pytest.raises(ValueError, match="overlap"):
        config(tmp_path, postgres_port=c.redis_port)
    monkeypatch.setenv("PROPENSITY_PREDICTION_LOG_URL", "sqlite:////the/callers.db")
    cluster = Cluster(c)
    assert cluster.names()[0] == "postgres"  # up first, stopped last (after the replicas)
    assert cluster._environment()["PROPENSITY_PREDICTION_LOG_URL"] == c.prediction_log_url
    without = Cluster(dataclasses.replace(c, postgres=False))
    assert "postgres" not in without.names() and "postgres" not in without.config.ports()
    assert without.config.prediction_log_url is None
    assert without._environment()["PROPENSITY_PREDICTION_LOG_URL"] == "sqlite:////the/callers.db"
    older = {k: v for k, v in c.to_json().items() if k not in ("postgres", "postgres_port")}
    assert ClusterConfig.from_json(older).postgres is False  # a cluster.json from before ran none


needs_postgres = pytest.mark.skipif(
    not list(Path("/usr/lib/postgresql").glob("*/bin/postgres")) and shutil.which("postgres") is None,
    reason="needs PostgreSQL (Debian's postgresql)",
)


@needs_postgres
def test_postgres_runs_as_the_postgres_user_on_loopback_without_a_socket(tmp_path: Path) -> None:
    c = config(tmp_path, postgres_port=6400)
    program = Cluster(c).program("postgres")
    argv = program.argv
    assert program.stop_signal == "INT" and program.log == c.logs_dir / "postgres.log"
    server = argv[next(i for i, a in enumerate(argv) if a.endswith("/bin/postgres")) :]
    assert server[1:] == ["-D", server[2], "-h", "127.0.0.1", "-p", "6400", "-k", ""]
    if os.geteuid() != 0:
        assert argv == server and server[2] == str(c.postgres_dir / "data")
        return
    uid = str(postgres.server_account().pw_uid)  # type: ignore[union-attr]
    setpriv = argv.index("--reuid")
    assert argv[setpriv + 1] == uid and argv[setpriv - 1].endswith("setpriv")
    # pytest's temp dir is 0700 root: the `postgres` user cannot reach it, so a mount namespace shows
    # postgres/ on /mnt to it
    assert postgres.blocking_ancestor(c.postgres_dir) is not None
    assert argv[0].endswith("unshare") and "--mount" in argv and server[2] == "/mnt/data"
    assert argv[argv.index("-c") + 2] == str(c.postgres_dir)


@needs_postgres
@pytest.mark.skipif(os.geteuid() != 0, reason="as another user the server runs as that user")
def test_postgres_in_a_run_dir_the_postgres_user_reaches_needs_no_namespace() -> None:
    reachable = Path(tempfile.mkdtemp(prefix="propensity-cluster-"))
    try:
        reachable.chmod(0o711)
        c = config(reachable)
        argv = Cluster(c).program("postgres").argv
        assert argv[0].endswith("setpriv") and "unshare" not in " ".join(argv)
        assert argv[argv.index("-D") + 1] == str(c.postgres_dir / "data")
    finally:
        shutil.rmtree(reachable)
