"""The Open Inference Protocol door next to /predict, on the same server in the same rounds:

- one row per request at fixed concurrency (wrk): the real example rows as V2 JSON requests, one input
  per column: the model's 10 (what its metadata lists: the target) and every column the /predict bodies
  carry (100 inputs, what PandasCodec sends for the whole frame: a figure), interleaved with /predict's
  single rows;
- the 10,000-row batch as one columnar V2 JSON request (100 inputs of 10,000 values) beside the same rows
  as /predict JSON, POSTed in turns on one keep-alive connection, end to end.

Every V2 answer's phat must have the bits of /predict's for the same rows.
"""

from __future__ import annotations

import http.client
import time
from typing import Any

import orjson

from service.model.schema import example_rows
from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import batch_body, batch_rows, single_row_bodies
from tools.bench.sections import PREDICT, LoadRun, _load, _load_result
from tools.bench.server import HOST, BenchServer
from tools.bench.wrk import post

INFER = "/v2/models/propensity/infer"
SINGLE_VS_PREDICT = Target(">=", 0.8)
BATCH_VS_PREDICT = Target("<=", 1.2)
MODEL_COLUMNS = ("x5", "x12", "x31", "x44", "x53", "x56", "x58", "x62", "x81", "x91")
# The target is for the request the model's metadata describes (its 10 inputs). The whole frame as 100
# inputs is timed beside it as a figure: 90 inputs the model does not read, each still named, shaped and
# checked (so that a near miss or a duplicate is refused), in a body 10x the 10-input one (4x /predict's).
WHOLE_FRAME = (
    "v2 100 inputs: the whole frame, 90 inputs beyond the model's metadata (timed, no target; the target is "
    "for the metadata's 10 inputs)"
)


def _datatype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    return "FP64" if present and all(type(v) in (int, float) for v in present) else "BYTES"


def v2_body(rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> bytes:
    """The rows as one V2 JSON request: one input per column, FP64 when a column holds only numbers (or
    nulls), else BYTES (the numbers among strings as their repr, which reads back to the same double)."""
    names = columns or tuple(dict.fromkeys(k for row in rows for k in row))
    inputs = []
    for name in names:
        values = [row.get(name) for row in rows]
        datatype = _datatype(values)
        if datatype == "BYTES":
            values = [v if v is None or isinstance(v, str) else repr(v) for v in values]
        inputs.append({"name": name, "datatype": datatype, "shape": [len(rows)], "data": values})
    return orjson.dumps({"inputs": inputs})


def _phat(answer: bytes) -> list[float]:
    body = orjson.loads(answer)
    if isinstance(body, dict) and "outputs" in body:
        return list(next(o for o in body["outputs"] if o["name"] == "phat")["data"])
    return [r["phat"] for r in (body if isinstance(body, list) else [body])]


def _check(server: BenchServer, pairs: list[tuple[bytes, bytes]]) -> None:
    """Each (/predict body, V2 body) pair: both 200, the same phat bits."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        for i, (predict, v2) in enumerate(pairs):
            a, b = post(conn, PREDICT, predict), post(conn, INFER, v2)
            if a.status != 200 or b.status != 200 or _phat(a.body) != _phat(b.body):
                raise RuntimeError(
                    f"V2 body {i}: HTTP {b.status} {b.body[:200]!r} does not score as /predict"
                )
    finally:
        conn.close()


def _single(ctx: Context, server: BenchServer) -> list[Result]:
    rows = example_rows()["rows"]
    plan: dict[str, tuple[str, list[bytes]]] = {
        "predict": (PREDICT, single_row_bodies()),
        "v2, the model's 10 inputs": (INFER, [v2_body([r], MODEL_COLUMNS) for r in rows]),
        "v2, 100 inputs": (INFER, [v2_body([r]) for r in rows]),
    }
    for _, bodies in list(plan.values())[1:]:
        _check(server, list(zip(plan["predict"][1], bodies, strict=True)))
    opts = ctx.options
    for path, bodies in plan.values():  # warm-up
        _load(server, path, bodies, ctx, opts.warmup_seconds)
    names = list(plan)
    runs: dict[str, list[LoadRun]] = {n: [] for n in names}
    for r in range(opts.rounds):  # interleaved, rotating the order so no endpoint always goes first
        for name in names[r % len(names) :] + names[: r % len(names)]:
            path, bodies = plan[name]
            runs[name].append(_load(server, path, bodies, ctx, opts.seconds))
    c = opts.concurrency
    out = [_load_result(f"POST {PREDICT}, 1 row, c={c} (beside V2)", runs["predict"])]
    for name in names[1:]:
        result = _load_result(f"POST {INFER}, 1 row as {name.removeprefix('v2, ')}, c={c}", runs[name])
        result.ratio = median(
            [a.wrk.rps / b.wrk.rps for a, b in zip(runs[name], runs["predict"], strict=True)]
        )
        result.ratio_label = "V2 ÷ /predict req/s"
        if name == "v2, 100 inputs":  # a figure, not the target: see WHOLE_FRAME
            result.note = WHOLE_FRAME
        else:
            result.target = SINGLE_VS_PREDICT
        out.append(result)
    return out


def _timed(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    started = time.perf_counter()
    reply = post(conn, path, body)
    if reply.status != 200:
        raise RuntimeError(f"POST {path}: HTTP {reply.status}: {reply.body[:300]!r}")
    return time.perf_counter() - started


def _batch(ctx: Context, server: BenchServer) -> Result:
    n = ctx.options.batch_rows
    rows = batch_rows(n)
    predict, v2 = batch_body(rows), v2_body(rows)
    for _ in range(2 * server.workers):  # warm: fresh connections, so each worker is likely to see both
        _check(server, [(predict, v2)])
    times: dict[str, list[float]] = {PREDICT: [], INFER: []}
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        for _ in range(ctx.options.batch_reps):
            for path, body in ((PREDICT, predict), (INFER, v2)):
                times[path].append(_timed(conn, path, body))
    finally:
        conn.close()
    plain, columnar = times[PREDICT], times[INFER]
    return Result(
        section="v2",
        name=f"POST {INFER}, {n:,} rows columnar JSON (100 inputs), sequential, end to end",
        value=1e3 * median(columnar),
        unit="ms",
        p50_ms=1e3 * median(columnar),
        ratio=median([a / b for a, b in zip(columnar, plain, strict=True)]),
        ratio_label="V2 ÷ /predict JSON latency",
        target=BATCH_VS_PREDICT,
        note=(
            f"v2: {n:,} rows; /predict JSON body {len(predict) / 1e6:.1f} MB takes "
            f"{1e3 * median(plain):.0f} ms (median) beside the V2 body of {len(v2) / 1e6:.1f} MB; every phat "
            "has /predict's bits"
        ),
        details={
            "ms": [round(1e3 * s, 1) for s in columnar],
            "predict_ms": [round(1e3 * s, 1) for s in plain],
        },
    )


@section("v2", "Open Inference Protocol: 1-row V2 JSON req/s and 10,000 rows columnar JSON vs /predict")
def v2_section(ctx: Context) -> list[Result]:
    server = ctx.server()
    out = [*_single(ctx, server), _batch(ctx, server)]
    for result in out:
        result.section = "v2"
    return out
