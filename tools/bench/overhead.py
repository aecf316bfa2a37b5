"""Costs on the request path, in process (section "overhead"): what drift monitoring adds to a single-row
request, and what a lookup or a store costs while Redis hangs (the fail-open promise of the cache).

Drift: DriftMonitor.observe on 200 distinct scored single rows, cycled, folds included (amortised), against
a budget per request. Redis: a real redis-server on loopback, stopped with SIGSTOP after the cache has
connected, with the production settings (timeout, breaker): the first lookups time out, then the open
breaker skips Redis, and a store is queued and dropped without waiting.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from service.model.registry import Registry
from service.monitoring.drift_monitor import DriftMonitor
from service.serving.metrics import Metrics
from service.serving.redis_cache import BreakerState, RedisCache
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tools.bench.core import Context, Result, Target, median, section
from tools.bench.payloads import batch_rows
from tools.bench.redis_server import RedisServer

DRIFT_BUDGET_S = 50e-6  # drift monitoring's share of a single-row request, folds included
DRIFT_WITHIN_BUDGET = Target("<=", 1.0)
TIMED_OUT_VS_TIMEOUT = Target("<=", 1.5)  # a lookup waits the timeout once, plus scheduling slack
OPEN_VS_TIMEOUT = Target("<=", 0.1)  # with the breaker open, Redis is not asked at all
HUNG_CALLS = 200


def _timed(fn: Callable[[], object], times: int) -> list[float]:
    out = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


# --- drift monitoring -----------------------------------------------------------------------------------
def _drift_observe(ctx: Context) -> Result:
    model = CompiledModel.from_artifact(Registry(ctx.registry_dir).load("production"))
    singles = [model.score([row]) for row in batch_rows(200)]
    settings = Settings(artifacts_dir=ctx.registry_dir, drift_publish_seconds=3600, drift_chunk_rows=5_000)
    monitor = DriftMonitor(settings, Metrics())
    monitor.observe(model, singles[0])  # the first call builds the reference: not part of a request
    n = 5_000 if ctx.options.quick else 20_000
    per_request = []
    for _ in range(ctx.options.rounds):
        started = time.perf_counter()
        for i in range(n):
            monitor.observe(model, singles[i % len(singles)])
        per_request.append((time.perf_counter() - started) / n)
    monitor.close()
    value = median(per_request)
    return Result(
        "overhead",
        f"drift monitoring per 1-row request (DriftMonitor.observe, folds amortised, {n:,} requests x "
        f"{ctx.options.rounds})",
        1e6 * value,
        "µs",
        ratio=value / DRIFT_BUDGET_S,
        ratio_label=f"÷ the {1e6 * DRIFT_BUDGET_S:g} µs budget",
        target=DRIFT_WITHIN_BUDGET,
        details={"us_by_round": [round(1e6 * s, 3) for s in per_request]},
    )


# --- Redis hangs ----------------------------------------------------------------------------------------
def _hung_redis(ctx: Context) -> dict[str, Any]:
    """Lookup and store times (seconds) against a Redis that stopped answering."""
    logging.getLogger("propensity.cache").setLevel(logging.ERROR)  # the timeouts here are on purpose
    with RedisServer(ctx.workdir / "redis") as redis:
        secret = SecretStr(secrets.token_hex(32))  # a Redis cache signs its values
        settings = Settings(redis_url=redis.url, cache_secret=secret, artifacts_dir=ctx.registry_dir)
        cache = RedisCache(settings, Metrics())
        try:
            cache.get(["warm"])  # the connection exists before Redis hangs
            redis.pause()
            timed_out = _timed(lambda: cache.get(["k"]), settings.redis_breaker_failures)
            opened = cache.breaker.state is BreakerState.OPEN
            skipped = _timed(lambda: cache.get(["k"]), HUNG_CALLS)
            stores = _timed(lambda: cache.set(["k"], b"{}"), HUNG_CALLS)
        finally:
            redis.resume()
            cache.close()
    if not opened:
        raise RuntimeError("the breaker did not open after the timed-out lookups")
    return {
        "timeout": settings.redis_timeout_seconds,
        "timed_out": timed_out,
        "open": skipped,
        "store": stores,
    }


def _p99(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _hung_row(name: str, times: list[float], timeout: float, target: Target) -> Result:
    """Median in ms (µs when under a tenth of a millisecond); the ratio is the p99 over the timeout."""
    small = median(times) < 1e-4
    return Result(
        "overhead",
        name,
        (1e6 if small else 1e3) * median(times),
        "µs" if small else "ms",
        p99_ms=1e3 * _p99(times),
        ratio=_p99(times) / timeout,
        ratio_label=f"p99 ÷ the {1e3 * timeout:g} ms Redis timeout",
        target=target,
        details={"calls": len(times), "max_ms": round(1e3 * max(times), 3)},
    )


@section(
    "overhead", "in process: drift monitoring per 1-row request; cache lookups and stores while Redis hangs"
)
def overhead(ctx: Context) -> list[Result]:
    hung = _hung_redis(ctx)
    timeout = hung["timeout"]
    return [
        _drift_observe(ctx),
        _hung_row(
            f"cache lookup, Redis hung, breaker closed ({len(hung['timed_out'])} lookups until it opens)",
            hung["timed_out"],
            timeout,
            TIMED_OUT_VS_TIMEOUT,
        ),
        _hung_row(
            f"cache lookup, Redis hung, breaker open ({HUNG_CALLS} lookups)",
            hung["open"],
            timeout,
            OPEN_VS_TIMEOUT,
        ),
        _hung_row(
            f"cache store, Redis hung (queued for the writer thread; {HUNG_CALLS} stores)",
            hung["store"],
            timeout,
            OPEN_VS_TIMEOUT,
        ),
    ]
