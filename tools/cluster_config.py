"""What the local cluster is made of, and the config files generated for it (nginx.conf, prometheus.yml).

Everything listens on 127.0.0.1 only. Defaults: nginx :1313, replicas :8001.., redis-server :6390,
prometheus :9091, postgres :6391 (the prediction log's database: every replica gets
PROPENSITY_PREDICTION_LOG_URL=postgresql+psycopg://propensity@127.0.0.1:6391/propensity). The nginx
config comes from nginx/nginx.conf.template; `{{NAME}}` placeholders are the
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
from tools import postgres
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
    postgres_port: int = 6391
    mlflow_port: int = 6392
    redis: bool = True  # False: no redis-server; every replica keeps its own in-process LRU
    # False: no PostgreSQL; the replicas log predictions wherever their settings say (SQLite by default)
    postgres: bool = True
    # True: an MLflow tracking server (SQLite, artifacts in the run dir) is the replicas' model registry
    mlflow: bool = False
    rate_limit_per_second: float = 0.0  # 0 = off
    rate_limit_burst: int = 50
    # A file of `"<key>" <client>;` lines (the Swarm api_keys secret's format): every request but nginx's
    # own /health needs an X-API-Key from it, and the rate limit counts per client instead of per address.
    api_keys_file: Path | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    # Bodies from this size (or chunked) are "large": buffered to disk, not memory, at most
    # max_large_requests of them in flight through nginx (more get 503 + Retry-After), long upstream
    # timeouts. The default is the app's OFFLOAD_MIN_BYTES: from there a call is scored off the event loop.
    large_body_bytes: int = 256 * 1024
    # 8 keep each worker of two replicas (2 workers each) busy with one big call scoring and one waiting,
    # while costing nginx little (bodies on disk, at most 1 MiB of each answer in memory: far below the
    # Swarm stacks' 256 MiB) and keeping the bodies a replica has to hold at once well within its 1 GiB.
    max_large_requests: int = 8
    # How long a replica has to answer a small request before nginx counts it as failed and asks the next
    # one: what a hung replica can cost the few requests it holds (least_conn sends it no more). Not
    # shorter: an overloaded replica looks the same as a hung one, and 2,100 single rows in flight on one
    # replica queued up to ~5 s on the 2-core test machine; at 2 s the timeouts took the last replica out.
    upstream_timeout_seconds: float = 10.0
    nginx_workers: int = 1
    retry_tries: int = 3
    gzip_min_length: int = 16 * 1024
    scrape_interval_seconds: float = 2.0
    redis_maxmemory: str = "256mb"
    # supervisord rotates every process's log (nginx's access log too) at this size, keeping this many
    log_max_bytes: int = 20 * 1024 * 1024
    log_backups: int = 5
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
        if not 1024 <= self.large_body_bytes <= self.max_body_bytes:
            raise ValueError(f"large_body_bytes must be 1024..max_body_bytes, got {self.large_body_bytes}")
        if self.max_large_requests < 1:
            raise ValueError(f"max_large_requests must be >= 1, got {self.max_large_requests}")
        if not 0.1 <= self.upstream_timeout_seconds <= 60:
            raise ValueError(f"upstream_timeout_seconds must be 0.1..60, got {self.upstream_timeout_seconds}")
        if self.api_keys_file is not None and '"' in str(self.api_keys_file):
            raise ValueError(f"api_keys_file must not contain a double quote: {self.api_keys_file}")

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
        if self.postgres:
            ports["postgres"] = self.postgres_port
        if self.mlflow:
            ports["mlflow"] = self.mlflow_port
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

    @property
    def prediction_log_url(self) -> str | None:
        """The cluster's PostgreSQL database for the prediction log, as the replicas are given it."""
        return postgres.url(self.postgres_port) if self.postgres else None

    @property
    def mlflow_url(self) -> str | None:
        return f"http://{HOST}:{self.mlflow_port}" if self.mlflow else None

    @property
    def mlflow_dir(self) -> Path:
        """The MLflow server's SQLite database (mlflow.db) and artifact store (artifacts/): kept by down."""
        return self.run_dir / "mlflow"

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
    def postgres_dir(self) -> Path:
        """PostgreSQL's own (the `postgres` user's when root, mode 0700): data/ is the database cluster."""
        return self.run_dir / "postgres"

    @property
    def redis_conf_file(self) -> Path:
        return self.run_dir / "redis.conf"

    def redis_password(self) -> str:
        """The generated Redis password (for a client of the cluster's Redis: tests, tools)."""
        return self.redis_password_file.read_text().strip()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["run_dir"], data["artifacts_dir"] = str(self.run_dir), str(self.artifacts_dir)
        data["api_keys_file"] = str(self.api_keys_file) if self.api_keys_file else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterConfig:
        paths = {k: Path(data[k]) for k in ("run_dir", "artifacts_dir")}
        keys = data.get("api_keys_file")
        # a cluster.json written before the cluster had PostgreSQL: it runs none
        old = {"postgres": data.get("postgres", False), "mlflow": data.get("mlflow", False)}
        return cls(**{**data, **paths, **old, "api_keys_file": Path(keys) if keys else None})


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


