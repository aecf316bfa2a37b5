"""Retraining on logged labelled rows: a full refit and the recalibrated champion through the same gate."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.lifecycle.challengers import (
    RECALIBRATED,
    REFIT,
    REFUSED,
    REGISTERED,
    compare_and_register,
    redact_url,
    training_frame,
)
from service.lifecycle.retrain import PROMOTED, STAGED, read_decisions
from service.model.registry import Registry
from service.model.schema import notebook_schema
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel
from service.settings import Settings

LOOSE: dict[str, Any] = {
    "retrain_auto_promote": True,  # the policy these tests judge; off by default
    "retrain_min_rows": 1_000,
    "retrain_bootstrap": 200,
    "retrain_max_auc_drop": 0.03,
    "retrain_max_log_loss_increase": 0.03,
    "retrain_max_brier_increase": 0.01,
}
TRUE_A, TRUE_B = 0.4, 0.7  # labels from a shifted truth: logit = 0.4 + 0.7 * the approved logit


@pytest.fixture
def registry(approved_registry: Registry, tmp_path: Path) -> Registry:
    shutil.copytree(approved_registry.root, tmp_path / "artifacts")
    return Registry(tmp_path / "artifacts", "propensity")


def logged_rows(
    registry: Registry, rows: int, seed: int
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """What the prediction log holds: per scored row the raw values of the columns the model uses, as a
    client sent them (JSON), the approved model's phat, and a label drawn from the shifted truth."""
    artifact = registry.load("production")
    compiled = CompiledModel.from_artifact(artifact)
    frame = make_synthetic_frame(rows, seed, target=False)
    sent: list[dict[str, Any]] = orjson.loads(frame[compiled.used_columns].to_json(orient="records"))
    phat = np.asarray(compiled.score(sent).phat)
    lp = np.log(phat) - np.log1p(-phat)
    rng = np.random.default_rng(seed + 1)
    labels = (rng.random(rows) < 1 / (1 + np.exp(-(TRUE_A + TRUE_B * lp)))).astype(np.int64)
    return sent, phat, labels


def labelled_frame(sent: list[dict[str, Any]], labels: np.ndarray) -> pd.DataFrame:
    """The shape PredictionStore.labelled_frame returns (columns the log lacks are None throughout)."""
    columns = list(notebook_schema().columns)
    records = [
        {**{c: row.get(c) for c in columns}, "y": int(y), "scored_at": 0.0, "version": "v1"}
        for row, y in zip(sent, labels, strict=True)
    ]
    return pd.DataFrame.from_records(records, columns=[*columns, "y", "scored_at", "version"])


def test_training_frame_keeps_what_the_log_stored() -> None:
    logged = pd.DataFrame(
        {
            "x5": ["monday", "", None],
            "x12": ["$1,000.00", "NaN", 3.0],
            "x7": [None, None, None],
            "y": [1, 0, 1],
        }
    )
    tf = training_frame(logged, notebook_schema())
    assert tf.present == ("x5", "x12") and "x7" in tf.absent and len(tf.absent) == 98
    assert tf.frame["x5"].tolist() == ["monday", None, None] and tf.frame["x12"].tolist() == [
        "$1,000.00",
        None,
        3.0,
    ]
    assert tf.frame["y"].tolist() == [1, 0, 1] and tf.schema.columns == ("x5", "x12")
    assert (
        tf.schema.numeric == ("x12",)
        and tf.schema.categorical == ("x5",)
        and tf.schema.formats == {"x12": "money"}
    )


def test_redact_url() -> None:
    assert (
        redact_url("postgresql+psycopg://app:s3cr:t@127.0.0.1:5432/log")
        == "postgresql+psycopg://app:***@127.0.0.1:5432/log"
    )
    assert redact_url("sqlite:////tmp/log.sqlite") == "sqlite:////tmp/log.sqlite"


