"""Batch scoring of files (section "files"): `propensity score` on a 1,000,000-row CSV beside what a data
team writes without the product, its peak memory at 1 and 5 million rows, and the Dask engine beside the
local one on the same rows as Parquet. No HTTP server: every run is a process of its own.

The baseline is a chunked pandas + scikit-learn script on the same file (BASELINE below, run with the same
interpreter): `pandas.read_csv(chunksize=100_000)`, the approved model's reference `FittedModel.predict`
(the pipeline's model inputs, phat and business_outcome: the fields the product writes) and `to_csv`
appending to one file. Baseline and product alternate, round by round, and each is timed from process
start to exit (imports and model load included); the rows/s the product prints (its own clock, after the
model is loaded) and the baseline's loop alone are kept beside. After the rounds the two outputs are
compared: the same rows, phat within PHAT_TOLERANCE (pandas' float parser may differ from the product's in
the last bit of an input, so the baseline's phat may too).

Peak memory: every POLL_SECONDS the RSS of each process of the run (the reading process and its forked
workers) is sampled with psutil; the largest sum and the largest single process are kept (a forked
worker's pages shared with its parent count in both, so the sum overstates), and beside them each
process's VmHWM (/proc/PID/status: its peak RSS since exec, kept by the kernel, so sampling cannot miss
it). Not wait4's ru_maxrss: a child exec'd from this process starts with this process's high-water mark
(Linux keeps it across exec), so it reads at least the benchmark's own RSS.

The files are synthetic rows (100 columns, ~1.5 KB a row): 100,000 generated once, their body repeated to
1 and 5 million rows (1.5 and 7.6 GB); the Parquet file is those 100,000 rows converted once (string
columns as strings) and written 10 times as 10 row groups. Each file is synced to disk before it is read
(the kernel's writeback of gigabytes would otherwise run during the first timed round). Everything is
deleted when the section ends.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tools.bench.core import Context, Result, Target, median, section

SCORE_VS_BASELINE = Target(">=", 10)
RSS_5M_VS_1M = Target("<=", 1.5)
SEED_ROWS = 100_000
ROWS = 1_000_000
BIG_ROWS = 5_000_000
SEED = 26
POLL_SECONDS = 0.05
CHECKED_ROWS = 1_000  # phat of the first and the last this many rows compared
PHAT_TOLERANCE = 1e-12
DASK_WORKERS = 2
SCORED_LINE = re.compile(r"scored [\d,]+ of [\d,]+ rows in [\d.]+ s \(([\d,]+) rows/s\)")

BASELINE = """
import sys, time
from pathlib import Path

import pandas

from service.model.registry import Registry

registry, path, dest = sys.argv[1:4]
artifact = Registry(Path(registry)).load("production")
started = time.perf_counter()
first = True
for frame in pandas.read_csv(path, chunksize=100_000):
    out = artifact.model.predict(frame)
    out.to_csv(dest, mode="a", header=first, index=False)
    first = False
