"""Container HEALTHCHECK: exit 0 iff GET /health/ready on this container's server answers 200.

Standard library only (the image has no curl). Bypasses any *_proxy variables. With PROPENSITY_UNIX_SOCKET
set it asks through that socket, which only this container's server listens on: on a shared host network
tasks may share a TCP port (PROPENSITY_REUSE_PORT), and a TCP probe could be answered by another task.
"""

import http.client
import os
import socket
import sys
from collections.abc import Mapping


def port(env: Mapping[str, str]) -> int:
    """The port the server binds: Settings.listen_port, read without importing the service (fast)."""
    base = env.get("PROPENSITY_SLOT_PORT_BASE")
    if base:  # one port per task on a shared host network: base + Swarm task slot
        return int(base) + int(env["PROPENSITY_TASK_SLOT"])
    return int(env.get("PROPENSITY_PORT", "1313"))


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


def main() -> int:
    timeout = float(os.environ.get("HEALTHCHECK_TIMEOUT", "4"))
    unix = os.environ.get("PROPENSITY_UNIX_SOCKET")
    if unix:
        where, conn = f"unix:{unix}", UnixHTTPConnection(unix, timeout)
    else:
        where = f"127.0.0.1:{port(os.environ)}"
        conn = http.client.HTTPConnection("127.0.0.1", port(os.environ), timeout=timeout)
    try:
        conn.request("GET", "/health/ready")
        status = conn.getresponse().status
    except Exception as exc:  # any failure (refused, timeout) means unhealthy
        print(f"unhealthy: GET {where}/health/ready: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    if status != 200:
        print(f"unhealthy: GET {where}/health/ready answered {status}", file=sys.stderr)
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
