"""The results table: on the console, as bench-results/latest.{json,md}, with the machine's facts."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from tools.bench.core import Options, Result
from tools.paths import REPO

COLUMNS = ("Workload", "Result", "p50 ms", "p99 ms", "Server CPU ms/req", "Ratio", "Target", "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "?"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "missing"
    return out.split(" [", 1)[0].strip() or "?"


def machine_facts() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "revision": _git_revision(),
        "load_generator": _wrk_version(),
    }


def _number(value: float | None, unit: str = "ms") -> str:
    if value is None:
        return ""
    if math.isnan(value):
        return "skipped"
    if unit in ("req/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "ms" and value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _ratio(result: Result) -> str:
    if result.ratio is None:
        return ""
    digits = 2 if result.ratio < 10 else 0
    return f"{result.ratio:,.{digits}f}x ({result.ratio_label})"


def cells(result: Result) -> list[str]:
    value = (
        _number(result.value, result.unit)
        if result.unit in ("req/s", "rows/s")
        else f"{_number(result.value)} {result.unit}"
    )
    return [
        result.name,
        value,
        _number(result.p50_ms),
        _number(result.p99_ms),
        _number(result.cpu_ms_per_req),
        _ratio(result),
        str(result.target or ""),
        result.verdict,
    ]


def setup_line(facts: dict[str, Any], options: Options) -> str:
    load = "/".join(str(x) for x in facts["loadavg_start"])
    mode = " (--quick)" if options.quick else ""
    return (
        f"{facts['date']}, {facts['nproc']} CPUs ({facts['cpu_model']}), load average at start {load}, "
        f"revision {facts['revision']}; single, batch, mixed: one gunicorn, production config, "
        f"{options.workers} uvicorn workers, cache off; {facts['load_generator']} -t1 "
        f"-c{options.concurrency}, {options.rounds} interleaved rounds of {options.seconds:g} s per "
        f"endpoint, {options.batch_reps} sequential batch POSTs{mode}"
    )


NOTES = (
    "Values are medians over rounds/repetitions; a ratio is the median of the ratios of measurements "
    "taken side by side (same round, or the same repetition), so load from other processes mostly cancels. "
    "Server CPU is the workers' CPU time per request (utime+stime from /proc), less noisy than req/s on a "
    "shared machine. The JSON floor runs in the benchmark process; everything else is over loopback HTTP."
)


def print_table(results: list[Result], facts: dict[str, Any], options: Options, errors: list[str]) -> None:
    console = Console(width=200)
    table = Table(title="make bench", caption=setup_line(facts, options), caption_justify="left")
    for n, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if n in (0, 5) else "right", overflow="fold")
    for section in dict.fromkeys(r.section for r in results):
        for result in (r for r in results if r.section == section):
            style = {"PASS": "green", "MISS": "bold red"}.get(result.verdict)
            table.add_row(*cells(result), style=style)
        table.add_section()
    console.print(table)
    for result in results:
        if result.note:
            console.print(f"  - {result.note}")
    for error in errors:
        console.print(f"[bold red]section failed:[/] {error}")


def markdown(results: list[Result], facts: dict[str, Any], options: Options, command: str) -> str:
    lines = [
        "## Benchmark",
        "",
        f"`{command}`: {setup_line(facts, options)}.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join(["---", *["---:"] * 4, "---", "---:", "---"]) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in results]
    lines += ["", *(f"- {r.note}" for r in results if r.note), "", NOTES, ""]
    return "\n".join(lines)


def _as_json(result: Result) -> dict[str, Any]:
    return {**dataclasses.asdict(result), "target": str(result.target or ""), "verdict": result.verdict}


def write(
    results: list[Result],
    facts: dict[str, Any],
    options: Options,
    command: str,
    errors: list[str],
    out_dir: Path,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = {**facts, "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    document = {
        "command": command,
        "machine": facts,
        "options": dataclasses.asdict(options),
        "results": [_as_json(r) for r in results],
        "errors": errors,
    }
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    stamp = facts["date"].replace(":", "").replace("-", "")
    paths = [out_dir / "latest.json", out_dir / "latest.md", out_dir / "history" / f"{stamp}.json"]
    paths[2].parent.mkdir(exist_ok=True)
    paths[0].write_bytes(data)
    paths[1].write_text(markdown(results, facts, options, command))
    paths[2].write_bytes(data)
    return paths
