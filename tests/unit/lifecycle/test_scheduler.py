"""The retraining scheduler: newest CSV, one try per file, failures recorded and survived."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.lifecycle.retrain import read_decisions
from service.lifecycle.scheduler import NO_DATA, UNCHANGED, newest_csv, run_cycle, run_scheduler
from service.model.registry import Registry
from service.model.synthetic import write_synthetic_csv
from service.settings import Settings

FAST: dict[str, Any] = {"retrain_min_rows": 1_000, "retrain_bootstrap": 100, "retrain_max_auc_drop": 0.03}


@pytest.fixture
def registry(approved_registry: Registry, tmp_path: Path) -> Registry:
    shutil.copytree(approved_registry.root, tmp_path / "artifacts")
    return Registry(tmp_path / "artifacts", "propensity")


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sched") / "batch.csv"
    write_synthetic_csv(path, 4_000, 21)
    return path


def drop(directory: Path, name: str, source: Path, mtime: float) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    shutil.copy(source, path)
    os.utime(path, (mtime, mtime))
    return path


def test_newest_csv_ignores_hidden_and_other_files(tmp_path: Path, small_csv: Path) -> None:
    assert newest_csv(tmp_path) is None
    drop(tmp_path, "2026-01.csv", small_csv, 1_000)
    newest = drop(tmp_path, "2026-02.csv", small_csv, 2_000)
    drop(tmp_path, ".2026-03.csv", small_csv, 3_000)  # still uploading
    drop(tmp_path, "notes.txt", small_csv, 4_000)
    assert newest_csv(tmp_path) == newest


def test_each_file_is_tried_once_and_failures_do_not_stop_the_loop(
    registry: Registry, tmp_path: Path, small_csv: Path
) -> None:
    settings = Settings(artifacts_dir=registry.root, **FAST)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    assert run_cycle(incoming, registry, settings).outcome == NO_DATA
    bad = incoming / "broken.csv"
    pd.read_csv(small_csv).head(500).to_csv(bad, index=False)  # fails validation: too few rows
    results = run_scheduler(incoming, 0, registry, settings, max_runs=2)
    assert [r.outcome for r in results] == ["failed", UNCHANGED]
    assert "retraining needs at least" in results[0].detail
    assert registry.versions() == ["v1"] and registry.resolve("production") == "v1"
    drop(incoming, "fresh.csv", small_csv, bad.stat().st_mtime + 10)
    results = run_scheduler(incoming, 0, registry, settings, max_runs=2)
    assert results[0].outcome in ("promoted", "staged") and results[0].version == "v2"
    assert results[1].outcome == UNCHANGED
    assert [r["decision"] for r in read_decisions(registry)] == ["failed", results[0].outcome]


def test_stop_event_ends_the_loop(registry: Registry, tmp_path: Path) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    results = run_scheduler(tmp_path, 3600, registry, Settings(artifacts_dir=registry.root), stop=stop)
    timer.join()
    assert [r.outcome for r in results] == [NO_DATA]


def test_cli_once(
    registry: Registry, tmp_path: Path, small_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(registry.root))
    for key, value in FAST.items():
        monkeypatch.setenv(f"PROPENSITY_{key.upper()}", str(value))
    incoming = tmp_path / "incoming"
    drop(incoming, "fresh.csv", small_csv, 1_000)
    runner = CliRunner()
    result = runner.invoke(app, ["retrain-scheduler", "--data-dir", str(incoming), "--once"])
    assert result.exit_code == 0, result.output
    assert "fresh.csv -> v2" in result.output
    result = runner.invoke(app, ["retrain-scheduler", "--data-dir", str(incoming), "--once"])
    assert result.exit_code == 0 and result.stdout.startswith("unchanged: fresh.csv")
    result = runner.invoke(app, ["retrain-scheduler", "--once"])
    assert result.exit_code == 2 and "--data-dir" in result.output
    result = runner.invoke(app, ["retrain-scheduler", "--data-dir", str(incoming), "--every", "often"])
    assert result.exit_code == 2
