"""CSV bodies: the 10,000-row batch as a CSV file (what pandas' to_csv writes) POSTed to /predict with
Content-Type text/csv, answered as JSON and as CSV, next to the same rows as /predict JSON. The three are
POSTed in turns on one keep-alive connection, so they see the same machine at the same moments; every
answer's phat must have the bits of the JSON answer's."""

from __future__ import annotations

import csv
import http.client
import io
import time
from dataclasses import dataclass

import orjson

from service.model.synthetic import make_synthetic_frame
from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import BATCH_SEED, batch_body, batch_rows
from tools.bench.sections import PREDICT, _scrape, _stage_means
from tools.bench.server import HOST, BenchServer

CSV_VS_JSON = Target("<=", 1.0)
JSON_TYPE, CSV_TYPE = "application/json", "text/csv"


@dataclass(frozen=True)
class Door:
    label: str
    body: bytes
    content_type: str
    accept: str


def _post(conn: http.client.HTTPConnection, door: Door) -> tuple[float, bytes]:
    started = time.perf_counter()
    conn.request(
        "POST", PREDICT, body=door.body, headers={"Content-Type": door.content_type, "Accept": door.accept}
    )
    reply = conn.getresponse()
    data = reply.read()
    seconds = time.perf_counter() - started
    if reply.status != 200:
        raise RuntimeError(f"POST {PREDICT} ({door.label}): HTTP {reply.status}: {data[:300]!r}")
    return seconds, data


def _phat_bits(door: Door, answer: bytes) -> list[float]:
    if door.accept == CSV_TYPE:
        return [float(r["phat"]) for r in csv.DictReader(io.StringIO(answer.decode()))]
    return [float(r["phat"]) for r in orjson.loads(answer)]


def _warm(server: BenchServer, doors: list[Door]) -> dict[str, bytes]:
    """Each door a few times on fresh connections (each worker is likely to see each); its answer."""
    answers: dict[str, bytes] = {}
    for _ in range(2 * server.workers):
        for door in doors:
            conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
            try:
                answers[door.label] = _post(conn, door)[1]
            finally:
                conn.close()
    return answers


STAGE_REPS = 3
METRICS_SETTLE_SECONDS = 0.6  # a worker writes its metric updates at least every 0.25 s


def _stages(server: BenchServer, door: Door) -> dict[str, float]:
    """The server's mean ms per stage (decode, score, encode, whole app) for a few POSTs of one door."""
    before = _scrape(server)
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        for _ in range(STAGE_REPS):
            _post(conn, door)
    finally:
        conn.close()
    time.sleep(METRICS_SETTLE_SECONDS)
    return _stage_means(before, _scrape(server))


def csv_body(rows: int, seed: int = BATCH_SEED) -> bytes:
    """The benchmark's batch rows as the CSV file they came from (missing values as empty cells)."""
    text: str = make_synthetic_frame(rows, seed, target=False).to_csv(index=False)
    return text.encode()


@section("csv", "CSV bodies: 10,000 rows as text/csv answered as JSON and as CSV vs /predict JSON")
def csv_section(ctx: Context) -> list[Result]:
    server = ctx.server()
    n = ctx.options.batch_rows
    json_door = Door("JSON in, JSON out", batch_body(batch_rows(n)), JSON_TYPE, JSON_TYPE)
    data = csv_body(n)
    doors = [
        json_door,
        Door("CSV in, JSON out", data, CSV_TYPE, JSON_TYPE),
        Door("CSV in, CSV out", data, CSV_TYPE, CSV_TYPE),
    ]
    answers = _warm(server, doors)
    reference = _phat_bits(json_door, answers[json_door.label])
    for door in doors[1:]:
        if _phat_bits(door, answers[door.label]) != reference:
            raise RuntimeError(f"{door.label}: a phat differs from /predict JSON's for the same rows")
    times: dict[str, list[float]] = {door.label: [] for door in doors}
    conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
    try:
        for _ in range(ctx.options.batch_reps):
            for door in doors:
                times[door.label].append(_post(conn, door)[0])
    finally:
        conn.close()
    plain = times[json_door.label]
    stages = {door.label: _stages(server, door) for door in doors}
    time.sleep(METRICS_SETTLE_SECONDS)
    note = (
        f"csv: {n:,} rows; /predict JSON body {len(json_door.body) / 1e6:.1f} MB, CSV body "
        f"{len(data) / 1e6:.1f} MB; /predict JSON takes {1e3 * median(plain):.0f} ms (median) beside them; "
        "every phat has the JSON answer's bits; server-side mean ms per stage: "
        + "; ".join(f"{label}: {means}" for label, means in stages.items())
    )
    results = []
    for door in doors[1:]:
        took = times[door.label]
        results.append(
            Result(
                section="csv",
                name=f"POST {PREDICT} text/csv, {n:,} rows, {door.label}, sequential, end to end",
                value=1e3 * median(took),
                unit="ms",
                p50_ms=1e3 * median(took),
                ratio=median([a / b for a, b in zip(took, plain, strict=True)]),
                ratio_label=f"{door.label} ÷ /predict JSON latency",
                target=CSV_VS_JSON,
                note=note if door is doors[-1] else "",
                details={
                    "ms": [round(1e3 * s, 1) for s in took],
                    "json_ms": [round(1e3 * s, 1) for s in plain],
                },
            )
        )
    return results