def test_both_challengers_are_judged_and_the_recalibration_wins(registry: Registry) -> None:
    sent, _, labels = logged_rows(registry, 6_000, 21)
    tf = training_frame(labelled_frame(sent, labels), notebook_schema())
    settings = Settings(artifacts_dir=registry.root, **LOOSE)
    outcome = compare_and_register(tf, registry, settings, data={"source": "test rows"})
    assert outcome.champion == "v1" and outcome.holdout_rows == 1_200 and len(outcome.trained_on) == 10
    by_kind = {c.kind: c for c in outcome.challengers}
    assert list(by_kind) == [REFIT, RECALIBRATED]
    recalibrated, refit = by_kind[RECALIBRATED], by_kind[REFIT]
    assert recalibrated.decision == PROMOTED and outcome.promoted is recalibrated
    assert registry.resolve("production") == registry.resolve("staging") == recalibrated.version
    ours = recalibrated.record["evaluation"]
    assert ours["challenger"]["log_loss"] < ours["champion"]["log_loss"] - 0.005
    assert abs(ours["challenger"]["calibration_slope"] - 1) < 0.2
    assert abs(ours["champion"]["calibration_slope"] - TRUE_B) < 0.15  # the champion is off on these rows
    assert ours["challenger"]["log_loss"] < refit.record["evaluation"]["challenger"]["log_loss"]
    assert recalibrated.record["cutoff"] == {
        "value": 0.712,
        "policy": "keep",
        "rule": "kept: the champion's approved cutoff, unchanged",
    }
    assert (
        refit.record["cutoff"]["policy"] == "recompute" and "quantile 0.75" in refit.record["cutoff"]["rule"]
    )
    assert refit.decision in (REGISTERED, REFUSED) and (refit.version is None) == (refit.decision == REFUSED)
    meta = registry.verify(recalibrated.version).metadata
    assert meta["recalibrated_from"] == "v1" and meta["retraining"]["decision"] == PROMOTED
    assert {"a", "b", "a_se", "b_se"} <= set(meta["recalibration"])
    log = read_decisions(registry)
    assert [(r["challenger"], r["decision"]) for r in log] == [
        (REFIT, refit.decision),
        (RECALIBRATED, PROMOTED),
    ]
    assert log[0]["data"]["trained_on"] == list(outcome.trained_on) and len(log[0]["data"]["absent"]) == 90


def test_with_automatic_promotion_off_the_winner_is_only_staged(registry: Registry) -> None:
    sent, _, labels = logged_rows(registry, 6_000, 21)
    tf = training_frame(labelled_frame(sent, labels), notebook_schema())
    settings = Settings(artifacts_dir=registry.root, **{**LOOSE, "retrain_auto_promote": False})
    outcome = compare_and_register(tf, registry, settings, data={"source": "test rows"}, cutoff="recompute")
    recalibrated = next(c for c in outcome.challengers if c.kind == RECALIBRATED)
    assert recalibrated.decision == STAGED and outcome.promoted is None
    assert registry.resolve("production") == "v1" and registry.resolve("staging") == recalibrated.version
    assert (
        recalibrated.record["cutoff"]["policy"] == "recompute"
        and recalibrated.record["cutoff"]["value"] != 0.712
    )


def test_cli_retrains_from_a_sqlite_prediction_log(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.monitoring.prediction_store import LabelItem, PredictionStore

    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    store = PredictionStore.open(url)
    store.migrate()
    sent, phat, labels = logged_rows(registry, 6_000, 21)
    now = time.time()
    old = now - 200 * 86_400  # scored before the window: not trained on
    rows = [
        (
            "b1",
            f"req-{i // 100}",
            i % 100,
            None,
            None,
            "v1",
            old if i < 500 else now - 3_600,
            float(p),
            int(p > 0.712),
            orjson.dumps(r).decode(),
        )
        for i, (r, p) in enumerate(zip(sent, phat, strict=True))
    ]
    assert store.write(rows) == 6_000
    counts = store.apply_labels([LabelItem(int(y), f"req-{i // 100}", i % 100) for i, y in enumerate(labels)])
    assert counts.matched == 6_000
    store.close()
    monkeypatch.setenv("PROPENSITY_ARTIFACTS_DIR", str(registry.root))
    monkeypatch.setenv("PROPENSITY_PREDICTION_LOG_URL", url)
    for key, value in LOOSE.items():
        monkeypatch.setenv(f"PROPENSITY_{key.upper()}", str(value))
    runner = CliRunner()
    result = runner.invoke(app, ["retrain", "--from-log", "--since", "90d"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "trained on 10 logged column(s): " in out, out
    assert "holdout: 1100 labelled rows" in out  # val + test of the 5,500 rows inside the window
    assert "calibration slope" in out and "refit" in out and "recalibrated" in out
    assert "recalibrated: PROMOTED (registered propensity/" in out and "cutoff 0.7120, kept" in out
    assert "refit: " in out and "recomputed by its recipe: quantile 0.75" in out
    assert "PROMOTED: production -> " in out and "(the recalibrated challenger)" in out
    production = registry.metadata("production")
    assert production["recalibrated_from"] == "v1" and production["retraining"]["data"]["rows"] == 5_500
    assert production["retraining"]["data"]["database"] == url
    assert runner.invoke(app, ["retrain", "--from-log", "--data", "x.csv"]).exit_code == 2
    assert runner.invoke(app, ["retrain"]).exit_code == 2
    assert runner.invoke(app, ["retrain", "--from-log", "--cutoff", "guess"]).exit_code == 2
