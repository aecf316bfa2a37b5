"""The Docker Swarm stacks' generated config files, and the single-host test variant's ports.

    python -m tools.swarm_config           # rewrite deploy/swarm/nginx.conf, nginx.test.conf and
                                                 # prometheus.test.yml
    python -m tools.swarm_config --check   # exit 1 if a committed file is stale (make test checks)

Both nginx configs come from nginx/nginx.conf.template, the local cluster's, so the three deployments
share one proxy policy (retries, timeouts, body limit, gzip, request ids, problem+json errors). They
differ only in what each deployment forces:

- production (swarm-stack.yml, overlay network, official nginx image >= 1.27.3): listens on :1313 in
  its own network namespace; one upstream entry `tasks.api` re-resolved through Docker's DNS (127.0.0.11),
  so every healthy api task is a peer with its own keepalive connections and failure state.
- test (swarm-stack.test.yml, host network, loopback only, Debian's nginx 1.22 which cannot re-resolve):
  one upstream entry per api task slot, 127.0.0.1:(SLOT_PORT_BASE + slot) for slots 1..MAX_SLOTS. A
  slot with no task refuses at once on loopback, is skipped for fail_timeout, and costs no request.

The test prometheus config is deploy/prometheus/prometheus.yml (the production one) with its Docker
discovery replaced by static loopback targets: tasks on the host network have no overlay address to
discover.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from tools.cluster_config import (
    NGINX_TEMPLATE,
    REQUIRE_API_KEY,
    ClusterConfig,
    api_keys_map,
    proxy_policy_values,
    rate_limit_values,
    render,
)
from tools.paths import REPO

SWARM_DIR = REPO / "deploy" / "swarm"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"

# --- the single-host test variant: fixed loopback ports (below the ephemeral range 32768-60999) --------
HOST = "127.0.0.1"
NGINX_PORT = 18313
SLOT_PORT_BASE = 18300  # api task in slot N listens on 18300 + N
MAX_SLOTS = 8  # nginx and prometheus know slots 1..8: the test variant runs at most 8 api tasks
REDIS_PORT = 18379
PROMETHEUS_PORT = 18390
POSTGRES_PORT = 18432
AUTOSCALER_METRICS_PORT = 18391

API_PORT = 1313  # production: every api task and nginx listen on 1313 in their own network namespace
API_KEYS_SECRET = "/run/secrets/api_keys"  # the api_keys secret's target in both stack files
# Per API key, in each nginx replica (production runs 2 behind the routing mesh, so a key gets up to twice
# this): a quarter of the single-row rate the benchmark got through one nginx in front of two replicas
# (~4,000 req/s, docs/benchmark.md), so one runaway client (a retry loop, a bug) cannot take a whole
# nginx, while a batch client is never near it (big calls are bounded by the large-request limit). The
# burst is 2 s at the rate, so a client's reconnect storm passes; nodelay: nothing waits in nginx.
RATE_LIMIT_PER_SECOND = 1000
RATE_LIMIT_BURST = 2000


def slot_ports() -> list[int]:
    return [SLOT_PORT_BASE + slot for slot in range(1, MAX_SLOTS + 1)]


def loopback_ports() -> dict[str, int]:
    """Every loopback port the test variant listens on, by name."""
    ports = {
        "nginx": NGINX_PORT,
        "redis": REDIS_PORT,
        "prometheus": PROMETHEUS_PORT,
        "postgres": POSTGRES_PORT,
    }
    ports.update({f"api.{slot}": port for slot, port in enumerate(slot_ports(), start=1)})
    return ports


def _common_values() -> dict[str, str]:
    defaults = ClusterConfig(run_dir=Path("/"), artifacts_dir=Path("/"))  # the cluster's defaults
    return {
        "WORKER_PROCESSES": "auto",
        "ERROR_LOG": "/dev/stderr",  # container logs: `docker service logs <stack>_nginx`
        "ACCESS_LOG": "/dev/stdout",
        # Temp files (large bodies, the rest of big answers): the image's compiled-in paths, in the
        # container's writable layer (/var/cache/nginx in the official image, /var/lib/nginx in Debian's)
        "TEMP_PATHS": "    # temp files: the image's compiled-in paths",
        # per client key, not address: behind Swarm's routing mesh every client has the mesh's address
        **rate_limit_values("$api_client", RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST, off=""),
        # X-API-Key -> client name, from the api_keys secret: lines of `"<key>" <client-name>;`
        "API_KEYS": api_keys_map(API_KEYS_SECRET),
        "REQUIRE_API_KEY": REQUIRE_API_KEY,
        **proxy_policy_values(defaults),
    }


def nginx_conf(variant: str) -> str:
    """The stack's nginx.conf: variant "production" (swarm-stack.yml) or "test" (swarm-stack.test.yml)."""
    values = _common_values()
    if variant == "production":
        values |= {
            "USER": "user nginx;  # the official image's user",
            "PID_FILE": "/var/run/nginx.pid",
            "LISTEN": str(API_PORT),
            "UPSTREAM_SERVERS": (
                "        # Here: every healthy api task. Docker's DNS answers tasks.api with one address\n"
                "        # per task and nginx (OSS >= 1.27.3) re-resolves it every 5 s, so scaled and\n"
                "        # replaced tasks join and leave without a reload.\n"
                "        resolver 127.0.0.11 valid=5s ipv6=off;\n"
                f"        server tasks.api:{API_PORT} resolve max_fails=3 fail_timeout=2s;"
            ),
            "RETRY_TRIES": "3",
        }
    elif variant == "test":
        servers = "\n".join(
            f"        server {HOST}:{port} max_fails=3 fail_timeout=2s;" for port in slot_ports()
        )
        values |= {
            "USER": "user www-data;  # Debian's nginx user",
            "PID_FILE": "/run/nginx.pid",
            "LISTEN": f"{HOST}:{NGINX_PORT}",
            "UPSTREAM_SERVERS": (
                f"        # Here: one entry per api task slot (port {SLOT_PORT_BASE} + slot). A slot\n"
                "        # without a task refuses at once on loopback: a retry, never a failed request.\n"
                + servers
            ),
            "RETRY_TRIES": "0",  # no limit but the number of entries: every slot at most once per request
        }
    else:
        raise ValueError(f"unknown variant {variant!r}: production or test")
    header = (
        f"# GENERATED by `python -m tools.swarm_config` from nginx/nginx.conf.template ({variant}\n"
        "# variant of the Swarm stack). Do not edit: change the template or tools/swarm_config.py.\n"
    )
    return header + render(NGINX_TEMPLATE.read_text(), values)


