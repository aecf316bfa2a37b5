"""MLflow's /invocations next to /predict: one row per request at fixed concurrency, as a dataframe_split
body (what mlflow's ScoringServerClient sends) and as dataframe_records, interleaved with /predict's
single rows in the same rounds, on the same server, so all three see the same machine."""

from __future__ import annotations

import http.client

import orjson

from service.model.schema import example_rows
from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import single_row_bodies
from tools.bench.sections import PREDICT, LoadRun, _load, _load_result
from tools.bench.server import HOST, BenchServer
from tools.bench.wrk import post

INVOCATIONS = "/invocations"
VS_PREDICT = Target(">=", 0.8)
FORMS = ("dataframe_split", "dataframe_records")


def invocation_bodies() -> dict[str, list[bytes]]:
    """One body per real example row, in each form."""
    rows = example_rows()["rows"]
    return {
        "dataframe_split": [
            orjson.dumps({"dataframe_split": {"columns": list(r), "data": [list(r.values())]}}) for r in rows
        ],
        "dataframe_records": [orjson.dumps({"dataframe_records": [r]}) for r in rows],
    }


def check_bodies(server: BenchServer, predict: list[bytes], forms: dict[str, list[bytes]]) -> None:
    """Every body answers 200 with /predict's very record for its row."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=30)
    try:
        for i, body in enumerate(predict):
            expected = post(conn, PREDICT, body)
            for form, bodies in forms.items():
                got = post(conn, INVOCATIONS, bodies[i])
                if got.status != 200 or got.body != b'{"predictions":[' + expected.body + b"]}":
                    raise RuntimeError(
                        f"{form} row {i}: HTTP {got.status} {got.body[:200]!r} is not /predict's"
                    )
    finally:
        conn.close()


@section("invocations", "MLflow /invocations 1-row req/s (dataframe_split, dataframe_records) vs /predict")
def invocations(ctx: Context) -> list[Result]:
    opts = ctx.options
    server = ctx.server()
    plan: dict[str, tuple[str, list[bytes]]] = {"predict": (PREDICT, single_row_bodies())}
    plan |= {form: (INVOCATIONS, bodies) for form, bodies in invocation_bodies().items()}
    check_bodies(server, plan["predict"][1], {f: plan[f][1] for f in FORMS})
    names = list(plan)
    for path, bodies in plan.values():  # warm-up
        _load(server, path, bodies, ctx, opts.warmup_seconds)
    runs: dict[str, list[LoadRun]] = {n: [] for n in names}
    for r in range(opts.rounds):  # interleaved, rotating the order so no endpoint always goes first
        for name in names[r % len(names) :] + names[: r % len(names)]:
            path, bodies = plan[name]
            runs[name].append(_load(server, path, bodies, ctx, opts.seconds))
    c = opts.concurrency
    predict = _load_result(f"POST {PREDICT}, 1 row, c={c} (beside /invocations)", runs["predict"])
    out = [predict]
    for form in FORMS:
        result = _load_result(f"POST {INVOCATIONS} {form}, 1 row, c={c}", runs[form])
        result.ratio = median(
            [a.wrk.rps / b.wrk.rps for a, b in zip(runs[form], runs["predict"], strict=True)]
        )
        result.ratio_label, result.target = f"/invocations {form} ÷ /predict req/s", VS_PREDICT
        out.append(result)
    for result in out:
        result.section = "invocations"
    return out
