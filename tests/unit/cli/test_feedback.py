"""`propensity feedback FILE`: a CSV of outcomes into the log, matched like POST /feedback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from service.cli import app
from service.monitoring.prediction_store import PredictionStore


def test_a_csv_of_outcomes_is_matched_and_counted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    store = PredictionStore.open(url)
    store.migrate()
    store.write([("b", "r1", i, f"C{i}", None, "v1", 100.0 + i, 0.5, 0, "{}") for i in range(3)])
    store.close()
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text(
        "request_id,row,label,observed_at\nr1,0,1,\nr1,0,1,\nr1,1,0,2026-12-01T00:00:00Z\nnope,0,1,\n"
    )
    by_id = tmp_path / "by-id.csv"
    by_id.write_text("customer_id,label\nC2,1\n")
    runner = CliRunner()
    result = runner.invoke(app, ["feedback", str(outcomes), "--url", url, "--artifacts-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "2 matched, 1 unmatched (kept to match later), 1 duplicate, 0 conflicting" in result.output
    result = runner.invoke(app, ["feedback", str(by_id), "--url", url, "--artifacts-dir", str(tmp_path)])
    assert "1 matched" in result.output
    frame = PredictionStore.open(url).frame(0.0)
    assert sorted(frame.label.tolist()) == [0.0, 1.0, 1.0]


def test_a_bad_line_is_named_by_its_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,row,label\nr1,0,1\nr1,x,7\n")
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    result = CliRunner().invoke(app, ["feedback", str(bad), "--url", url, "--artifacts-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "line 3, field label" in result.output