print(f"loop {time.perf_counter() - started:.3f} s")
"""
BASELINE_LOOP = re.compile(r"loop ([\d.]+) s")


@dataclass
class Run:
    """One process run to its end: wall seconds from start to exit, its output, its memory and CPU."""

    argv: list[str]
    seconds: float
    returncode: int
    output: str
    peak_sum_mb: float  # the largest sum of the tree's RSS, sampled
    peak_one_mb: float  # the largest RSS of a single process of it, sampled
    hwm_mb: float  # the largest VmHWM of a process of the tree (its peak RSS since exec, by the kernel)
    cpu_seconds: float  # user + system of the process and the children it waited for

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> Run:
        if not self.ok:
            raise RuntimeError(f"{shlex.join(self.argv)} exited {self.returncode}: {self.output[-800:]}")
        return self

    def printed_rows_per_second(self) -> float:
        """The rows/s `propensity score` prints (its own clock: after start-up and model load)."""
        found = SCORED_LINE.search(self.output)
        if not found:
            raise RuntimeError(f"no 'scored ... rows/s' line in: {self.output[-800:]}")
        return float(found.group(1).replace(",", ""))

    def loop_seconds(self) -> float:
        found = BASELINE_LOOP.search(self.output)
        if not found:
            raise RuntimeError(f"the baseline printed no loop time: {self.output[-800:]}")
        return float(found.group(1))


class _Peaks(threading.Thread):
    """Samples the RSS of a process and its descendants until stopped."""

    def __init__(self, root: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.done = threading.Event()
        self.total = 0
        self.largest = 0
        self.hwm: dict[int, int] = {}  # pid -> VmHWM bytes, as last read

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(POLL_SECONDS)

    def sample(self) -> None:
        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        sizes = []
        for proc in tree:
            try:
                sizes.append(proc.memory_info().rss)
                self.hwm[proc.pid] = _vm_hwm(proc.pid)
            except (psutil.Error, OSError, ValueError):
                continue
        self.total = max(self.total, sum(sizes))
        self.largest = max(self.largest, max(sizes, default=0))

    def stop(self) -> None:
        self.done.set()
        self.join()


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise ValueError(f"no VmHWM for {pid}")


def run_process(argv: list[str], log: Path) -> Run:
    """Run argv to its end (stdout and stderr to `log`), its RSS sampled all along."""
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        peaks = _Peaks(psutil.Process(proc.pid))
        peaks.start()
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: its pid stays its
            seconds = time.perf_counter() - started
        except BaseException:
            proc.kill()
            raise
        finally:
            peaks.stop()
        _, status, usage = os.wait4(proc.pid, 0)  # its CPU, and that of the children it waited for
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        argv=argv,
        seconds=seconds,
        returncode=proc.returncode,
        output=log.read_text(errors="replace"),
        peak_sum_mb=peaks.total / 1e6,
        peak_one_mb=peaks.largest / 1e6,
        hwm_mb=max(peaks.hwm.values(), default=0) / 1e6,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
    )


# --- the data ---------------------------------------------------------------------------------------


def _seed_csv(work: Path) -> Path:
    from service.model.synthetic import write_synthetic_csv

    path = work / "seed.csv"
    write_synthetic_csv(path, SEED_ROWS, SEED, target=False)
    return path


def _repeat(seed: Path, times: int, dest: Path) -> Path:
    """The seed's header once, its body `times` times."""
    with seed.open("rb") as src:
        header = src.readline()
        body = src.read()
    with dest.open("wb") as out:
        out.write(header)
        for _ in range(times):
            out.write(body)
    os.sync()  # written back before the timed runs, which would otherwise share the disk and a core with it
    return dest


