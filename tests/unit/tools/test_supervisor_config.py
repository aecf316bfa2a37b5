"""supervisord's config for the local cluster, nginx's logs handed to it, and the orphan reaper's side of
supervisord's event listener protocol (no process started: tests/integration/test_supervisor.py runs them)."""

from __future__ import annotations

import configparser
import io
from pathlib import Path

import pytest

from tools import procs, supervisor_config
from tools.cluster import Cluster, ClusterError
from tools.cluster_config import ClusterConfig, nginx_conf
from tools.supervisor_config import Program, supervisord_conf


def parsed(text: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser()
    parser.read_string(text)
    return parser


def test_every_cluster_process_is_a_restarted_program_with_rotated_logs(tmp_path: Path) -> None:
    config = ClusterConfig(
        run_dir=tmp_path / "run", artifacts_dir=tmp_path / "a", replicas=2, log_max_bytes=4096, log_backups=2
    )
    cluster = Cluster(config)
    text = supervisord_conf(
        config.run_dir, [cluster.program(n) for n in cluster.names()], log_max_bytes=4096, log_backups=2
    )
    conf = parsed(text)
    programs = [s.removeprefix("program:") for s in conf.sections() if s.startswith("program:")]
    assert programs == ["postgres", "redis", "replica-1", "replica-2", "nginx", "prometheus"]
    for name in programs:
        section = conf[f"program:{name}"]
        assert (section["autostart"], section["autorestart"]) == ("false", "true")  # up starts them in order
        assert section["stopasgroup"] == section["killasgroup"] == "true"
        assert section["stdout_logfile_maxbytes"] == "4096" and section["stdout_logfile_backups"] == "2"
        assert section["directory"] == str(config.run_dir)
    nginx = conf["program:nginx"]
    assert nginx["stdout_logfile"] == str(config.logs_dir / "nginx-access.log")  # its access log
    assert nginx["stderr_logfile"] == str(config.logs_dir / "nginx-error.log")
    assert nginx["redirect_stderr"] == "false" and nginx["stderr_logfile_maxbytes"] == "4096"
    assert "-g 'daemon off;'" in nginx["command"] and "-e stderr" in nginx["command"]
    replica = conf["program:replica-2"]
    assert replica["command"].startswith("/")  # `env` execs propensity: one pid from supervisord to gunicorn
    assert f"PROMETHEUS_MULTIPROC_DIR={config.metrics_dir('replica-2')} " in replica["command"]
    assert f"serve --port {config.replica_port + 1} --workers 2" in replica["command"]
    assert int(replica["stopwaitsecs"]) > 30  # gunicorn's graceful_timeout: in-flight requests finish
    # int priorities: supervisord stops the highest first: nginx before the replicas, the reaper last;
    # postgres after the replicas, which write to it, with INT: a fast shutdown (TERM waits for clients)
    assert int(nginx["priority"]) > int(replica["priority"]) > int(conf["program:redis"]["priority"])
    assert int(replica["priority"]) > int(conf["program:postgres"]["priority"]) > 1
    assert conf["program:postgres"]["stopsignal"] == "INT" and replica["stopsignal"] == "TERM"
    reaper = conf[f"eventlistener:{supervisor_config.REAPER}"]
    assert reaper["events"] == "PROCESS_STATE_EXITED,PROCESS_STATE_BACKOFF,TICK_5"
    assert reaper["command"].endswith("-m tools.supervisor_config reap") and reaper["priority"] == "1"
    assert conf["unix_http_server"]["file"] == str(config.run_dir / "supervisor.sock")
    assert conf["unix_http_server"]["chmod"] == "0700"  # nobody else may command it
    assert "inet_http_server" not in conf  # no TCP port
    assert conf["supervisord"]["nodaemon"] == "true"


def test_values_are_escaped_and_single_line(tmp_path: Path) -> None:
    program = Program("p", ["/bin/echo", "50%", "two words"], tmp_path / "p%.log")
    text = supervisord_conf(tmp_path, [program], log_max_bytes=1, log_backups=0)
    section = parsed(text)["program:p"]
    assert section["command"] == "/bin/echo 50%% 'two words'"  # supervisord expands %(name)s: %% is a %
    assert section["stdout_logfile"] == str(tmp_path / "p%%.log")
    with pytest.raises(ValueError, match="span lines"):
        supervisord_conf(
            tmp_path,
            [Program("p", ["/bin/echo", "a\nb"], tmp_path / "p.log")],
            log_max_bytes=1,
            log_backups=0,
        )
    with pytest.raises(ValueError, match="too long for a unix socket"):
        supervisor_config.socket_path(tmp_path / ("x" * 120))


def test_a_run_dir_too_long_for_the_socket_is_a_cluster_error(tmp_path: Path) -> None:
    cluster = Cluster(ClusterConfig(run_dir=tmp_path / ("d" * 110), artifacts_dir=tmp_path))
    with pytest.raises(ClusterError, match="cannot run supervisord"):
        cluster.prepare()


def test_nginx_logs_go_to_stdout_and_stderr_for_supervisord(tmp_path: Path) -> None:
    config = ClusterConfig(run_dir=tmp_path, artifacts_dir=tmp_path)
    text = nginx_conf(config, stdio_logs=True)
    assert "access_log /dev/stdout " in text and "error_log stderr " in text
    assert str(config.logs_dir) not in text  # no log file of nginx's own is left to grow


EVENT = "when:1700000000"
HEADER = (
    f"ver:3.0 server:supervisor serial:7 pool:orphan-reaper poolserial:7 eventname:TICK_5 len:{len(EVENT)}\n"
)


def test_the_reaper_answers_each_event_and_stops_orphaned_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped: list[int] = []
    found = iter([[], [4242, 4343]])
    monkeypatch.setattr(procs, "orphaned_groups", lambda session: next(found))
    monkeypatch.setattr(supervisor_config, "stop_group", lambda group: stopped.append(group))
    out = io.StringIO()
    supervisor_config.reap(io.StringIO(HEADER + EVENT + HEADER + EVENT), out)  # then EOF: supervisord gone
    assert out.getvalue() == "READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"
    assert stopped == [4242, 4343]
