"""Mixed load (section "mixed"): single-row latency while 10,000-row batches stream to the same server.

Each round measures, side by side on the shared benchmark server: (1) single-row p99 alone, under a light
paced load (wrk, a few connections, each waiting a moment after every answer); (2) one 10,000-row batch's
latency alone (sequential POSTs on one connection); (3) the same single-row load while every worker is
kept busy with batches, one keep-alive connection per worker POSTing the batch back to back. A worker
that scores a batch on its event loop makes every small request that landed on it wait for the whole
batch; the target asks that a small request's p99 under that load stay below a fifth of one batch.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import batch_body, batch_rows, single_row_bodies
from tools.bench.sections import BALANCE_ATTEMPTS, PREDICT, warm_batch
from tools.bench.server import HOST, BenchServer
from tools.bench.wrk import WrkResult, post, post_sequential, run_wrk

SMALL_CONNECTIONS = 8  # the single-row load: a few clients, paced, so it measures waiting, not capacity
THINK_MS = 25  # each connection's pause after an answer (about 300 req/s in all when nothing waits)
MIXED_VS_BATCH = Target("<=", 0.2)
STREAM_START_TIMEOUT = 120.0  # seconds for every batch stream to finish its first batch


class BatchStream:
    """One keep-alive connection per worker, each POSTing the batch back to back until the block ends or
    `max_seconds` pass, whichever is first.

    Which worker accepts a connection is the kernel's and the workers' race (an idle worker's accept loop
    takes every pending connection), so the streams start one at a time: each new connection is dialled
    while the streams before it keep their workers busy, and re-dialled until a worker without a stream
    holds it.
    """

    def __init__(self, server: BenchServer, body: bytes, *, max_seconds: float) -> None:
        self.server = server
        self.body = body
        self.max_seconds = max_seconds
        self.latency_s: list[float] = []
        self.errors: list[str] = []
        self.split: list[int] = []  # connections per worker once every stream runs
        self._stop = threading.Event()
        self._conns: list[http.client.HTTPConnection] = []
        self._threads: list[threading.Thread] = []

    def _accepted(self, expected: int, timeout: float = 2.0) -> list[int]:
        """Connections per worker, once the workers have accepted `expected` of them (or at the timeout)."""
        deadline = time.monotonic() + timeout
        split = self.server.connections()
        while sum(split) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
            split = self.server.connections()
        return split

    def _dial_next(self) -> http.client.HTTPConnection:
        for _ in range(BALANCE_ATTEMPTS):
            conn = http.client.HTTPConnection(HOST, self.server.port, timeout=120)
            conn.connect()
            split = self._accepted(len(self._conns) + 1)
            if max(split, default=0) <= 1:
                return conn
            conn.close()
            self._accepted(len(self._conns))  # the refused one is gone before the next try
        return conn  # lopsided after every attempt: measured anyway, and `split` shows it

    def _stream(self, conn: http.client.HTTPConnection) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            reply = post(conn, PREDICT, self.body)
            if reply.status != 200:
                self.errors.append(f"HTTP {reply.status}: {reply.body[:200]!r}")
                return
            self.latency_s.append(reply.seconds)

    def __enter__(self) -> BatchStream:
        for _ in range(self.server.workers):
            conn = self._dial_next()
            self._conns.append(conn)
            thread = threading.Thread(target=self._stream, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()
            time.sleep(0.05)  # its batch is on the way: that worker is busy reading and scoring it
        self.split = self._accepted(len(self._conns))
        deadline = time.monotonic() + STREAM_START_TIMEOUT
        while len(self.latency_s) < len(self._threads) and not self.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        self._close()
        if self.errors and kind is None:
            raise RuntimeError(f"batch stream failed: {self.errors[0]}")

    def _close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns = []


def _small(server: BenchServer, bodies: list[bytes], seconds: float) -> WrkResult:
    result = run_wrk(
        server.base_url + PREDICT, bodies, concurrency=SMALL_CONNECTIONS, seconds=seconds, think_ms=THINK_MS
    )
    assert result is not None  # (never aborted: no abort_if)
    if result.errors:
        raise RuntimeError(f"{result.errors} failed single-row requests; see {server.log_path}")
    return result


@dataclass
class Round:
    alone: WrkResult
    batch_s: list[float]
    mixed: WrkResult
    batch_under_load_s: list[float]
    split: list[int]

    @property
    def ratio(self) -> float:
        return self.mixed.p99_ms / (1e3 * median(self.batch_s))


def by_round(runs: list[Round], value: Callable[[Round], float]) -> list[float]:
    return [round(value(r), 3) for r in runs]


def _details(runs: list[Round]) -> dict[str, Any]:
    return {
        "p99_alone_ms_by_round": by_round(runs, lambda r: r.alone.p99_ms),
        "p99_mixed_ms_by_round": by_round(runs, lambda r: r.mixed.p99_ms),
        "max_mixed_ms_by_round": by_round(runs, lambda r: r.mixed.max_ms),
        "batch_alone_ms_by_round": by_round(runs, lambda r: 1e3 * median(r.batch_s)),
        "batch_under_load_ms_by_round": by_round(runs, lambda r: 1e3 * median(r.batch_under_load_s or [0.0])),
        "batch_connections_per_worker_by_round": [r.split for r in runs],
        "single_row_requests_alone": sum(r.alone.requests for r in runs),
        "single_row_requests_mixed": sum(r.mixed.requests for r in runs),
    }


def _measure(ctx: Context) -> tuple[list[Round], int]:
    opts, server = ctx.options, ctx.server()
    bodies, body = single_row_bodies(), batch_body(batch_rows(opts.batch_rows))
    warm_batch(server, PREDICT, body)
    _small(server, bodies, opts.warmup_seconds)
    reps = max(3, opts.batch_reps // max(1, opts.rounds))
    out: list[Round] = []
    for _ in range(opts.rounds):
        alone = _small(server, bodies, opts.seconds)
        batch_s = [r.seconds for r in post_sequential(HOST, server.port, PREDICT, body, reps)]
        with BatchStream(server, body, max_seconds=opts.seconds + 60) as stream:
            mixed = _small(server, bodies, opts.seconds)
        out.append(Round(alone, batch_s, mixed, stream.latency_s, stream.split))
    return out, len(body)


@section(
    "mixed", "1-row p99 while 10,000-row batches stream to every worker, vs 1-row p99 alone and one batch"
)
def mixed(ctx: Context) -> list[Result]:
    runs, body_bytes = _measure(ctx)
    load = f"{SMALL_CONNECTIONS} connections, {THINK_MS} ms think time"
    p99_alone = median(by_round(runs, lambda r: r.alone.p99_ms))
    p99_mixed = median(by_round(runs, lambda r: r.mixed.p99_ms))
    batch_ms = 1e3 * median([median(r.batch_s) for r in runs])
    alone = Result(
        "mixed",
        f"POST {PREDICT} 1 row alone ({load})",
        p99_alone,
        "ms",
        p50_ms=median(by_round(runs, lambda r: r.alone.p50_ms)),
        p99_ms=p99_alone,
    )
    batch = Result(
        "mixed",
        f"POST {PREDICT} {ctx.options.batch_rows:,} rows alone ({body_bytes / 1e6:.1f} MB), sequential",
        batch_ms,
        "ms",
        p50_ms=batch_ms,
    )
    under_load = Result(
        "mixed",
        f"POST {PREDICT} 1 row while {ctx.options.batch_rows:,}-row batches stream to every worker ({load})",
        p99_mixed,
        "ms",
        p50_ms=median(by_round(runs, lambda r: r.mixed.p50_ms)),
        p99_ms=p99_mixed,
        ratio=median([r.ratio for r in runs]),
        ratio_label="1-row p99 under batch load ÷ one batch alone",
        target=MIXED_VS_BATCH,
        details=_details(runs),
        note=_note(runs, p99_mixed / p99_alone),
    )
    return [alone, batch, under_load]


def _note(runs: list[Round], slowdown: float) -> str:
    under_load = [median(r.batch_under_load_s) for r in runs if r.batch_under_load_s]
    split = " ".join("/".join(map(str, r.split)) or "?" for r in runs)
    batch = f"{1e3 * median(under_load):.0f} ms" if under_load else "n/a"
    return (
        f"mixed load: single-row p99 is {slowdown:.1f}x its p99 alone; a batch takes {batch} while the "
        f"single rows run beside it; batch connections per worker, by round: {split}"
    )
