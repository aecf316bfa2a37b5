"""`make bench`: the benchmark. Not a test; prints a table and writes bench-results/latest.{json,md}.

    .venv/bin/python -m tools.bench.run [--quick] [--only single,batch] [--list] [--strict]

It imports the approved model into a temporary registry, starts ONE gunicorn with the production config
serving tools.bench.bench_app (the production app plus a hello-world and the naive baseline), waits for
every worker to load its model, warms every endpoint up, then runs the selected sections.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from service.model.notebook_import import import_notebook
from service.model.registry import Registry
from tools.bench import (  # noqa: F401  (importing one registers it)
    artifact_bench,
    cluster,
    csv_bench,
    files_bench,
    log_bench,
    mixed,
    mlflow_bench,
    overhead,
    reasons_bench,
    sections,
    shadow_bench,
    v2_bench,
)
from tools.bench.core import SECTIONS, Context, Options, Result, Section
from tools.bench.report import machine_facts, print_table, write
from tools.bench.wrk import require_wrk
from tools.paths import REPO

# the table's order
ORDER = (
    "single",
    "batch",
    "v2",
    "invocations",
    "csv",
    "reasons",
    "mixed",
    "log",
    "shadow",
    "overhead",
    "cluster",
    "files",
    "artifact",
)


def ordered() -> list[Section]:
    return sorted(SECTIONS.values(), key=lambda s: ORDER.index(s.name) if s.name in ORDER else len(ORDER))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (about a minute in all)")
    parser.add_argument("--only", action="append", default=[], help="section(s) to run, comma-separated")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--concurrency", type=int, help="open connections of the single-row runs (16)")
    parser.add_argument("--seconds", type=float, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the single-row runs")
    parser.add_argument("--workers", type=int, help="gunicorn workers (2)")
    parser.add_argument("--batch-reps", type=int, help="sequential POSTs of the 10,000-row batch")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results", help="results directory")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (registry, gunicorn logs)")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    given = {
        k: v
        for k in ("concurrency", "seconds", "rounds", "workers", "batch_reps")
        if (v := getattr(args, k)) is not None
    }
    return Options.quick_run(**given) if args.quick else Options(**given)


def selected(args: argparse.Namespace) -> list[str]:
    names = [n.strip() for chunk in args.only for n in chunk.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    return names or [s.name for s in ordered() if s.default and (s.quick or not args.quick)]


def run_sections(ctx: Context, names: list[str]) -> tuple[list[Result], list[str]]:
    """Every section in order; a failing section is reported and the others still run."""
    results: list[Result] = []
    errors: list[str] = []
    for name in names:
        print(f"[bench] {name}: {SECTIONS[name].about}", flush=True)
        try:
            results += SECTIONS[name].run(ctx)
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return results, errors


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.list:
        for s in ordered():
            when = "" if s.default and s.quick else "(--only) " if not s.default else "(not in --quick) "
            print(f"{s.name:<12} {when}{s.about}")
        return 0
    require_wrk()
    options, names = options_from(args), selected(args)
    command = "make bench" + (f" BENCH_ARGS={shlex.quote(shlex.join(argv))}" if argv else "")
    facts = machine_facts()
    workdir = Path(tempfile.mkdtemp(prefix="propensity-bench-"))
    print(f"[bench] importing the approved model into {workdir / 'registry'}", flush=True)
    import_notebook(Registry(workdir / "registry"))
    ctx = Context(options, workdir, workdir / "registry")
    try:
        results, errors = run_sections(ctx, names)
    finally:
        ctx.close()
    print_table(results, facts, options, errors)
    for path in write(results, facts, options, command, errors, args.out)[:2]:
        print(f"[bench] wrote {path}")
    if args.keep or errors:
        print(f"[bench] kept {workdir} (registry, gunicorn logs)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    missed = any(r.verdict == "MISS" for r in results)
    return 1 if errors or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
