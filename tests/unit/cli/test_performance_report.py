"""`propensity performance-report`: the prediction log of a period, evaluated at the served model's cutoff,
as one HTML file, with the path and a one-line summary on stdout."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.model.registry import Registry
from service.monitoring.prediction_store import LabelItem, PredictionStore
from tests.unit.monitoring.performance_fixture import DAY, START, synthetic_frame

runner = CliRunner()


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    """A SQLite prediction log with five days of synthetic predictions ending now, labels drawn from phat."""
    frame = synthetic_frame(n=6_000)
    shift = time.time() - (START + 5 * DAY)
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    store = PredictionStore.open(url)
    store.migrate()
    rows = [
        ("b1", f"r{i // 100}", i % 100, None, None, v, at + shift, p, int(o), "{}")
        for i, (v, at, p, o) in enumerate(
            zip(frame.version, frame.scored_at, frame.phat, frame.outcome, strict=True)
        )
    ]
    store.write(rows)
    labels = [
        LabelItem(label=int(y), request_id=f"r{i // 100}", row=i % 100)
        for i, y in enumerate(frame.label)
        if not math.isnan(y)
    ]
    counts = store.apply_labels(labels)
    assert counts.matched == int(np.isfinite(frame.label).sum())
    store.close()
    return url


@pytest.fixture
def env(approved_registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(approved_registry.root))
    monkeypatch.delenv("PROPENSITY_PREDICTION_LOG_URL", raising=False)
    return approved_registry


def test_a_report_of_the_log(env: Registry, log_url: str, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "perf.html"
    result = runner.invoke(app, ["performance-report", "--since", "7d", "--out", str(out), "--url", log_url])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"wrote {out}"
    cutoff = env.metadata("production")["cutoff"]["value"]
    assert re.fullmatch(
        rf"6000 predictions, \d+ labelled \(\d+\.\d%\), cutoff {cutoff}; "
        r"v1: AUC realized 0\.\d{3} vs estimated 0\.\d{3}.*; v2: AUC realized .*",
        lines[1],
    ), lines[1]
    page = out.read_text()
    assert f'<b class="cutoff">{float(cutoff):.6g}</b>' in page
    assert "<title>Performance of propensity</title>" in page
    assert "Cutoff of propensity/v1 (production) from the registry." in page
    assert len(re.findall(r'<figure id="plot-', page)) == 10


def test_by_hour_and_a_window_that_ends_earlier(env: Registry, log_url: str, tmp_path: Path) -> None:
    out = tmp_path / "perf.html"
    args = ["performance-report", "--since", "2d", "--until", "1d", "--by", "hour", "--out", str(out)]
    result = runner.invoke(app, [*args, "--url", log_url])
    assert result.exit_code == 0, result.output
    hours = set(re.findall(r"<td>(\d{4}-\d\d-\d\dT\d\d)</td>", out.read_text()))
    assert 23 <= len(hours) <= 25


def test_the_default_log_is_the_settings(
    env: Registry, log_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_PREDICTION_LOG_URL", log_url)
    result = runner.invoke(app, ["performance-report", "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith("6000 predictions")


def test_no_log_there_is_one_line(env: Registry, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.sqlite"
    result = runner.invoke(app, ["performance-report", "--url", f"sqlite:///{missing}"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"error: no prediction log at {missing}")
    assert not missing.exists()


@pytest.mark.parametrize(
    "args",
    [["--by", "week"], ["--since", "soon"], ["--until", "yesterday"], ["--since", "1d", "--until", "2d"]],
)
def test_bad_options_exit_2(env: Registry, args: list[str]) -> None:
    assert runner.invoke(app, ["performance-report", *args]).exit_code == 2