def nginx_conf(config: ClusterConfig, template: str | None = None, *, stdio_logs: bool = False) -> str:
    """`stdio_logs`: the error log on stderr and the access log on stdout, for a supervisor that captures
    them into logs/nginx-{error,access}.log and rotates them by size (nginx itself cannot)."""
    if template is None:
        template = NGINX_TEMPLATE.read_text()
    servers = "\n".join(
        f"        server {HOST}:{port} max_fails=3 fail_timeout=2s;" for port in config.replica_ports()
    )
    keys = config.api_keys_file
    run = config.run_dir
    values = {
        # Workers drop root when nginx starts as root; the run dir may not be reachable by `nobody`
        # (e.g. a 0700 temp dir), so they keep the invoking user. Non-root: the directive must be absent.
        "USER": "user root root;" if os.geteuid() == 0 else "# (not root: workers run as the invoking user)",
        "WORKER_PROCESSES": str(config.nginx_workers),
        "PID_FILE": f"{run}/nginx.pid",
        "ERROR_LOG": "stderr" if stdio_logs else f"{run}/logs/nginx-error.log",
        "ACCESS_LOG": "/dev/stdout" if stdio_logs else f"{run}/logs/nginx-access.log",
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
        **rate_limit_values(
            "$api_client" if keys else "$binary_remote_addr",
            config.rate_limit_per_second,
            config.rate_limit_burst,
            off="    # rate limit off (PROPENSITY_RATE_LIMIT_PER_SECOND=0)",
        ),
        "LISTEN": f"{HOST}:{config.nginx_port}",
        "API_KEYS": (
            api_keys_map(f'"{keys.resolve()}"')
            if keys
            else "    # no API keys (ClusterConfig.api_keys_file, `make up` --api-keys-file)"
        ),
        "REQUIRE_API_KEY": REQUIRE_API_KEY if keys else "            # no API key check",
        "RETRY_TRIES": str(config.retry_tries),
        **proxy_policy_values(config),
    }
    return render(template, values)


# --- pieces every deployment's nginx.conf shares (the Swarm stacks' too: tools/swarm_config.py) -----------
REQUIRE_API_KEY = '            if ($api_client = "") { return 401; }'


def api_keys_map(include: str) -> str:
    """$api_client: the client name the X-API-Key maps to in the included file, "" for none or unknown."""
    return (
        '    # X-API-Key -> client name, from a file of `"<key>" <client>;` lines\n'
        "    map_hash_bucket_size 128;  # keys up to ~100 characters (`openssl rand -hex 24`: 48)\n"
        "    map $http_x_api_key $api_client {\n"
        '        default "";\n'
        f"        include {include};\n"
        "    }"
    )


def rate_limit_values(key: str, per_second: float, burst: int, *, off: str) -> dict[str, str]:
    """RATE_LIMIT_ZONE and RATE_LIMIT: limit_req on /predict per `key` (an nginx variable; requests whose
    key is empty are not counted); `off` is the comment left when per_second is 0."""
    if per_second <= 0:
        return {"RATE_LIMIT_ZONE": off, "RATE_LIMIT": "            # no limit_req: rate limit off"}
    # nginx takes whole requests per second or per minute
    whole = per_second == int(per_second)
    rate = f"{int(per_second)}r/s" if whole else f"{max(1, round(per_second * 60))}r/m"
    return {
        "RATE_LIMIT_ZONE": (
            f"    limit_req_zone {key} zone=predict:10m rate={rate};\n"
            "    limit_req_status 429;\n"
            "    limit_req_log_level warn;"
        ),
        "RATE_LIMIT": f"            limit_req zone=predict burst={burst} nodelay;"
        if burst > 0
        else "            limit_req zone=predict;",
    }


def proxy_policy_values(config: ClusterConfig) -> dict[str, str]:
    """Body limit, large requests, upstream timeout, gzip: the same in every deployment."""
    return {
        "MAX_BODY_BYTES": str(config.max_body_bytes),
        "LARGE_BODY_BYTES": str(config.large_body_bytes),
        "SMALL_LENGTH_PATTERN": decimal_below(config.large_body_bytes),
        "MAX_LARGE_REQUESTS": str(config.max_large_requests),
        "UPSTREAM_TIMEOUT": f"{round(config.upstream_timeout_seconds * 1000)}ms",
        "RETRY_TIMEOUT": f"{round(config.upstream_timeout_seconds * 3000)}ms",
        "GZIP_MIN_LENGTH": str(config.gzip_min_length),
    }


def decimal_below(limit: int) -> str:
    """A regular expression of the decimal numbers below `limit` (leading zeros only make a number look
    longer, so larger): nginx's map cannot compare numbers, only match them."""
    digits = str(limit)
    width = len(digits)
    parts = [f"[0-9]{{1,{width - 1}}}"] if width > 1 else []
    for i, digit in enumerate(int(d) for d in digits):
        if digit:
            rest = width - i - 1
            below = "0" if digit == 1 else f"[0-{digit - 1}]"
            parts.append(digits[:i] + below + (f"[0-9]{{{rest}}}" if rest else ""))
    return "(?:" + "|".join(parts) + ")"


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
