"""`propensity experiment`: recipes on the same splits, one table (CSV, Markdown, JSON)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.model.experiment import markdown, run_study, save
from service.model.synthetic import make_synthetic_frame, write_synthetic_csv
from service.model.training import RECIPES


def test_study_compares_recipes_on_the_same_holdout(tmp_path: Path) -> None:
    frame = make_synthetic_frame(3_000, 9)
    study = run_study(frame, [RECIPES["notebook"], RECIPES["median"]], resamples=200)
    assert study.baseline == "notebook" and study.holdout_rows == 600 and study.data_rows == 3_000
    base, median = study.rows
    assert base.recipe == "notebook" and base.auc_vs_baseline == 0.0 and base.selection_vs_baseline == "+0/-0"
    assert base.auc_ci_low < base.auc < base.auc_ci_high
    assert median.auc_vs_baseline == pytest.approx(median.auc - base.auc)
    assert median.auc_vs_baseline_ci_low <= median.auc_vs_baseline <= median.auc_vs_baseline_ci_high
    assert base.features_kept == median.features_kept == 25 and base.seconds > 0
    table = markdown(study)
    assert "| notebook |" in table and "(baseline)" in table and "| median |" in table
    paths = save(study, tmp_path / "out")
    assert [p.name for p in paths] == ["study.csv", "study.md", "study.json"]
    assert list(pd.read_csv(paths[0])["recipe"]) == ["notebook", "median"]
    assert json.loads(paths[2].read_text())["rows"][1]["recipe"] == "median"


@pytest.mark.slow
def test_cli_experiment(tmp_path: Path) -> None:
    csv = tmp_path / "train.csv"
    write_synthetic_csv(csv, 2_500, 4)
    out = tmp_path / "study"
    result = CliRunner().invoke(
        app,
        [
            "experiment",
            "--data",
            str(csv),
            "--out",
            str(out),
            "--recipes",
            "notebook,all-rows",
            "--bootstrap",
            "50",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| all-rows |" in result.output and f"wrote {out / 'study.md'}" in result.output
    assert (out / "study.csv").is_file() and (out / "study.json").is_file()
    result = CliRunner().invoke(app, ["experiment", "--data", str(csv), "--recipes", "magic"])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["experiment", "--data", str(tmp_path / "none.csv")])
    assert result.exit_code == 1 and "no such file" in result.output
