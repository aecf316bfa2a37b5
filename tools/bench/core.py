"""What every benchmark section shares: options, the measured results, the context, the section registry.

A section is one function `(ctx: Context) -> list[Result]` registered with `@section(name, about)`;
`python -m tools.bench.run --only NAME` runs just that one. `ctx.server()` is the shared benchmark server
(production config, cache off); the cluster section starts a whole cluster of its own.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tools.bench.server import BenchServer


@dataclass(frozen=True)
class Options:
    quick: bool = False
    concurrency: int = 16  # open connections of the single-row runs
    seconds: float = 5.0  # length of one wrk run
    warmup_seconds: float = 2.0
    rounds: int = 5  # interleaved rounds of the single-row runs (one wrk run per endpoint per round)
    workers: int = 2
    batch_rows: int = 10_000
    batch_reps: int = 15  # sequential POSTs of the batch body (and floor repetitions)
    naive_batch_reps: int = 3

    @classmethod
    def quick_run(cls, **overrides: Any) -> Options:
        base = {"quick": True, "seconds": 2.0, "warmup_seconds": 1.0, "rounds": 2}
        return cls(**{**base, "batch_reps": 5, "naive_batch_reps": 1, **overrides})


@dataclass(frozen=True)
class Target:
    op: Literal[">=", "<="]
    bound: float

    def met(self, ratio: float) -> bool:
        return ratio >= self.bound if self.op == ">=" else ratio <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.bound:g}x"


@dataclass
class Result:
    """One line of the table. `ratio` is always stated as `ratio_label` reads (e.g. "/predict ÷ hello")."""

    section: str
    name: str
    value: float
    unit: Literal["req/s", "ms", "µs", "rows/s", "MB"]
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_ms_per_req: float | None = None  # server (all workers) CPU per request
    ratio: float | None = None
    ratio_label: str = ""
    target: Target | None = None
    note: str = ""  # printed under the table
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        if self.target is None or self.ratio is None:
            return ""
        return "PASS" if self.target.met(self.ratio) else "MISS"


def median(values: list[float]) -> float:
    return float(statistics.median(values))


@dataclass
class Context:
    options: Options
    workdir: Path
    registry_dir: Path
    _server: BenchServer | None = None
    _stack: ExitStack = field(default_factory=ExitStack)

    def server_env(self, **overrides: str) -> dict[str, str]:
        """Settings of the benchmark server: production defaults, a temp registry, the cache off."""
        env = {
            "PROPENSITY_ARTIFACTS_DIR": str(self.registry_dir),
            "PROPENSITY_CACHE_ENABLED": "false",
            "PROPENSITY_LOG_LEVEL": "warning",
            # scoring alone; the "log" section measures the prediction log beside a server without it
            "PROPENSITY_PREDICTION_LOG_ENABLED": "false",
        }
        return {**env, **overrides}

    def server(self) -> BenchServer:
        """The shared benchmark server (cache disabled), started on first use and ready on every worker."""
        if self._server is None:
            server = BenchServer(
                self.server_env(), workers=self.options.workers, log_path=self.workdir / "gunicorn.log"
            )
            self._server = self._stack.enter_context(server)
        return self._server

    def close(self) -> None:
        self._stack.close()
        self._server = None


SectionFn = Callable[[Context], list[Result]]


@dataclass(frozen=True)
class Section:
    name: str
    about: str
    run: SectionFn
    default: bool  # part of a plain `make bench` (False: only with --only)
    quick: bool  # part of `--quick` (False: only without --quick, or with --only)


SECTIONS: dict[str, Section] = {}


def section(
    name: str, about: str, *, default: bool = True, quick: bool = True
) -> Callable[[SectionFn], SectionFn]:
    def register(fn: SectionFn) -> SectionFn:
        if name in SECTIONS:
            raise ValueError(f"benchmark section {name!r} is registered twice")
        SECTIONS[name] = Section(name, about, fn, default, quick)
        return fn

    return register
