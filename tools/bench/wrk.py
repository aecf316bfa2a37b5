"""Load generators: wrk for fixed-concurrency throughput, a plain keep-alive client for big batches.

wrk (C, one thread) drives the single-row runs: a Python client would eat the CPU the server needs on a
2-core machine. Its Lua script cycles through pre-formatted POST requests and prints one JSON summary.
"""

from __future__ import annotations

import http.client
import json
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WRK_MARK = "BENCH_SUMMARY "

_LUA = """
local paths = {%(paths)s}
local requests_ = {}
local i = 0

function init(args)
  for k, path in ipairs(paths) do
    local f = assert(io.open(path, "rb"))
    local body = f:read("*a")
    f:close()
    requests_[k] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
  end
end

function request()
  i = i %% #requests_ + 1
  return requests_[i]
end
%(delay)s

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%.1f}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors, timeouts and non-2xx/3xx responses
    client_cpu_s: float  # CPU used by wrk itself

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (the benchmark's load generator)")
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str,
    bodies: list[bytes],
    *,
    concurrency: int,
    seconds: float,
    abort_if: Callable[[], bool] | None = None,
    check_after: float = 0.5,
    think_ms: int = 0,
) -> WrkResult | None:
    """POST the bodies round-robin at `concurrency` open connections for `seconds`; wrk's own summary.

    `abort_if` is asked once, `check_after` seconds in: if it says so, wrk is stopped and None returned.
    `think_ms` > 0 makes each connection wait that long after a response before its next request (a paced,
    light load: latency is measured, not the server's capacity).
    """
    wrk = require_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        paths = []
        for n, body in enumerate(bodies):
            path = Path(tmp) / f"body{n}.json"
            path.write_bytes(body)
            paths.append(json.dumps(str(path)))
        script = Path(tmp) / "post.lua"
        delay = f"function delay()\n  return {think_ms}\nend\n" if think_ms > 0 else ""
        script.write_text(_LUA % {"paths": ", ".join(paths), "mark": WRK_MARK, "delay": delay})
        cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
        before = _children_cpu()
        proc = subprocess.Popen(
            [*cmd, "-s", str(script), url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if abort_if is not None:
            try:
                proc.wait(timeout=check_after)
            except subprocess.TimeoutExpired:
                if abort_if():
                    proc.kill()
                    proc.communicate()
                    return None
        stdout, stderr = proc.communicate()
        client_cpu = _children_cpu() - before
    line = next((ln for ln in stdout.splitlines() if ln.startswith(WRK_MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr.strip() or stdout.strip()}")
    s = json.loads(line[len(WRK_MARK) :])
    return WrkResult(
        requests=s["requests"],
        seconds=s["duration_us"] / 1e6,
        p50_ms=s["p50_us"] / 1e3,
        p90_ms=s["p90_us"] / 1e3,
        p99_ms=s["p99_us"] / 1e3,
        max_ms=s["max_us"] / 1e3,
        errors=sum(s[k] for k in ("connect", "read", "write", "status", "timeout")),
        client_cpu_s=client_cpu,
    )


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    seconds: float
    request_id: str = ""  # the answer's X-Request-ID


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> Response:
    """One POST on a keep-alive connection, timed from the first byte sent to the last byte received."""
    started = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    seconds = time.perf_counter() - started
    return Response(reply.status, data, seconds, reply.getheader("x-request-id") or "")


def post_sequential(host: str, port: int, path: str, body: bytes, times: int) -> list[Response]:
    """POST the same body `times` times, one after the other, on one keep-alive connection."""
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        out = []
        for _ in range(times):
            response = post(conn, path, body)
            if response.status != 200:
                raise RuntimeError(f"POST {path}: HTTP {response.status}: {response.body[:300]!r}")
            out.append(response)
        return out
    finally:
        conn.close()
