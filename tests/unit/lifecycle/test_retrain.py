"""Gated retraining: pass and refuse paths, invalid data, failures; production moves only on a pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.errors import DataValidationError
from service.lifecycle import retrain as retrain_module
from service.lifecycle.retrain import FAILED, PROMOTED, STAGED, read_decisions, retrain
from service.model.registry import Registry
from service.model.synthetic import write_synthetic_csv
from service.model.training import RECIPES, split_like_notebook
from service.settings import Settings

LOOSE = {
    "retrain_auto_promote": True,  # the policy these tests judge (off by default: test_staged_by_default)
    "retrain_min_rows": 1_000,
    "retrain_bootstrap": 200,
    "retrain_max_auc_drop": 0.03,
    "retrain_max_log_loss_increase": 0.03,
    "retrain_max_brier_increase": 0.01,
}


@pytest.fixture
def registry(approved_registry: Registry, tmp_path: Path) -> Registry:
    """A private copy of the registry with the approved model as v1 = production."""
    shutil.copytree(approved_registry.root, tmp_path / "artifacts")
    return Registry(tmp_path / "artifacts", "propensity")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("retrain-data")


@pytest.fixture(scope="session")
def good_csv(data_dir: Path) -> Path:
    path = data_dir / "good.csv"
    write_synthetic_csv(path, 6_000, 11)
    return path


@pytest.fixture(scope="session")
def shuffled_csv(good_csv: Path, data_dir: Path) -> Path:
    """Same rows, labels shuffled among the rows the challenger trains on (the train split): it learns
    nothing. The holdout rows keep their true labels, so the comparison stays honest (shuffling every
    label would make the champion look as bad as the challenger, and the gate rightly would not mind)."""
    frame = pd.read_csv(good_csv)
    train_rows = split_like_notebook(frame, "y").X_train.index
    frame.loc[train_rows, "y"] = np.random.default_rng(0).permutation(frame.loc[train_rows, "y"].to_numpy())
    path = data_dir / "shuffled.csv"
    frame.to_csv(path, index=False)
    return path


def settings_for(registry: Registry, **overrides: Any) -> Settings:
    return Settings(artifacts_dir=registry.root, **{**LOOSE, **overrides})


def test_a_good_challenger_is_promoted_and_the_decision_is_in_its_metadata(
    registry: Registry, good_csv: Path
) -> None:
    outcome = retrain(good_csv, registry, settings_for(registry))
    assert outcome.decision == PROMOTED and outcome.version == "v2" and outcome.champion == "v1"
    # production serves the challenger's model at the approved cutoff: v2 registered again as v3
    assert registry.resolve("production") == outcome.served == "v3" and registry.resolve("staging") == "v2"
    served = registry.metadata("v3")
    assert served["cutoff"]["value"] == 0.712 != registry.metadata("v2")["cutoff"]["value"]
    assert (
        served["derived_from"]["version"] == "v2"
        and served["coefficients"] == registry.metadata("v2")["coefficients"]
    )
    meta = registry.verify("v2").metadata  # the decision is covered by the artifact's checksums
    record = meta["retraining"]
    assert (
        record["decision"] == PROMOTED and record["gate"]["passed"] and record["champion"]["version"] == "v1"
    )
    assert record["holdout"]["rows"] == 1_200  # val + test of 6,000 rows
    for side in ("champion", "challenger"):
        e = record["evaluation"][side]
        assert 0.7 < e["auc"] < 0.9 and e["auc_ci95"][0] < e["auc"] < e["auc_ci95"][1]
        assert len(e["calibration_by_decile"]) == 10 and e["log_loss"] > 0 and e["brier"] > 0
    assert 0 <= record["evaluation"]["challenger_minus_champion"]["outcome_flip_share"] < 0.1
    assert record["data"]["sha256"] == meta["data_sha256"] and record["data"]["rows"] == 6_000
    log = read_decisions(registry)
    assert [r["decision"] for r in log] == [PROMOTED] and log[0]["version"] == "v2"


def test_a_label_shuffled_challenger_is_refused_and_production_is_unchanged(
    registry: Registry, shuffled_csv: Path
) -> None:
    before = registry.aliases()["production"]
    outcome = retrain(shuffled_csv, registry, settings_for(registry))
    assert outcome.decision == STAGED
    assert registry.aliases()["production"] == before
    assert registry.resolve("staging") == outcome.version == "v2"
    record = registry.metadata("v2")["retraining"]
    assert not record["gate"]["passed"] and record["decision"] == STAGED
    assert any(r.startswith("AUC") for r in record["gate"]["refusals"])
    assert record["evaluation"]["challenger"]["auc"] < 0.6
    assert read_decisions(registry)[-1]["decision"] == STAGED


def test_labels_shuffled_everywhere_are_caught_by_the_auc_floor(
    registry: Registry, good_csv: Path, tmp_path: Path
) -> None:
    """The holdout is drawn from the new data: with every label shuffled the champion scores AUC ~0.5 on
    it too, so "not worse than the champion" holds; the absolute floor refuses the challenger."""
    frame = pd.read_csv(good_csv)
    frame["y"] = np.random.default_rng(1).permutation(frame["y"].to_numpy())
    path = tmp_path / "all-shuffled.csv"
    frame.to_csv(path, index=False)
    outcome = retrain(path, registry, settings_for(registry))
    assert outcome.decision == STAGED and registry.resolve("production") == "v1"
    refusals = outcome.record["gate"]["refusals"]
    assert len(refusals) == 1 and "below the floor of 0.7" in refusals[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("few_rows", "retraining needs at least"),
        ("one_class_mostly", "minority class"),
        ("mostly_missing", "mostly missing: x12"),
        ("garbage", "column x7"),
        ("no_file", "no such file"),
    ],
)
def test_invalid_data_fails_and_changes_nothing(
    registry: Registry, good_csv: Path, tmp_path: Path, change: str, message: str
) -> None:
    frame = pd.read_csv(good_csv)
    if change == "few_rows":
        frame = frame.head(900)
    elif change == "one_class_mostly":
        frame.loc[frame.index[:5_800], "y"] = 1
    elif change == "mostly_missing":
        frame.loc[frame.index[:4_000], "x12"] = np.nan
    elif change == "garbage":
        frame["x7"] = frame["x7"].astype(object)
        frame.loc[[3, 8], "x7"] = "n/a?"
    path = tmp_path / "bad.csv"
    if change != "no_file":
        frame.to_csv(path, index=False)
    aliases = registry.aliases()
    with pytest.raises(DataValidationError, match=message):
        retrain(path, registry, settings_for(registry))
    assert registry.versions() == ["v1"] and registry.aliases() == aliases
    last = read_decisions(registry)[-1]
    assert last["decision"] == FAILED and message.split(":")[0] in last["error"]


def test_a_crash_mid_retrain_leaves_production_alone(
    registry: Registry, good_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError("out of memory while fitting")

    monkeypatch.setattr(retrain_module, "evaluate_models", boom)
    with pytest.raises(MemoryError):
        retrain(good_csv, registry, settings_for(registry))
    assert registry.versions() == ["v1"] and registry.resolve("production") == "v1"
    assert "staging" not in registry.aliases()
    assert read_decisions(registry)[-1]["error"].startswith("MemoryError")


@pytest.mark.slow
def test_passing_challengers_are_held_for_a_human_when_policy_says_so(
    registry: Registry, good_csv: Path
) -> None:
    outcome = retrain(good_csv, registry, settings_for(registry, retrain_auto_promote=False))
    assert outcome.decision == STAGED and registry.resolve("production") == "v1"
    gate = outcome.record["gate"]
    assert gate["passed"] and gate["refusals"] == [] and "a person promotes it" in gate["held"][0]
    outcome = retrain(good_csv, registry, settings_for(registry), RECIPES["median"])
    assert outcome.decision == STAGED and registry.resolve("production") == "v1"
    assert "not the approved one" in outcome.record["gate"]["held"][0]
    assert registry.resolve("staging") == "v3"


@pytest.mark.slow
def test_the_cli_exit_codes(
    registry: Registry, good_csv: Path, shuffled_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(registry.root))
    for key, value in LOOSE.items():
        monkeypatch.setenv(f"PROPENSITY_{key.upper()}", str(value))
    runner = CliRunner()
    result = runner.invoke(app, ["retrain", "--data", str(shuffled_csv)])
    assert result.exit_code == 3, result.output
    assert "REFUSED by the gate: production stays v1" in result.output and "AUC" in result.output
    result = runner.invoke(app, ["retrain", "--data", str(good_csv)])
    assert result.exit_code == 0, result.output
    assert (
        "PROMOTED: production -> v4 (v3 with the kept cutoff 0.712)" in result.output
        and "flip" in result.output
    )
    result = runner.invoke(app, ["retrain", "--data", str(good_csv.parent / "nope.csv")])
    assert result.exit_code == 1 and "production unchanged" in result.output
    result = runner.invoke(app, ["retrain", "--data", str(good_csv), "--recipe", "magic"])
    assert result.exit_code == 2
    assert registry.resolve("production") == "v4"
    decisions = [
        json.loads(line)["decision"] for line in (registry.dir / "retraining.jsonl").read_text().splitlines()
    ]
    assert decisions == [STAGED, PROMOTED, FAILED]


@pytest.mark.slow
def test_default_margins_promote_a_faithful_retrain(registry: Registry, tmp_path: Path) -> None:
    """20,000 synthetic rows drawn from the approved GLM: a retrain is as good as the champion within the
    default margins (0.005 AUC, 0.005 log loss, 0.002 Brier), with 1,000 bootstrap resamples."""
    csv = tmp_path / "20k.csv"
    write_synthetic_csv(csv, 20_000, 11)
    outcome = retrain(csv, registry, Settings(artifacts_dir=registry.root, retrain_auto_promote=True))
    assert outcome.decision == PROMOTED, outcome.record["gate"]
    diff = outcome.record["evaluation"]["challenger_minus_champion"]
    assert abs(diff["auc"]) < 0.005 and diff["auc_ci95"][0] < 0.0 < diff["auc_ci95"][1] + 0.002


def test_the_gate_refuses_a_miscalibrated_challenger(
    registry: Registry, good_csv: Path, tmp_path: Path
) -> None:
    """The challenger's train split is labelled from an overconfident truth (twice the approved logit):
    it ranks the holdout as well as the champion, but its probabilities are too extreme there. With the
    loss margins wide open only the calibration check stands in its way."""
    frame = pd.read_csv(good_csv)
    champion = registry.load("production").model
    train_rows = split_like_notebook(frame, "y").X_train.index
    lp = champion.linear_predictor(frame.loc[train_rows].drop(columns=["y"]))
    rng = np.random.default_rng(4)
    frame.loc[train_rows, "y"] = (rng.random(lp.size) < 1 / (1 + np.exp(-2.5 * lp))).astype(np.int64)
    path = tmp_path / "overconfident.csv"
    frame.to_csv(path, index=False)
    wide = {"retrain_max_log_loss_increase": 1.0, "retrain_max_brier_increase": 1.0}
    outcome = retrain(path, registry, settings_for(registry, **wide))
    assert outcome.decision == STAGED and registry.resolve("production") == "v1"
    gate, challenger = outcome.record["gate"], outcome.record["evaluation"]["challenger"]
    assert len(gate["refusals"]) == 1 and gate["refusals"][0].startswith("calibration slope")
    assert "too extreme" in gate["refusals"][0] and challenger["calibration_slope"] < 0.8
    assert gate["calibration_min_slope"] == 0.8 and gate["calibration_max_slope"] == 1.25
    champion_record = outcome.record["evaluation"]["champion"]
    assert abs(champion_record["calibration_slope"] - 1) < 0.25  # the champion is calibrated on them
    loose = settings_for(registry, **wide, retrain_calibration_min_slope=0.1)
    assert retrain(path, registry, loose).decision == PROMOTED  # the same challenger, without the check


def test_gate_calibration_bands() -> None:
    from service.lifecycle.retrain import Gate
    from service.model.evaluation import Calibration, Evaluation

    def evaluation(slope: float, intercept: float, auc: float = 0.8) -> Evaluation:
        fit = Calibration(slope=slope, slope_se=0.05, intercept=intercept, intercept_se=0.04, converged=True)
        return Evaluation(1_000, auc, (auc, auc), 0.5, 0.2, [], 0.01, 0.25, fit)

    gate = Gate.from_settings(Settings())
    champion = evaluation(1.0, 0.0)
    assert gate.refusals(champion, evaluation(1.0, 0.0), 0.0) == []
    assert gate.refusals(champion, evaluation(0.81, 0.19), 0.0) == []
    [timid] = gate.refusals(champion, evaluation(1.3, 0.0), 0.0)
    assert "calibration slope 1.300" in timid and "too timid" in timid
    [under] = gate.refusals(champion, evaluation(1.0, 0.25), 0.0)
    assert "calibration intercept +0.250" in under and "under-predicts" in under
    [over] = gate.refusals(champion, evaluation(1.0, -0.3), 0.0)
    assert "over-predicts" in over
    assert len(gate.refusals(champion, evaluation(float("nan"), 0.0), 0.0)) == 1  # not estimable: refused
    floor = gate.refusals(evaluation(0.6, 0.0, 0.6), evaluation(0.2, 2.0, 0.6), 0.0)
    assert len(floor) == 1 and "below the floor" in floor[0]  # a model that does not rank: the floor speaks
