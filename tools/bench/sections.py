"""The built-in sections: (a) single-row throughput and (b) the 10,000-row batch, each next to the naive
baseline (c). Measurements that are compared are taken side by side, interleaved, in the same run."""

from __future__ import annotations

import http.client
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import all_strings, batch_body, batch_rows, single_row_bodies
from tools.bench.server import HOST, BenchServer
from tools.bench.wrk import WrkResult, post, post_sequential, run_wrk

HELLO, PREDICT, NAIVE = "/bench/hello", "/predict", "/bench/naive"
SINGLE_VS_HELLO = Target(">=", 0.6)
SINGLE_VS_NAIVE = Target(">=", 50.0)
BATCH_VS_FLOOR = Target("<=", 1.5)
PHAT_TOLERANCE = 1e-9


# --- (a) + (c): single rows at fixed concurrency ------------------------------------------------------------
@dataclass(frozen=True)
class LoadRun:
    wrk: WrkResult
    worker_cpu_s: list[float]  # per worker, during the run
    connections: list[int]  # per worker, sampled once during the run (the kernel decides who accepts)
    attempts: int = 1  # runs started until the connections were spread (see BALANCE_ATTEMPTS)

    @property
    def cpu_ms_per_req(self) -> float:
        return 1e3 * sum(self.worker_cpu_s) / max(1, self.wrk.requests)


# The kernel decides which worker accepts each of wrk's connections, and one worker often takes all 16
# at once: such a run measures one core of the two. A run whose split is lopsided (a worker holding less
# than half its fair share) is stopped half a second in and started again (this many runs at most).
BALANCE_ATTEMPTS = 8


def lopsided(connections: list[int], concurrency: int) -> bool:
    return bool(connections) and min(connections) < concurrency / (2 * len(connections))


def _load(server: BenchServer, path: str, bodies: list[bytes], ctx: Context, seconds: float) -> LoadRun:
    concurrency = ctx.options.concurrency
    sampled: list[list[int]] = []  # the split of each attempt, sampled half a second in

    def unbalanced() -> bool:
        sampled.append(server.connections())
        return len(sampled) < BALANCE_ATTEMPTS and lopsided(sampled[-1], concurrency)

    for _ in range(BALANCE_ATTEMPTS):
        before = server.worker_cpu()
        result = run_wrk(
            server.base_url + path, bodies, concurrency=concurrency, seconds=seconds, abort_if=unbalanced
        )
        if result is not None:
            break
    assert result is not None
    after = server.worker_cpu()
    if result.errors:
        raise RuntimeError(f"{path}: {result.errors} failed requests under load; see {server.log_path}")
    cpu = [after[pid] - before.get(pid, 0.0) for pid in sorted(after)]
    return LoadRun(result, cpu, sampled[-1] if sampled else [], max(1, len(sampled)))


def _phat(body: bytes) -> float:
    return float(orjson.loads(body)["phat"])


