"""What the local cluster is made of, and the config files generated for it (nginx.conf, prometheus.yml).

Everything listens on 127.0.0.1 only. Defaults: nginx :1313, replicas :8001.., redis-server :6390,
prometheus :9091. The nginx config comes from nginx/nginx.conf.template; `{{NAME}}` placeholders are the
only thing replaced, so nginx's own `$variables` need no escaping.

Redis asks for a password, and the replicas sign what they store in it with a cache secret: both are
generated into <run dir>/secrets/ (mode 0600) the first time the cluster starts there and kept, so a
restarted Redis or replica uses the same ones. The password reaches redis-server in its config file
(redis.conf, 0600) and the replicas as PROPENSITY_REDIS_PASSWORD_FILE: never on a command line, where
`ps` would show it to every user.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from service.settings import Settings
from tools.paths import REPO

HOST = "127.0.0.1"
NGINX_TEMPLATE = REPO / "nginx" / "nginx.conf.template"
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


@dataclass(frozen=True)
class ClusterConfig:
    run_dir: Path
    artifacts_dir: Path
    replicas: int = 2
    workers: int = 2
    nginx_port: int = 1313
    replica_port: int = 8001  # replica i (1-based) listens on replica_port + i - 1
    redis_port: int = 6390
    prometheus_port: int = 9091
    redis: bool = True  # False: no redis-server; every replica keeps its own in-process LRU
    rate_limit_per_second: float = 0.0  # 0 = off
    rate_limit_burst: int = 50
    max_body_bytes: int = 32 * 1024 * 1024
    nginx_workers: int = 1
    retry_tries: int = 3
    gzip_min_length: int = 16 * 1024
    scrape_interval_seconds: float = 2.0
    redis_maxmemory: str = "256mb"
    env: dict[str, str] = field(default_factory=dict)  # extra environment of every replica

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= 64:
            raise ValueError(f"replicas must be 1..64, got {self.replicas}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        ports = self.ports()
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"the cluster's ports overlap: {ports}")
        if any(not 1 <= p <= 65535 for p in ports.values()):
            raise ValueError(f"ports must be 1..65535: {ports}")

    @classmethod
    def from_settings(
        cls, run_dir: Path, settings: Settings | None = None, **overrides: Any
    ) -> ClusterConfig:
        settings = settings or Settings()
        base: dict[str, Any] = {
            "run_dir": Path(run_dir).resolve(),
            "artifacts_dir": settings.artifacts_dir.resolve(),
            "rate_limit_per_second": settings.rate_limit_per_second,
            "rate_limit_burst": settings.rate_limit_burst,
            "max_body_bytes": settings.max_body_bytes,
        }
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    # --- names and addresses ---------------------------------------------------------------------------
    def replica_names(self) -> list[str]:
        return [f"replica-{i}" for i in range(1, self.replicas + 1)]

    def replica_ports(self) -> list[int]:
        return [self.replica_port + i for i in range(self.replicas)]

    def ports(self) -> dict[str, int]:
        """Every port the cluster listens on, by process name."""
        ports = {"nginx": self.nginx_port, "prometheus": self.prometheus_port}
        if self.redis:
            ports["redis"] = self.redis_port
        ports.update(zip(self.replica_names(), self.replica_ports(), strict=True))
        return ports

    @property
    def nginx_url(self) -> str:
        return f"http://{HOST}:{self.nginx_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.prometheus_port}"

    @property
    def redis_url(self) -> str | None:
        return f"redis://{HOST}:{self.redis_port}/0" if self.redis else None

    def replica_urls(self) -> list[str]:
        return [f"http://{HOST}:{p}" for p in self.replica_ports()]

    # --- files in the run dir ----------------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.run_dir / "pids"

    def metrics_dir(self, replica: str) -> Path:
        return self.run_dir / "metrics" / replica

    @property
    def secrets_dir(self) -> Path:
        return self.run_dir / "secrets"

    @property
    def redis_password_file(self) -> Path:
        return self.secrets_dir / "redis_password"

    @property
    def cache_secret_file(self) -> Path:
        return self.secrets_dir / "cache_secret"

    @property
    def redis_conf_file(self) -> Path:
        return self.run_dir / "redis.conf"

    def redis_password(self) -> str:
        """The generated Redis password (for a client of the cluster's Redis: tests, tools)."""
        return self.redis_password_file.read_text().strip()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"], data["artifacts_dir"] = str(self.run_dir), str(self.artifacts_dir)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterConfig:
        return cls(**{**data, "run_dir": Path(data["run_dir"]), "artifacts_dir": Path(data["artifacts_dir"])})


def write_secrets(config: ClusterConfig) -> None:
    """Generate the Redis password and the cache secret unless the run dir has them already."""
    config.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in (config.redis_password_file, config.cache_secret_file):
        if not path.is_file():
            write_private(path, secrets.token_hex(32) + "\n")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created so from the start (no window at the umask's mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: narrow it before writing
    with os.fdopen(fd, "w") as out:
        out.write(text)


def redis_conf(config: ClusterConfig) -> str:
    """redis-server's whole configuration: a cache only (no persistence, LRU eviction at the cap), on
    loopback, with the generated password."""
    password = config.redis_password()
    if not re.fullmatch(r"[0-9A-Za-z]+", password):
        raise ValueError(f"{config.redis_password_file} must hold letters and digits only")
    lines = [
        "# Generated by `make up` (python -m tools.cluster up). Holds the password: mode 0600.",
        f"bind {HOST}",
        f"port {config.redis_port}",
        "protected-mode yes",
        'save ""',
        "appendonly no",
        f'dir "{config.run_dir / "redis"}"',
        f"maxmemory {config.redis_maxmemory}",
        "maxmemory-policy allkeys-lru",
        "daemonize no",
        'logfile ""',
        f"requirepass {password}",
    ]
    return "\n".join(lines) + "\n"


def ports_in_use(ports: dict[str, int]) -> dict[str, int]:
    """The subset of `ports` something already listens on (or that cannot be bound) on 127.0.0.1."""
    taken = {}
    for name, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is fine
            try:
                s.bind((HOST, port))
            except OSError:
                taken[name] = port
    return taken


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago (for tests and benchmarks)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            sockets.append(s)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def render(template: str, values: dict[str, str]) -> str:
    """Replace every {{NAME}}; an unknown placeholder or an unused value is an error, not a silent gap."""
    used: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(f"template placeholder {{{{{name}}}}} has no value")
        used.add(name)
        return values[name]

    out = _PLACEHOLDER.sub(fill, template)
    unused = set(values) - used
    if unused:
        raise KeyError(f"values not used by the template: {sorted(unused)}")
    return out


def nginx_conf(config: ClusterConfig, template: str | None = None) -> str:
    if template is None:
        template = NGINX_TEMPLATE.read_text()
    servers = "\n".join(
        f"        server {HOST}:{port} max_fails=3 fail_timeout=2s;" for port in config.replica_ports()
    )
    limited = config.rate_limit_per_second > 0
    rate = f"{config.rate_limit_per_second:g}r/s"
    burst = f" burst={config.rate_limit_burst} nodelay" if config.rate_limit_burst > 0 else ""
    run = config.run_dir
    values = {
        # Workers drop root when nginx starts as root; the run dir may not be reachable by `nobody`
        # (e.g. a 0700 temp dir), so they keep the invoking user. Non-root: the directive must be absent.
        "USER": "user root root;" if os.geteuid() == 0 else "# (not root: workers run as the invoking user)",
        "WORKER_PROCESSES": str(config.nginx_workers),
        "PID_FILE": f"{run}/nginx.pid",
        "ERROR_LOG": f"{run}/logs/nginx-error.log",
        "ACCESS_LOG": f"{run}/logs/nginx-access.log",
        "TEMP_PATHS": "\n".join(
            f"    {kind}_temp_path {run}/nginx/{name};"
            for kind, name in [
                ("client_body", "client_body"),
                ("proxy", "proxy"),
                ("fastcgi", "fastcgi"),
                ("uwsgi", "uwsgi"),
                ("scgi", "scgi"),
            ]
        ),
        "UPSTREAM_SERVERS": servers,
        "RATE_LIMIT_ZONE": (
            f"    limit_req_zone $binary_remote_addr zone=predict:10m rate={rate};\n"
            "    limit_req_status 429;\n"
            "    limit_req_log_level warn;"
            if limited
            else "    # rate limit off (PROPENSITY_RATE_LIMIT_PER_SECOND=0)"
        ),
        "RATE_LIMIT": (
            f"            limit_req zone=predict{burst};"
            if limited
            else "            # no limit_req: rate limit off"
        ),
        "LISTEN": f"{HOST}:{config.nginx_port}",
        "API_KEYS": "    # no API keys on loopback (the Swarm stacks check X-API-Key)",
        "REQUIRE_API_KEY": "            # no API key check",
        "MAX_BODY_BYTES": str(config.max_body_bytes),
        "GZIP_MIN_LENGTH": str(config.gzip_min_length),
        "RETRY_TRIES": str(config.retry_tries),
    }
    return render(template, values)


def prometheus_yml(config: ClusterConfig) -> str:
    """Scrape every replica directly (nginx hides /metrics), labelled replica="replica-N"."""
    interval = f"{config.scrape_interval_seconds:g}s"
    timeout = f"{min(config.scrape_interval_seconds, 1.0):g}s"
    lines = [
        "# Generated by `make up` (python -m tools.cluster up): one target per replica, scraped directly.",
        "global:",
        f"  scrape_interval: {interval}",
        f"  scrape_timeout: {timeout}",
        f"  evaluation_interval: {interval}",
        "scrape_configs:",
        "  - job_name: propensity",
        "    metrics_path: /metrics",
        "    static_configs:",
    ]
    for name, port in zip(config.replica_names(), config.replica_ports(), strict=True):
        lines += [f'      - targets: ["{HOST}:{port}"]', f'        labels: {{replica: "{name}"}}']
    return "\n".join(lines) + "\n"
