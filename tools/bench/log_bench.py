"""The prediction log's cost (section "log"): the same server config with the log on (SQLite, the embedded
default) and off, side by side and interleaved; a /feedback call of 10,000 labels; and the performance
query (GET /performance's work: read the log, join the labels, evaluate by day) over 1 million logged rows.

The shared benchmark server runs with the log off (the other sections measure scoring alone); this section
starts a second one with it on. Both stay up while the rounds alternate between them, so a round's two
runs see the same machine. After the runs the log is checked to hold every row the section sent.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import numpy as np
import orjson

from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import batch_body, batch_rows, single_row_bodies
from tools.bench.sections import PREDICT, LoadRun, _load, _load_result, metrics_text, warm_batch
from tools.bench.server import HOST, BenchServer
from tools.bench.wrk import post

SINGLE_ON_VS_OFF = Target(">=", 0.85)
BATCH_ON_VS_OFF = Target("<=", 1.25)
BATCH_RUN = 3  # back-to-back 10,000-row POSTs to one server per turn: the writer's work lands among them
LOGGED_ROWS = 1_000_000
LOGGED_DAYS = 30
QUERY_REPS = 3


def _post_ok(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[float, str, bytes]:
    """(seconds, the answer's X-Request-ID, its body)."""
    reply = post(conn, path, body)
    if reply.status not in (200, 202):
        raise RuntimeError(f"POST {path}: HTTP {reply.status}: {reply.body[:300]!r}")
    return reply.seconds, reply.request_id, reply.body


def _logged_rows(server: BenchServer) -> int:
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        conn.request("GET", "/performance?by=all&since=1d")
        body = orjson.loads(conn.getresponse().read())
    finally:
        conn.close()
    cohorts = body.get("cohorts") or []
    return int(cohorts[0]["predictions"]) if cohorts else 0


def _wait_logged(server: BenchServer, rows: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    logged = _logged_rows(server)
    while logged < rows and time.monotonic() < deadline:
        time.sleep(0.5)
        logged = _logged_rows(server)
    return logged


@section("log", "prediction log on vs off: 1-row req/s and 10,000-row latency; /feedback; 1M-row query")
def prediction_log(ctx: Context) -> list[Result]:
    opts = ctx.options
    off = ctx.server()
    env = ctx.server_env(
        PROPENSITY_PREDICTION_LOG_ENABLED="true",
        PROPENSITY_PREDICTION_LOG_URL=f"sqlite:///{ctx.workdir / 'bench-log.sqlite'}",
    )
    on = ctx._stack.enter_context(
        BenchServer(env, workers=opts.workers, log_path=ctx.workdir / "gunicorn-log-on.log")
    )
    results = _single(ctx, off, on)
    batch, feedback = _batch_and_feedback(ctx, off, on)
    results += [batch, feedback]
    time.sleep(1.0)  # the workers' metric buffers flush every 0.25 s
    sent = _rows_scored(on)
    logged = _wait_logged(on, sent)
    batch.details["rows_sent_to_the_log_on_server"] = sent
    batch.details["rows_in_its_log"] = logged
    if logged < sent:
        raise RuntimeError(f"the log holds {logged} of the {sent} rows sent")
    results.append(_query(ctx.workdir))
    return results


def _single(ctx: Context, off: BenchServer, on: BenchServer) -> list[Result]:
    opts = ctx.options
    bodies = single_row_bodies()
    for server in (off, on):
        _load(server, PREDICT, bodies, ctx, opts.warmup_seconds)
    runs: dict[str, list[LoadRun]] = {"off": [], "on": []}
    servers = {"off": off, "on": on}
    for r in range(opts.rounds):
        for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
            runs[name].append(_load(servers[name], PREDICT, bodies, ctx, opts.seconds))
    c = opts.concurrency
    without = _load_result(f"POST {PREDICT}, 1 row, c={c}, prediction log off", runs["off"])
    with_log = _load_result(f"POST {PREDICT}, 1 row, c={c}, prediction log on (SQLite)", runs["on"])
    with_log.ratio = median([a.wrk.rps / b.wrk.rps for a, b in zip(runs["on"], runs["off"], strict=True)])
    with_log.ratio_label, with_log.target = "log on ÷ off req/s", SINGLE_ON_VS_OFF
    for result in (without, with_log):
        result.section = "log"
    return [without, with_log]


def _batch_and_feedback(ctx: Context, off: BenchServer, on: BenchServer) -> tuple[Result, Result]:
    """10,000-row latency on each server, interleaved in turns of BATCH_RUN; then the labels of the log-on
    server's batches, 10,000 per /feedback call."""
    rows = batch_rows(ctx.options.batch_rows)
    body = batch_body(rows)
    for server in (off, on):
        warm_batch(server, PREDICT, body)
    latency: dict[str, list[float]] = {"off": [], "on": []}
    request_ids: list[str] = []
    phat: list[float] = []
    turns = max(2, ctx.options.batch_reps // BATCH_RUN)
    for turn in range(turns):
        for name, server in (("off", off), ("on", on)) if turn % 2 == 0 else (("on", on), ("off", off)):
            conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
            try:
                for _ in range(BATCH_RUN):
                    seconds, request_id, answer = _post_ok(conn, PREDICT, body)
                    latency[name].append(seconds)
                    if name == "on":
                        request_ids.append(request_id)
                        phat = [r["phat"] for r in orjson.loads(answer)]
            finally:
                conn.close()
    ratio = median(latency["on"]) / median(latency["off"])
    batch = Result(
        section="log",
        name=f"POST {PREDICT}, {len(rows):,} rows, log on vs off, in turns of {BATCH_RUN} back to back",
        value=1e3 * median(latency["on"]),
        unit="ms",
        p50_ms=1e3 * median(latency["on"]),
        ratio=ratio,
        ratio_label="log on ÷ off latency",
        target=BATCH_ON_VS_OFF,
        details={
            "on_ms": [round(1e3 * s, 1) for s in latency["on"]],
            "off_ms": [round(1e3 * s, 1) for s in latency["off"]],
        },
    )
    return batch, _feedback(on, request_ids, np.array(phat))


def _rows_scored(server: BenchServer) -> int:
    """Rows the server scored, by its own count (every one of them is to be in its log)."""
    for line in metrics_text(server).splitlines():
        if line.startswith("propensity_rows_scored_total "):
            return int(float(line.split()[1]))
    return 0


def _feedback(server: BenchServer, request_ids: list[str], phat: np.ndarray) -> Result:
    rng = np.random.default_rng(26)
    seconds: list[float] = []
    counts: list[dict[str, int]] = []
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        for request_id in request_ids:
            labels = (rng.random(phat.shape[0]) < phat).astype(int)
            items = [{"request_id": request_id, "row": i, "label": int(y)} for i, y in enumerate(labels)]
            took, _, answer = _post_ok(conn, "/feedback", orjson.dumps(items))
            seconds.append(took)
            counts.append(orjson.loads(answer))
    finally:
        conn.close()
    matched = sum(c["matched"] for c in counts)
    return Result(
        section="log",
        name=f"POST /feedback, {phat.shape[0]:,} labels by (request_id, row), end to end (SQLite)",
        value=1e3 * median(seconds),
        unit="ms",
        p50_ms=1e3 * median(seconds),
        details={"ms": [round(1e3 * s, 1) for s in seconds], "matched": matched, "calls": len(seconds)},
    )


def _query(workdir: Path) -> Result:
    """GET /performance's work over LOGGED_ROWS rows: read and join, then evaluate by day."""
    from service.monitoring.performance import evaluate
    from service.monitoring.prediction_store import PredictionStore

    store = PredictionStore.open(f"sqlite:///{workdir / 'million.sqlite'}")
    store.migrate()
    now = time.time()
    rng = np.random.default_rng(7)
    n = LOGGED_ROWS
    phat = rng.beta(2, 5, n)
    at = now - rng.random(n) * LOGGED_DAYS * 86_400
    versions = np.where(rng.random(n) < 0.5, "v1", "v2")
    chunk = 100_000
    for start in range(0, n, chunk):
        rows = [
            (
                f"b{start}",
                f"r{i // 100}",
                i % 100,
                None,
                None,
                versions[i],
                at[i],
                phat[i],
                int(phat[i] > 0.4),
                "{}",
            )
            for i in range(start, min(n, start + chunk))
        ]
        store.write(rows)
    labelled = rng.random(n) < 0.6
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO labels (request_id, row_index, label, observed_at, received_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [
                (f"r{i // 100}", i % 100, int(rng.random() < phat[i]), None, now)
                for i in np.flatnonzero(labelled)
            ],
        )
    read_s, evaluate_s = [], []
    for _ in range(QUERY_REPS):
        t0 = time.perf_counter()
        frame = store.frame(now - (LOGGED_DAYS + 1) * 86_400)
        t1 = time.perf_counter()
        evaluate(frame, cutoff=0.4, by="day")
        t2 = time.perf_counter()
        read_s.append(t1 - t0)
        evaluate_s.append(t2 - t1)
    store.close()
    total = [a + b for a, b in zip(read_s, evaluate_s, strict=True)]
    return Result(
        section="log",
        name=f"performance query, {n:,} logged rows (60% labelled, {LOGGED_DAYS} days, 2 versions, by day)",
        value=1e3 * median(total),
        unit="ms",
        note=(
            f"performance query: read and join {1e3 * median(read_s):.0f} ms (SQLite), evaluate "
            f"{1e3 * median(evaluate_s):.0f} ms, median of {QUERY_REPS}"
        ),
        details={
            "read_ms": [round(1e3 * s) for s in read_s],
            "evaluate_ms": [round(1e3 * s) for s in evaluate_s],
        },
    )
