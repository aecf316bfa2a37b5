"""Reason codes on vs off: the same 10,000-row batch POSTed to /predict and /predict?reasons=3, in turns
on one keep-alive connection, so both see the same machine at the same moments."""

from __future__ import annotations

import http.client

import orjson

from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import batch_body, batch_rows
from tools.bench.sections import PREDICT, warm_batch
from tools.bench.server import HOST
from tools.bench.wrk import post

REASONS_VS_PLAIN = Target("<=", 1.3)
K = 3


def _timed(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[float, bytes]:
    reply = post(conn, path, body)
    if reply.status != 200:
        raise RuntimeError(f"POST {path}: HTTP {reply.status}: {reply.body[:300]!r}")
    return reply.seconds, reply.body


@section("reasons", "reason codes: 10,000 rows with ?reasons=3 vs without, end to end")
def reasons(ctx: Context) -> list[Result]:
    server = ctx.server()
    body = batch_body(batch_rows(ctx.options.batch_rows))
    with_reasons = f"{PREDICT}?reasons={K}"
    plain = orjson.loads(warm_batch(server, PREDICT, body))
    explained = orjson.loads(warm_batch(server, with_reasons, body))
    if [r["phat"] for r in explained] != [r["phat"] for r in plain] or any(
        len(r["reasons"]) != K for r in explained
    ):
        raise RuntimeError("reason codes changed a phat, or rows lack their reasons")
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    off, on = [], []
    try:
        for _ in range(ctx.options.batch_reps):
            off.append(_timed(conn, PREDICT, body)[0])
            on.append(_timed(conn, with_reasons, body)[0])
    finally:
        conn.close()
    n = f"{len(plain):,} rows"
    return [
        Result(
            section="reasons",
            name=f"POST {with_reasons}, {n}, sequential, end to end",
            value=1e3 * median(on),
            unit="ms",
            p50_ms=1e3 * median(on),
            ratio=median([a / b for a, b in zip(on, off, strict=True)]),
            ratio_label="reasons on ÷ off latency",
            target=REASONS_VS_PLAIN,
            note=f"reasons: without them the same body takes {1e3 * median(off):.0f} ms (median)",
            details={"on_ms": [round(1e3 * s, 1) for s in on], "off_ms": [round(1e3 * s, 1) for s in off]},
        )
    ]
