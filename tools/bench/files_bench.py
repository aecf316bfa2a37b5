"""Batch scoring of files (section "files"): `propensity score` on a 1,000,000-row CSV beside what a data
team writes without the product, its peak memory at 1 and 5 million rows, and the Dask engine.

The baseline is a chunked pandas + scikit-learn script on the same file: `pandas.read_csv(chunksize=
100_000)`, the approved sklearn Pipeline's predict (the reference the product is tested against), and
`to_csv` of the same fields. Both run end to end as processes (start-up and model load included) and
alternate, round by round. Peak memory is the largest sum of the RSS of the run's processes (the reading
process and its workers), sampled every 50 ms. The files are synthetic rows (100 columns, ~1.5 KB a row):
100,000 generated once, repeated to 1 and 5 million.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tools.bench.core import Context, Result, Target, median, section

SCORE_VS_BASELINE = Target(">=", 10)
FIVE_VS_ONE_MILLION_RSS = Target("<=", 1.5)
BASE_ROWS = 100_000
BASELINE = """
import sys, pandas as pd
from pathlib import Path
from service.model.registry import Registry
model = Registry(Path(sys.argv[1])).load("production").model
first = True
for frame in pd.read_csv(sys.argv[2], chunksize=100_000):
    model.predict(frame).to_csv(sys.argv[3], mode="w" if first else "a", header=first, index=False)
    first = False
"""


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _repeat(base: Path, times: int, dest: Path) -> Path:
    with base.open("rb") as src:
        header = src.readline()
        body = src.read()
    with dest.open("wb") as out:
        out.write(header)
        for _ in range(times):
            out.write(body)
    return dest


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB of the process tree, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode not in (0, 3):
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}: {out[-500:]}")
    return seconds, peak / 1e6, out


@section("files", "propensity score on 1M-row CSV vs chunked pandas+sklearn; RSS 1M vs 5M; Dask", quick=False)
def files(ctx: Context) -> list[Result]:
    from service.model.synthetic import write_synthetic_csv

    work = ctx.workdir / "files"
    work.mkdir(exist_ok=True)
    try:
        base = work / "base.csv"
        write_synthetic_csv(base, BASE_ROWS, 26, target=False)
        million = _repeat(base, 10, work / "1m.csv")
        return _throughput(ctx, million, work) + _memory(ctx, base, million, work) + _dask(ctx, base, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _score_argv(ctx: Context, src: Path, dst: Path, *extra: str) -> list[str]:
    return [_bin("propensity"), "score", str(src), str(dst), "--artifacts-dir", str(ctx.registry_dir), *extra]


def _throughput(ctx: Context, million: Path, work: Path) -> list[Result]:
    rounds = 1 if ctx.options.quick else 2
    scores, baselines, ratios = [], [], []
    for _ in range(rounds):
        base_s, base_mb, _ = _timed(
            [sys.executable, "-c", BASELINE, str(ctx.registry_dir), str(million), str(work / "b.csv")]
        )
        score_s, score_mb, _ = _timed(_score_argv(ctx, million, work / "s.csv"))
        baselines.append(1e6 / base_s)
        scores.append(1e6 / score_s)
        ratios.append(base_s / score_s)
    cores = os.cpu_count() or 1
    return [
        Result(
            "files",
            "pandas + sklearn, chunked: 1M-row CSV",
            median(baselines),
            "rows/s",
            note=f"peak {base_mb:,.0f} MB",
        ),
        Result(
            "files",
            f"propensity score ({cores} workers): 1M-row CSV",
            median(scores),
            "rows/s",
            ratio=median(ratios),
            ratio_label="score ÷ pandas+sklearn, end to end",
            target=SCORE_VS_BASELINE,
            note=f"end to end, start-up and model load included; peak {score_mb:,.0f} MB; {cores} cores",
        ),
    ]


def _memory(ctx: Context, base: Path, million: Path, work: Path) -> list[Result]:
    five = _repeat(base, 50, work / "5m.csv")
    one_s, one_mb, _ = _timed(_score_argv(ctx, million, work / "m1.csv"))
    five_s, five_mb, _ = _timed(_score_argv(ctx, five, work / "m5.csv"))
    five.unlink()
    return [
        Result("files", "propensity score peak RSS: 1M rows", one_mb, "MB", details={"seconds": one_s}),
        Result(
            "files",
            "propensity score peak RSS: 5M rows",
            five_mb,
            "MB",
            ratio=five_mb / one_mb,
            ratio_label="5M ÷ 1M",
            target=FIVE_VS_ONE_MILLION_RSS,
            note=f"5M rows at {5e6 / five_s:,.0f} rows/s end to end",
        ),
    ]


def _dask(ctx: Context, base: Path, work: Path) -> list[Result]:
    import pyarrow as pa
    import pyarrow.csv as pc
    import pyarrow.parquet as pq

    strings = pc.ConvertOptions(column_types={"x12": pa.string(), "x44": pa.string()})
    table = pc.read_csv(base, convert_options=strings)
    data = work / "parquet"
    data.mkdir()
    for k in range(10):
        pq.write_table(table, data / f"part-{k}.parquet", row_group_size=25_000)
    whole = pa.concat_tables([table] * 10)
    pq.write_table(whole, work / "1m.parquet", row_group_size=25_000)
    del whole
    local_s, _, _ = _timed(_score_argv(ctx, work / "1m.parquet", work / "l.parquet"))
    dask_s, _, _ = _timed(_score_argv(ctx, data, work / "dask-out", "--dask", "local:2"))
    return [
        Result("files", "propensity score (local): 1M-row Parquet", 1e6 / local_s, "rows/s"),
        Result(
            "files",
            "propensity score --dask local:2: the same rows, 10 files",
            1e6 / dask_s,
            "rows/s",
            ratio=local_s / dask_s,
            ratio_label="dask ÷ local",
            note="a cluster of 2 worker processes started for the run (its start-up included)",
        ),
    ]