def _parquet(seed: Path, dest: Path) -> Path:
    """The seed rows (read by pandas, as the baseline reads them) as ROWS rows in row groups of SEED_ROWS;
    string columns as plain Arrow strings."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(pd.read_csv(seed), preserve_index=False)
    schema = pa.schema(
        [f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in table.schema]
    )
    table = table.cast(schema)
    with pq.ParquetWriter(dest, schema) as writer:
        for _ in range(ROWS // SEED_ROWS):
            writer.write_table(table, row_group_size=SEED_ROWS)
    os.sync()
    return dest


# --- the section ------------------------------------------------------------------------------------


@dataclass
class Setting:
    ctx: Context
    work: Path
    cores: int
    rounds: int
    notes: list[str] = field(default_factory=list)

    def score_argv(self, src: Path, dest: Path, *extra: str) -> list[str]:
        program = str(Path(sys.executable).with_name("propensity"))
        reg = str(self.ctx.registry_dir)
        return [program, "score", str(src), str(dest), "--artifacts-dir", reg, "--no-progress", *extra]

    def baseline_argv(self, src: Path, dest: Path) -> list[str]:
        return [sys.executable, "-c", BASELINE, str(self.ctx.registry_dir), str(src), str(dest)]


@section(
    "files",
    "propensity score: 1M-row CSV rows/s vs chunked pandas+sklearn; peak RSS 5M vs 1M rows; Dask vs local",
    quick=False,
)
def files_section(ctx: Context) -> list[Result]:
    cores = len(os.sched_getaffinity(0))
    setting = Setting(ctx, ctx.workdir / "files", cores, rounds=1 if ctx.options.quick else 3)
    setting.work.mkdir(exist_ok=True)
    try:
        seed = _seed_csv(setting.work)
        million = _repeat(seed, ROWS // SEED_ROWS, setting.work / "1m.csv")
        results, one_million = _csv_rows(setting, million)
        million.unlink()
        results += _memory_rows(setting, seed, one_million)
        results += _parquet_rows(setting, _parquet(seed, setting.work / "1m.parquet"))
    finally:
        shutil.rmtree(setting.work, ignore_errors=True)
    return results


def _csv_rows(s: Setting, million: Path) -> tuple[list[Result], list[Run]]:
    """Baseline and `propensity score` on the 1M-row CSV, alternating; the results and the score runs."""
    base_out, score_out = s.work / "baseline-out.csv", s.work / "score-out.csv"
    baselines: list[Run] = []
    scores: list[Run] = []
    for _ in range(s.rounds):
        base_out.unlink(missing_ok=True)  # the baseline appends
        baselines.append(run_process(s.baseline_argv(million, base_out), s.work / "baseline.log").check())
        argv = s.score_argv(million, score_out, "--workers", str(s.cores))
        scores.append(run_process(argv, s.work / "score.log").check())
    agreement = _agreement(score_out, base_out)
    base_out.unlink()
    score_out.unlink()
    return _csv_results(s, baselines, scores, agreement), scores


def _csv_results(
    s: Setting, baselines: list[Run], scores: list[Run], agreement: dict[str, Any]
) -> list[Result]:
    ratios = [b.seconds / r.seconds for b, r in zip(baselines, scores, strict=True)]
    printed = [r.printed_rows_per_second() for r in scores]
    loops = [ROWS / b.loop_seconds() for b in baselines]
    in_run = [p / loop for p, loop in zip(printed, loops, strict=True)]
    cpu_base = median([b.cpu_seconds for b in baselines]) / ROWS * 1e6
    cpu_score = median([r.cpu_seconds for r in scores]) / ROWS * 1e6
    startup = median([r.seconds - ROWS / p for r, p in zip(scores, printed, strict=True)])
    baseline = Result(
        section="files",
        name="pandas read_csv(chunksize=100,000) + FittedModel.predict + to_csv: 1M-row CSV, end to end",
        value=median([ROWS / b.seconds for b in baselines]),
        unit="rows/s",
        note=_csv_note(s, agreement, loops, printed, startup, (cpu_base, cpu_score)),
        details={
            "seconds": [round(b.seconds, 2) for b in baselines],
            "loop_rows_per_second": [round(x) for x in loops],
            "cpu_seconds": [round(b.cpu_seconds, 1) for b in baselines],
            "peak_rss_sum_mb": [round(b.peak_sum_mb) for b in baselines],
            "argv": "python -c BASELINE REGISTRY IN.csv OUT.csv",
            "agreement": agreement,
        },
    )
    score = Result(
        section="files",
        name=f"propensity score IN.csv OUT.csv --workers {s.cores}: 1M-row CSV, end to end (start to exit)",
        value=median([ROWS / r.seconds for r in scores]),
        unit="rows/s",
        ratio=median(ratios),
        ratio_label="score ÷ pandas baseline rows/s",
        target=SCORE_VS_BASELINE,
        details={
            "seconds": [round(r.seconds, 2) for r in scores],
            "printed_rows_per_second": printed,
            "cpu_seconds": [round(r.cpu_seconds, 1) for r in scores],
            "ratios": [round(x, 2) for x in ratios],
        },
    )
    own = Result(
        section="files",
        name="propensity score's printed rows/s (after model load) vs the baseline's loop alone",
        value=median(printed),
        unit="rows/s",
        ratio=median(in_run),
        ratio_label="printed ÷ baseline loop rows/s",
        details={"ratios": [round(x, 2) for x in in_run]},
    )
    return [baseline, score, own]


def _csv_note(
    s: Setting,
    agreement: dict[str, Any],
    loops: list[float],
    printed: list[float],
    startup: float,
    cpu_us: tuple[float, float],
) -> str:
    ram = psutil.virtual_memory().total / 2**30
    return (
        f"files: {s.cores} cores, {ram:.0f} GiB RAM, the inputs in the page cache; {s.rounds} interleaved "
        f"rounds. 1M-row CSV: the baseline's loop alone {median(loops):,.0f} rows/s (one core), CPU "
        f"{cpu_us[0]:.1f} µs a row; propensity score's printed {median(printed):,.0f} rows/s, CPU "
        f"{cpu_us[1]:.1f} µs a row (all its processes), start-up and model load {startup:.1f} s a run. "
        f"Outputs: {agreement['rows']:,} rows each; phat of the first and last {CHECKED_ROWS:,} rows within "
        f"{agreement['max_abs_diff_ends']:.1e}; of all rows' phat {agreement['phat_bits_differ']:,} differ "
        f"in bits (max {agreement['max_abs_diff']:.1e}: pandas' float parsing of the inputs), "
        f"business_outcome {agreement['outcome_differs']:,}"
    )


def _agreement(score_csv: Path, base_csv: Path) -> dict[str, Any]:
    """Same rows; phat of the first and last CHECKED_ROWS within PHAT_TOLERANCE (raises otherwise)."""
    import numpy as np
    import pandas as pd

    def read(path: Path) -> pd.DataFrame:
        return pd.read_csv(path, usecols=["phat", "business_outcome"], float_precision="round_trip")

    ours, theirs = read(score_csv), read(base_csv)
    if len(ours) != ROWS or len(theirs) != ROWS:
        raise RuntimeError(
            f"rows written: propensity score {len(ours):,}, baseline {len(theirs):,}, of {ROWS:,}"
        )
    a, b = ours["phat"].to_numpy(), theirs["phat"].to_numpy()
    ends = np.r_[0:CHECKED_ROWS, ROWS - CHECKED_ROWS : ROWS]
    diff_ends = float(np.max(np.abs(a[ends] - b[ends])))
    if not diff_ends <= PHAT_TOLERANCE:
        raise RuntimeError(f"phat of the first/last {CHECKED_ROWS} rows differ by up to {diff_ends:.3g}")
    outcomes = ours["business_outcome"].to_numpy() != theirs["business_outcome"].to_numpy()
    return {
        "rows": ROWS,
        "max_abs_diff_ends": diff_ends,
        "max_abs_diff": float(np.max(np.abs(a - b))),
        "phat_bits_differ": int(np.count_nonzero(a != b)),
        "outcome_differs": int(np.count_nonzero(outcomes)),
    }


def _memory_rows(s: Setting, seed: Path, one_million: list[Run]) -> list[Result]:
    """Peak RSS of `propensity score` at 1M rows (the rounds above) and at 5M rows (one run)."""
    five = _repeat(seed, BIG_ROWS // SEED_ROWS, s.work / "5m.csv")
    out = s.work / "score-5m.csv"
    try:
        argv = s.score_argv(five, out, "--workers", str(s.cores))
        big = run_process(argv, s.work / "score-5m.log").check()
    finally:
        five.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    one_sum = median([r.peak_sum_mb for r in one_million])
    one_single = median([r.peak_one_mb for r in one_million])
    one_hwm = median([r.hwm_mb for r in one_million])
    note = (
        f"peak RSS, 1M → 5M rows: all processes {one_sum:,.0f} → {big.peak_sum_mb:,.0f} MB (the pages "
        f"forked workers share with their parent counted in each), largest process {one_single:,.0f} → "
        f"{big.peak_one_mb:,.0f} MB, its VmHWM {one_hwm:,.0f} → {big.hwm_mb:,.0f} MB; 5M rows "
        f"at {BIG_ROWS / big.seconds:,.0f} rows/s end to end ({big.printed_rows_per_second():,.0f} printed)"
    )
    return [
        Result(
            section="files",
            name=f"propensity score peak RSS (sum over its processes): 1M-row CSV, --workers {s.cores}",
            value=one_sum,
            unit="MB",
            details={
                "peak_rss_sum_mb": [round(r.peak_sum_mb) for r in one_million],
                "peak_rss_largest_process_mb": [round(r.peak_one_mb) for r in one_million],
                "vm_hwm_largest_process_mb": [round(r.hwm_mb) for r in one_million],
            },
        ),
        Result(
            section="files",
            name=f"propensity score peak RSS (sum over its processes): 5M-row CSV, --workers {s.cores}",
            value=big.peak_sum_mb,
            unit="MB",
            ratio=big.peak_sum_mb / one_sum,
            ratio_label="5M ÷ 1M peak RSS",
            target=RSS_5M_VS_1M,
            note=note,
            details={
                "peak_rss_largest_process_mb": round(big.peak_one_mb),
                "vm_hwm_largest_process_mb": round(big.hwm_mb),
                "seconds": round(big.seconds, 2),
                "cpu_seconds": round(big.cpu_seconds, 1),
            },
        ),
    ]


def _parquet_rows(s: Setting, parquet: Path) -> list[Result]:
    """The local engine (--workers 2) and the Dask one (--dask local:2) on the same Parquet file,
    alternating; a Dask run that fails makes its row 'skipped' with the reason."""
    local_out, dask_out = s.work / "local-out.parquet", s.work / "dask-out"
    local: list[Run] = []
    dask: list[Run] = []
    failed: Run | None = None
    for _ in range(s.rounds):
        argv = s.score_argv(parquet, local_out, "--workers", str(DASK_WORKERS))
        local.append(run_process(argv, s.work / "local.log").check())
        if failed is None:
            shutil.rmtree(dask_out, ignore_errors=True)
            argv = s.score_argv(parquet, dask_out, "--dask", f"local:{DASK_WORKERS}")
            run = run_process(argv, s.work / "dask.log")
            if run.ok:
                dask.append(run)
            else:
                failed = run
    local_row = Result(
        section="files",
        name=f"propensity score IN.parquet OUT.parquet --workers {DASK_WORKERS}: 1M rows, end to end",
        value=median([ROWS / r.seconds for r in local]),
        unit="rows/s",
        details={"seconds": [round(r.seconds, 2) for r in local], "printed": _printed(local)},
    )
    name = f"propensity score IN.parquet OUTDIR --dask local:{DASK_WORKERS}: the same rows, end to end"
    if failed is not None:
        reason = (failed.output.strip().splitlines() or ["no output"])[-1][:300]
        note = f"--dask skipped: exit {failed.returncode}: {reason}"
        return [local_row, Result("files", name, math.nan, "rows/s", note=note)]
    same = _same_parquet_phat(local_out, dask_out)
    ratios = [(ROWS / d.seconds) / (ROWS / r.seconds) for r, d in zip(local, dask, strict=True)]
    dask_row = Result(
        section="files",
        name=name,
        value=median([ROWS / r.seconds for r in dask]),
        unit="rows/s",
        ratio=median(ratios),
        ratio_label="dask ÷ local rows/s",
        note=(
            f"Parquet, 1M rows in 10 row groups: printed rows/s local {median(_printed(local)):,.0f}, "
            f"dask {median(_printed(dask)):,.0f} (a cluster of {DASK_WORKERS} processes started for each "
            f"run, its start-up included); the {same['rows']:,} phat of the parts equal the local "
            f"output's: {same['identical']:,} bit for bit"
        ),
        details={"seconds": [round(r.seconds, 2) for r in dask], "printed": _printed(dask), "check": same},
    )
    return [local_row, dask_row]


def _printed(runs: list[Run]) -> list[float]:
    return [r.printed_rows_per_second() for r in runs]


def _same_parquet_phat(local_out: Path, dask_out: Path) -> dict[str, int]:
    """The parts, in name order, hold the local output's rows and phat (raises otherwise)."""
    import numpy as np
    import pyarrow.parquet as pq

    local = pq.read_table(local_out, columns=["phat"])["phat"].to_numpy()
    parts = sorted(dask_out.glob("part-*.parquet"))
    distributed = np.concatenate([pq.read_table(p, columns=["phat"])["phat"].to_numpy() for p in parts])
    if len(distributed) != len(local) or len(local) != ROWS:
        raise RuntimeError(f"rows: local {len(local):,}, dask {len(distributed):,} in {len(parts)} parts")
    diff = float(np.max(np.abs(local - distributed)))
    if not diff <= PHAT_TOLERANCE:
        raise RuntimeError(f"the dask parts' phat differ from the local output's by up to {diff:.3g}")
    return {"rows": len(local), "identical": int(np.count_nonzero(local == distributed)), "parts": len(parts)}
