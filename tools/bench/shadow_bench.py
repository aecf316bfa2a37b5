"""Shadow scoring's cost (section "shadow"): the same server config with shadow scoring on at 100% and off,
side by side and interleaved (issue 15).

The shared benchmark server (shadow off) and a second one whose registry has a `staging` model (the
approved one retrained on a synthetic month: other coefficients and cutoff) with PROPENSITY_SHADOW_SHARE=1
stay up together. Latency is measured at the same offered rate on both (tools/loadgen.py paced below
what one server can take, as a service runs), so p99 shows what a request waits for the shadow thread,
not how much throughput it costs; the saturated req/s of wrk at fixed concurrency shows that cost. The
shadow thread's own seconds per row come from its counter, and every row sent is checked to have been
compared (none dropped, none skipped).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import single_row_bodies
from tools.bench.sections import PREDICT, LoadRun, _load, _load_result, metrics_text
from tools.bench.server import BenchServer
from tools.loadgen import LoadResult, LoadRunner, post

P99_ON_VS_OFF = Target("<=", 1.2)
PACED_RATE = 600.0  # requests/s offered to each server: about a third of what one takes on 2 cores
PACED_CONCURRENCY = 8


def staged_registry(ctx: Context) -> Path:
    """A copy of the benchmark registry with a retrained v2 as `staging` (built once per run)."""
    from service.model.registry import Registry
    from service.model.synthetic import write_synthetic_csv
    from service.model.training import train_csv

    root = ctx.workdir / "shadow-registry"
    if not root.exists():
        shutil.copytree(ctx.registry_dir, root)
        registry = Registry(root, "propensity")
        write_synthetic_csv(ctx.workdir / "shadow-month.csv", 6_000, seed=31)
        version, _ = train_csv(ctx.workdir / "shadow-month.csv", registry)
        registry.set_alias("staging", version, reason="the shadow benchmark's challenger")
    return root


def shadow_counts(server: BenchServer) -> dict[str, float]:
    """Rows compared, rows skipped, and the shadow thread's seconds, summed over workers and labels."""
    out = {"compared": 0.0, "skipped": 0.0, "seconds": 0.0}
    for family in text_string_to_metric_families(metrics_text(server)):
        for sample in family.samples:
            if sample.name == "propensity_shadow_rows_total":
                out["compared"] += sample.value
            elif sample.name == "propensity_shadow_skipped_rows_total":
                out["skipped"] += sample.value
            elif sample.name == "propensity_shadow_seconds_total":
                out["seconds"] += sample.value
    return out


def _paced(server: BenchServer, bodies: list[bytes], seconds: float) -> LoadResult:
    requests = [post(PREDICT, body) for body in bodies]
    total = int(PACED_RATE * seconds)
    runner = LoadRunner(
        server.base_url,
        requests,
        total=total,
        concurrency=PACED_CONCURRENCY,
        deadline_seconds=seconds * 3 + 10,
        max_rate=PACED_RATE,
    )
    result = runner.run()
    if result.failed:
        raise RuntimeError(f"{result.failed} failed requests at {PACED_RATE:g}/s: {result.statuses}")
    return result


@section("shadow", "shadow scoring at 100% vs off: 1-row p99 at a paced rate, saturated req/s, thread cost")
def shadow_scoring(ctx: Context) -> list[Result]:
    opts = ctx.options
    off = ctx.server()
    env = ctx.server_env(PROPENSITY_ARTIFACTS_DIR=str(staged_registry(ctx)), PROPENSITY_SHADOW_SHARE="1")
    on = ctx._stack.enter_context(
        BenchServer(env, workers=opts.workers, log_path=ctx.workdir / "gunicorn-shadow.log")
    )
    bodies = single_row_bodies()
    servers = {"off": off, "on": on}
    for server in servers.values():
        _load(server, PREDICT, bodies, ctx, opts.warmup_seconds)
        _paced(server, bodies, opts.warmup_seconds)
    paced: dict[str, list[LoadResult]] = {"off": [], "on": []}
    saturated: dict[str, list[LoadRun]] = {"off": [], "on": []}
    for r in range(opts.rounds):
        for name in ("off", "on") if r % 2 == 0 else ("on", "off"):
            paced[name].append(_paced(servers[name], bodies, opts.seconds))
            saturated[name].append(_load(servers[name], PREDICT, bodies, ctx, opts.seconds))
    time.sleep(1.0)  # the workers' metric buffers flush every 0.25 s; the shadow queue drains
    counts = shadow_counts(on)
    return [*_paced_results(paced), *_saturated_results(ctx, saturated, counts)]


def _paced_results(paced: dict[str, list[LoadResult]]) -> list[Result]:
    p99 = {name: [r.percentile_ms(0.99) for r in runs] for name, runs in paced.items()}
    p50 = {name: [r.percentile_ms(0.5) for r in runs] for name, runs in paced.items()}
    out = []
    paced_at = f"paced {PACED_RATE:g} req/s, c={PACED_CONCURRENCY}"
    for name in ("off", "on"):
        out.append(
            Result(
                section="shadow",
                name=f"POST {PREDICT}, 1 row, {paced_at}, shadow {name}",
                value=median(p99[name]),
                unit="ms",
                p50_ms=median(p50[name]),
                p99_ms=median(p99[name]),
                details={"p99_ms_by_round": [round(v, 3) for v in p99[name]]},
            )
        )
    out[1].ratio = median([a / b for a, b in zip(p99["on"], p99["off"], strict=True)])
    out[1].ratio_label, out[1].target = "shadow on ÷ off p99", P99_ON_VS_OFF
    return out


def _saturated_results(
    ctx: Context, runs: dict[str, list[LoadRun]], counts: dict[str, float]
) -> list[Result]:
    c = ctx.options.concurrency
    off = _load_result(f"POST {PREDICT}, 1 row, c={c}, saturated, shadow off", runs["off"])
    on = _load_result(f"POST {PREDICT}, 1 row, c={c}, saturated, shadow on (100%)", runs["on"])
    on.ratio = median([a.wrk.rps / b.wrk.rps for a, b in zip(runs["on"], runs["off"], strict=True)])
    on.ratio_label = "shadow on ÷ off req/s"
    per_row = 1e6 * counts["seconds"] / counts["compared"] if counts["compared"] else float("nan")
    on.details |= {"shadow_rows_compared": counts["compared"], "shadow_rows_skipped": counts["skipped"]}
    on.note = (
        f"shadow thread: {per_row:.1f} µs per row compared (its own counter), {counts['compared']:,.0f} rows "
        f"compared, {counts['skipped']:,.0f} skipped (the queue's bound: dropped, not waited for)"
    )
    for result in (off, on):
        result.section = "shadow"
    return [off, on]
