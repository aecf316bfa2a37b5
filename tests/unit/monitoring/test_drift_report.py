"""`propensity drift-report`: a self-contained HTML report from a CSV or from the live service's spool."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.durations import parse_duration
from service.model.registry import Registry
from tests.conftest import app_client

runner = CliRunner()


@pytest.fixture
def env(approved_registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(approved_registry.root))
    monkeypatch.setenv("PROPENSITY_DRIFT_SPOOL_DIR", str(tmp_path / "spool"))
    return tmp_path


def images(html: str) -> dict[str, str]:
    return dict(re.findall(r'id="plot-([^"]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html))


def assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<link" not in html and "<script" not in html


def test_report_of_a_shifted_csv(env: Path, shifted_csv: Path) -> None:
    out = env / "report.html"
    result = runner.invoke(app, ["drift-report", "--data", str(shifted_csv), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.startswith("x")}
    for column in ("x91", "x31", "x12"):
        assert " alert " in lines[column], lines[column]
    for column in ("x53", "x44", "x62", "x58", "x56", "x5", "x81"):
        assert " ok " in lines[column], lines[column]
    html = out.read_text()
    plots = images(html)
    assert set(plots) == {"x91", "x53", "x44", "x12", "x62", "x58", "x56", "x5", "x81", "x31", "phat"}
    assert all(len(png) > 1000 for png in plots.values())
    assert "<table>" in html and "<th>PSI</th>" in html and "unseen levels in" in html
    assert_self_contained(html)


@pytest.mark.slow
def test_fail_on_alert_exits_3(env: Path, shifted_csv: Path) -> None:
    result = runner.invoke(
        app, ["drift-report", "--data", str(shifted_csv), "--out", str(env / "r.html"), "--fail-on-alert"]
    )
    assert result.exit_code == 3


@pytest.mark.slow
def test_report_of_what_the_service_scored(
    env: Path, approved_registry: Registry, shifted_rows: pd.DataFrame
) -> None:
    spool = env / "spool"
    with app_client(approved_registry, drift_spool_dir=spool, drift_chunk_rows=500) as client:
        rows = shifted_rows.head(2_000).to_dict(orient="records")
        for i in range(0, 2_000, 500):
            body = orjson.dumps(rows[i : i + 500])
            response = client.post("/predict", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 200
    out = env / "live.html"
    result = runner.invoke(app, ["drift-report", "--since", "15m", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "propensity/v1: 2000 rows, overall alert" in result.output
    html = out.read_text()
    assert "the service&#x27;s last 0.25 h (spool)" in html and len(images(html)) == 11
    assert_self_contained(html)


def test_since_without_records_or_spool_fails_clearly(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = runner.invoke(app, ["drift-report", "--since", "2h", "--out", str(env / "r.html")])
    assert result.exit_code == 1 and "no drift records in the last 7200s" in result.output
    monkeypatch.delenv("PROPENSITY_DRIFT_SPOOL_DIR")
    result = runner.invoke(app, ["drift-report", "--since", "2h"])
    assert result.exit_code == 2 and "PROPENSITY_DRIFT_SPOOL_DIR" in result.output


@pytest.mark.parametrize("args", [[], ["--data", "x.csv", "--since", "1h"], ["--since", "soon"]])
def test_bad_arguments(env: Path, args: list[str]) -> None:
    assert runner.invoke(app, ["drift-report", *args]).exit_code == 2


def test_missing_csv_column_is_a_clear_error(env: Path, tmp_path: Path) -> None:
    csv = tmp_path / "few.csv"
    pd.DataFrame({"x91": [0.1, 0.2]}).to_csv(csv, index=False)
    result = runner.invoke(app, ["drift-report", "--data", str(csv), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 1 and "missing column(s)" in result.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "-5", "5x", "h", "1h 30"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