def check_single_rows(server: BenchServer, bodies: list[bytes]) -> float:
    """Every endpoint answers 200 to every body; /predict and naive agree on phat. Returns max |Δphat|."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    worst = 0.0
    try:
        for body in bodies:
            answers = {path: post(conn, path, body) for path in (HELLO, PREDICT, NAIVE)}
            bad = {p: (r.status, r.body[:200]) for p, r in answers.items() if r.status != 200}
            if bad:
                raise RuntimeError(f"single-row check failed: {bad}")
            worst = max(worst, abs(_phat(answers[PREDICT].body) - _phat(answers[NAIVE].body)))
    finally:
        conn.close()
    if worst > PHAT_TOLERANCE:
        raise RuntimeError(f"/predict and the naive baseline disagree on phat by {worst:.3g}")
    return worst


def _summary(runs: list[LoadRun]) -> dict[str, Any]:
    return {
        "req_per_s_by_round": [round(r.wrk.rps, 1) for r in runs],
        "p50_ms_by_round": [round(r.wrk.p50_ms, 3) for r in runs],
        "p99_ms_by_round": [round(r.wrk.p99_ms, 3) for r in runs],
        "requests": sum(r.wrk.requests for r in runs),
        "connections_per_worker_by_round": [r.connections for r in runs],
        "attempts_by_round": [r.attempts for r in runs],
        "worker_cpu_share_by_round": [[round(c / r.wrk.seconds, 2) for c in r.worker_cpu_s] for r in runs],
        "wrk_cpu_share": [round(r.wrk.client_cpu_s / r.wrk.seconds, 2) for r in runs],
    }


def _load_result(name: str, runs: list[LoadRun]) -> Result:
    return Result(
        section="single",
        name=name,
        value=median([r.wrk.rps for r in runs]),
        unit="req/s",
        p50_ms=median([r.wrk.p50_ms for r in runs]),
        p99_ms=median([r.wrk.p99_ms for r in runs]),
        cpu_ms_per_req=median([r.cpu_ms_per_req for r in runs]),
        details=_summary(runs),
    )


@section("single", "(a)+(c) 1-row POST req/s, p50/p99 at fixed concurrency: /predict vs hello-world vs naive")
def single_row(ctx: Context) -> list[Result]:
    opts = ctx.options
    server = ctx.server()
    bodies = single_row_bodies()
    worst = check_single_rows(server, bodies)
    paths = [HELLO, PREDICT, NAIVE]
    for path in paths:  # warm-up: every worker, every endpoint, a few hundred requests or more
        _load(server, path, bodies, ctx, opts.warmup_seconds)
    runs: dict[str, list[LoadRun]] = {p: [] for p in paths}
    for r in range(opts.rounds):  # interleaved, rotating the order so no endpoint always goes first
        for path in paths[r % 3 :] + paths[: r % 3]:
            runs[path].append(_load(server, path, bodies, ctx, opts.seconds))

    c = opts.concurrency
    hello = _load_result(f"hello-world POST {HELLO} (same 1-row bodies), c={c}", runs[HELLO])
    predict = _load_result(f"POST {PREDICT}, 1 row, c={c}", runs[PREDICT])
    predict.ratio = median([p.wrk.rps / h.wrk.rps for p, h in zip(runs[PREDICT], runs[HELLO], strict=True)])
    predict.ratio_label, predict.target = "/predict ÷ hello req/s", SINGLE_VS_HELLO
    naive = _load_result(f"naive POST {NAIVE}, 1 row, c={c}", runs[NAIVE])
    naive.ratio = median([p.wrk.rps / n.wrk.rps for p, n in zip(runs[PREDICT], runs[NAIVE], strict=True)])
    naive.ratio_label, naive.target = "/predict ÷ naive req/s", SINGLE_VS_NAIVE
    naive.details["max_abs_phat_diff_vs_predict"] = worst
    hello.note = _connections_note(runs, c)
    return [hello, predict, naive]


def _connections_note(runs: dict[str, list[LoadRun]], concurrency: int) -> str:
    """How the kernel spread the wrk connections over the workers in each round (a source of noise)."""
    split = {
        path.rsplit("/", 1)[1]: " ".join("/".join(map(str, r.connections)) or "?" for r in rs)
        for path, rs in runs.items()
    }
    shown = "; ".join(f"{name} {rounds}" for name, rounds in split.items())
    restarts = sum(r.attempts - 1 for rs in runs.values() for r in rs)
    return (
        f"connections per worker, by round (of {concurrency}; whichever worker accepts first): {shown}; "
        f"{restarts} run(s) restarted because one worker held nearly all connections"
    )


# --- (b) + (c): one 10,000-row batch, end to end ------------------------------------------------------------
_SAMPLE = re.compile(r"^(propensity_\w+?)(?:\{([^}]*)\})? ([0-9.eE+-]+)$", re.MULTILINE)
STAGES = ("decode", "score", "encode")


def metrics_text(server: BenchServer) -> str:
    """The server's /metrics (every worker's, summed by the app)."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def _scrape(server: BenchServer) -> dict[str, float]:
    """The /predict stage and latency sums/counts from /metrics (summed over workers by the app)."""
    text = metrics_text(server)
    out: dict[str, float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        base, _, kind = name.rpartition("_")
        if kind not in ("sum", "count"):
            continue
        if base == "propensity_stage_duration_seconds":
            out[f"{kind}:{labels}"] = float(value)
        elif base == "propensity_http_request_duration_seconds" and 'route="/predict"' in labels:
            out[f"{kind}:app"] = float(value)
    return out


def _stage_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms per request of each /predict stage (and the whole in-app time) between two scrapes."""
    means = {}
    for key in [*(f'stage="{s}"' for s in STAGES), "app"]:
        count = after.get(f"count:{key}", 0.0) - before.get(f"count:{key}", 0.0)
        total = after.get(f"sum:{key}", 0.0) - before.get(f"sum:{key}", 0.0)
        if count:
            means[key.removeprefix('stage="').removesuffix('"')] = round(1e3 * total / count, 2)
    return means


def json_floor(body: bytes, response: Any) -> float:
    """Seconds for the JSON work any server must do: orjson parse of the body, orjson dump of the answer."""
    started = time.perf_counter()
    orjson.loads(body)
    orjson.dumps(response)
    return time.perf_counter() - started


WARM_ATTEMPTS = 30
RETRY_AFTER_SECONDS = 1.0  # what the service's 503 asks for (service/serving/admission.py)


def warm_batch(server: BenchServer, path: str, body: bytes) -> bytes:
    """POST the batch from 2 x workers fresh connections at once, so every worker is likely to see it. A
    worker that already holds as many big bodies as its in-flight budget allows sheds the next one (503 +
    Retry-After): that POST is sent again after the pause the answer asks for."""

    def warm(_: int) -> bytes:
        for _attempt in range(WARM_ATTEMPTS):
            conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
            try:
                reply = post(conn, path, body)
            finally:
                conn.close()
            if reply.status == 200:
                return reply.body
            if reply.status != 503:
                raise RuntimeError(f"POST {path}: HTTP {reply.status}: {reply.body[:300]!r}")
            time.sleep(RETRY_AFTER_SECONDS)
        raise RuntimeError(f"POST {path}: still shed after {WARM_ATTEMPTS} attempts")

    n = 2 * server.workers
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(warm, range(n)))
    return answers[0]


@dataclass(frozen=True)
class BatchRun:
    answer: bytes  # the /predict response body
    latency_s: list[float]
    floor_s: list[float]
    hello_s: list[float]  # the same body POSTed to the hello-world: the HTTP and body-reading layers alone
    stages_ms: dict[str, float]
    cpu_ms_per_req: float


def _post_ok(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    reply = post(conn, path, body)
    if reply.status != 200:
        raise RuntimeError(f"batch POST {path}: HTTP {reply.status}: {reply.body[:300]!r}")
    return reply.seconds


def _measure_batch(server: BenchServer, body: bytes, reps: int) -> BatchRun:
    """`reps` rounds on one keep-alive connection: POST /predict, POST hello, one in-process JSON floor."""
    answer = warm_batch(server, PREDICT, body)
    warm_batch(server, HELLO, body)
    response = orjson.loads(answer)
    before = _scrape(server)
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    latency, floor, hello, cpu = [], [], [], 0.0
    try:
        for _ in range(reps):
            cpu_before = sum(server.worker_cpu().values())
            latency.append(_post_ok(conn, PREDICT, body))
            cpu += sum(server.worker_cpu().values()) - cpu_before
            hello.append(_post_ok(conn, HELLO, body))
            floor.append(json_floor(body, response))
    finally:
        conn.close()
    return BatchRun(answer, latency, floor, hello, _stage_means(before, _scrape(server)), 1e3 * cpu / reps)


def _stages_note(label: str, run: BatchRun) -> str:
    st = run.stages_ms
    return (
        f"{label}: server-side mean ms per /predict: decode (body read + orjson.loads) {st.get('decode')}, "
        f"score {st.get('score')}, encode (records + orjson.dumps) {st.get('encode')}, whole app "
        f"{st.get('app')}; the same body to the hello-world takes {1e3 * median(run.hello_s):.0f} ms end to "
        "end (HTTP + reading the body)"
    )


def _batch_results(label: str, body: bytes, run: BatchRun) -> list[Result]:
    mb = f"{len(body) / 1e6:.1f} MB in, {len(run.answer) / 1e6:.1f} MB out"
    floor = Result(
        section="batch",
        name=f"JSON floor, {label}: orjson.loads(body) + orjson.dumps(response), in-process ({mb})",
        value=1e3 * median(run.floor_s),
        unit="ms",
        details={"floor_ms": [round(1e3 * s, 2) for s in run.floor_s]},
    )
    predict = Result(
        section="batch",
        name=f"POST {PREDICT}, {label}, sequential, end to end",
        value=1e3 * median(run.latency_s),
        unit="ms",
        p50_ms=1e3 * median(run.latency_s),
        cpu_ms_per_req=run.cpu_ms_per_req,
        ratio=median([t / f for t, f in zip(run.latency_s, run.floor_s, strict=True)]),
        ratio_label="/predict ÷ JSON floor latency",
        target=BATCH_VS_FLOOR,
        note=_stages_note(label, run),
        details={
            "latency_ms": [round(1e3 * s, 2) for s in run.latency_s],
            "max_ms": round(1e3 * max(run.latency_s), 2),
            "hello_same_body_ms": [round(1e3 * s, 2) for s in run.hello_s],
            "server_stage_mean_ms": run.stages_ms,
        },
    )
    return [floor, predict]


def _naive_batch(ctx: Context, body: bytes, predict_ms: float, predict_body: bytes) -> Result:
    server = ctx.server()
    answers = post_sequential(HOST, server.port, NAIVE, body, ctx.options.naive_batch_reps)
    naive_phat = [r["phat"] for r in orjson.loads(answers[0].body)]
    fast_phat = [r["phat"] for r in orjson.loads(predict_body)]
    worst = max(abs(a - b) for a, b in zip(naive_phat, fast_phat, strict=True))
    latency = median([a.seconds for a in answers])
    return Result(
        section="batch",
        name=f"naive POST {NAIVE}, {len(fast_phat):,} rows mixed, sequential, end to end",
        value=1e3 * latency,
        unit="ms",
        p50_ms=1e3 * latency,
        ratio=1e3 * latency / predict_ms,
        ratio_label="naive ÷ /predict latency",
        details={"latency_ms": [round(1e3 * a.seconds, 1) for a in answers], "max_abs_phat_diff": worst},
    )


@section("batch", "(b)+(c) one 10,000-row JSON batch end to end vs the in-process JSON floor and naive")
def batch(ctx: Context) -> list[Result]:
    opts = ctx.options
    server = ctx.server()
    rows = batch_rows(opts.batch_rows)
    n = f"{len(rows):,} rows"
    bodies = {f"{n} mixed": batch_body(rows), f"{n} all strings": batch_body(all_strings(rows))}
    results: list[Result] = []
    answers: list[bytes] = []
    for label, body in bodies.items():
        run = _measure_batch(server, body, opts.batch_reps)
        answers.append(run.answer)
        results += _batch_results(label, body, run)
    if len(set(answers)) != 1:
        raise RuntimeError("the all-strings batch was not answered with the same bytes as the mixed one")
    results.append(_naive_batch(ctx, bodies[f"{n} mixed"], results[1].value, answers[0]))
    return results