def prometheus_test_yml(production: str | None = None) -> str:
    """deploy/prometheus/prometheus.yml with static loopback targets instead of Docker discovery."""
    config: dict[str, Any] = yaml.safe_load(production or PROMETHEUS_YML.read_text())
    jobs: list[dict[str, Any]] = [
        {"job_name": "prometheus", "static_configs": [{"targets": [f"{HOST}:{PROMETHEUS_PORT}"]}]},
        {
            "job_name": "propensity",
            "static_configs": [
                {"targets": [f"{HOST}:{port}"], "labels": {"replica": f"api.{slot}"}}
                for slot, port in enumerate(slot_ports(), start=1)
            ],
        },
        {
            "job_name": "propensity-autoscaler",
            "static_configs": [{"targets": [f"{HOST}:{AUTOSCALER_METRICS_PORT}"]}],
        },
    ]
    kept = [
        job
        for job in config.get("scrape_configs", [])
        if job.get("job_name") not in {"prometheus", "swarm-tasks", *(j["job_name"] for j in jobs)}
        and not any(key.endswith("_sd_configs") for key in job)
    ]
    config["scrape_configs"] = jobs + kept
    config.setdefault("global", {}).setdefault("external_labels", {})["stack"] = "propensity-test"
    header = (
        "# GENERATED by `python -m tools.swarm_config` from deploy/prometheus/prometheus.yml for\n"
        "# swarm-stack.test.yml: host networking, so static loopback targets (api task slot N on\n"
        f"# {SLOT_PORT_BASE} + N) instead of Docker discovery. Do not edit: change the production file.\n"
    )
    body: str = yaml.safe_dump(config, sort_keys=False, width=110, default_flow_style=None)
    return header + body


def generated() -> dict[Path, str]:
    return {
        SWARM_DIR / "nginx.conf": nginx_conf("production"),
        SWARM_DIR / "nginx.test.conf": nginx_conf("test"),
        SWARM_DIR / "prometheus.test.yml": prometheus_test_yml(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.relative_to(REPO))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"stale: {', '.join(map(str, stale))}; run `python -m tools.swarm_config`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
