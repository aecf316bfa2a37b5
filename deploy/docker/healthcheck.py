"""Container HEALTHCHECK: exit 0 iff GET /health/ready on this container answers 200.

Standard library only (the image has no curl). Bypasses any *_proxy variables.
"""

import os
import sys
import urllib.request
from collections.abc import Mapping


def port(env: Mapping[str, str]) -> int:
    """The port the server binds: Settings.listen_port, read without importing the service (fast)."""
    base = env.get("PROPENSITY_SLOT_PORT_BASE")
    if base:  # one port per task on a shared host network: base + Swarm task slot
        return int(base) + int(env["PROPENSITY_TASK_SLOT"])
    return int(env.get("PROPENSITY_PORT", "1313"))


def main() -> int:
    url = f"http://127.0.0.1:{port(os.environ)}/health/ready"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "4"))) as resp:
            return 0 if resp.status == 200 else 1
    except Exception as exc:  # any failure (refused, timeout, 503) means unhealthy
        print(f"unhealthy: GET {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
