"""Cluster rows for `make bench` (section "cluster"): a 10,000-row batch answered from the cache vs computed,
and single-row req/s through nginx vs straight to one replica.

The measurements are tools.bench.cluster_bench's (a 2-replica cluster behind nginx on free loopback
ports, always torn down); this module only drives its throughput runs with wrk and turns its numbers into
table rows.
"""

from __future__ import annotations

from typing import Any

from tools.bench.cluster_bench import run_cluster_bench
from tools.bench.core import Context, Result, Target, section
from tools.bench.wrk import run_wrk

CACHE_HIT_VS_MISS = Target("<=", 0.2)


def wrk_load(url: str, request: bytes, seconds: float, concurrency: int) -> float:
    """cluster_bench's LoadFn on wrk: the raw HTTP request's path and body, POSTed at `concurrency`."""
    head, _, body = request.partition(b"\r\n\r\n")
    path = head.split(b" ", 2)[1].decode()
    result = run_wrk(url.rstrip("/") + path, [body], concurrency=concurrency, seconds=seconds)
    assert result is not None  # (never aborted: no abort_if)
    if result.errors:
        raise RuntimeError(f"{result.errors} failed requests under load on {url}{path}")
    return result.rps


def _cache_rows(cache: dict[str, Any], encoding: str) -> list[Result]:
    size = f"{cache['rows']:,} rows, {cache['body_bytes'] / 1e6:.1f} MB, {encoding}"
    same = "identical JSON" if cache["identical"] else "DIFFERENT JSON"
    miss = Result("cluster", f"cache miss via nginx, {size}", cache["miss_ms_median"], "ms", details=cache)
    hit = Result(
        "cluster",
        f"cache hit via nginx, the same batch repeated, {encoding} ({same})",
        cache["hit_ms_median"],
        "ms",
        ratio=cache["ratio"],
        ratio_label="hit ÷ miss latency",
        target=CACHE_HIT_VS_MISS,
    )
    return [miss, hit]


def _throughput_rows(bench: dict[str, Any]) -> list[Result]:
    shape = f"{bench['replicas']} replicas x {bench['workers']} workers, c={bench['concurrency']}"
    direct = Result(
        "cluster",
        f"POST /predict 1 row straight to replica 1 ({bench['workers']} workers)",
        bench["direct_rps_median"],
        "req/s",
        details=bench,
    )
    nginx = Result(
        "cluster",
        f"POST /predict 1 row through nginx ({shape})",
        bench["nginx_rps_median"],
        "req/s",
        ratio=bench["ratio"],
        ratio_label="nginx ÷ one replica req/s",
    )
    return [direct, nginx]


@section(
    "cluster",
    "10,000-row cache hit vs miss; 1-row req/s via nginx vs one replica (a 2-replica cluster)",
    quick=False,  # starting a cluster alone takes most of --quick's minute
)
def cluster(ctx: Context) -> list[Result]:
    data = run_cluster_bench(ctx.workdir / "cluster", quick=ctx.options.quick, load=wrk_load)
    return (
        _cache_rows(data["cache_10k"], "identity")
        + _cache_rows(data["cache_10k_gzip"], "gzip")
        + _throughput_rows(data["single_row_throughput"])
    )
