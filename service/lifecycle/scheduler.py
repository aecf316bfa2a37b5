"""The retraining scheduler: every so often, retrain on the newest CSV in a data directory.

A cycle picks the newest `*.csv` in the directory (by modification time; names starting with "." are
ignored, so writers can upload to ".name.csv" and rename). A file whose sha256 already appears in the
registry's retraining log (trained on, refused, or failed validation) is not tried again: a new file
is needed. Each retrain runs in-process through service.lifecycle.retrain, which records its own decision;
a failure is logged and the loop goes on. Production only ever changes inside a successful, passing
retrain (one atomic alias write).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from service.lifecycle.retrain import read_decisions, retrain
from service.model.artifact import sha256_file
from service.model.registries import ModelRegistry
from service.model.training import Recipe
from service.settings import Settings

log = logging.getLogger("propensity.scheduler")
NO_DATA, UNCHANGED = "no-data", "unchanged"


def newest_csv(directory: Path) -> Path | None:
    candidates = []
    for path in Path(directory).glob("*.csv"):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            candidates.append((path.stat().st_mtime, path.name, path))
        except OSError:
            continue
    return max(candidates)[2] if candidates else None


@dataclass(frozen=True)
class CycleResult:
    outcome: str  # no-data | unchanged | promoted | staged | failed
    data: Path | None = None
    version: str | None = None
    detail: str = ""


def run_cycle(
    directory: Path, registry: ModelRegistry, settings: Settings, recipe: Recipe | None = None
) -> CycleResult:
    """One scheduler cycle. Never raises for a failed retrain (it is recorded and logged)."""
    data = newest_csv(directory)
    if data is None:
        log.info("no CSV in %s; nothing to do", directory)
        return CycleResult(NO_DATA)
    try:
        digest = sha256_file(data)
    except OSError as exc:
        log.error("cannot read %s: %s", data, exc)
        return CycleResult("failed", data, detail=str(exc))
    if any((r.get("data") or {}).get("sha256") == digest for r in read_decisions(registry)):
        log.info("%s (sha256 %s) was already tried; waiting for new data", data.name, digest[:12])
        return CycleResult(UNCHANGED, data)
    log.info("retraining on %s", data)
    try:
        outcome = retrain(data, registry, settings, recipe)
    except Exception as exc:  # recorded by retrain(); the scheduler keeps going
        detail = getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
        return CycleResult("failed", data, detail=str(detail))
    gate = outcome.record.get("gate", {})
    return CycleResult(outcome.decision, data, outcome.version, "; ".join(gate["refusals"] + gate["held"]))


def run_scheduler(
    directory: Path,
    every_seconds: float,
    registry: ModelRegistry,
    settings: Settings,
    *,
    max_runs: int | None = None,
    stop: threading.Event | None = None,
    recipe: Recipe | None = None,
    on_result: Callable[[CycleResult], None] | None = None,
) -> list[CycleResult]:
    """Run cycles every `every_seconds` until `stop` is set or `max_runs` cycles have run."""
    stop = stop or threading.Event()
    results: list[CycleResult] = []
    while not stop.is_set():
        results.append(run_cycle(directory, registry, settings, recipe))
        if on_result is not None:
            on_result(results[-1])
        if max_runs is not None and len(results) >= max_runs:
            break
        stop.wait(every_seconds)
    return results
