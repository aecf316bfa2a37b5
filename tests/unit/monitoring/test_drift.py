"""Drift monitoring: the planted shift is flagged (and nothing else), offline and in the running app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.model.registry import Registry
from service.monitoring.drift import ALERT, OK, Counts, DriftReference, DriftSummary, assess, count_batch
from service.monitoring.drift_monitor import FOLD_BATCHES, DriftMonitor
from service.monitoring.drift_spool import read_spool
from service.monitoring.drift_stats import Thresholds
from service.serving.metrics import Metrics
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tests.conftest import SHIFTED, app_client

UNSHIFTED_INPUTS = ("x53", "x44", "x62", "x58", "x56", "x5", "x81")


def rows_of(frame: pd.DataFrame, model: CompiledModel) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = frame[model.used_columns].to_dict(orient="records")
    return records


def summarise(model: CompiledModel, frame: pd.DataFrame) -> DriftSummary:
    ref = DriftReference.from_model(model)
    scored = model.score(rows_of(frame, model))
    counts = count_batch(ref, scored.numeric_values, scored.category_codes, np.asarray(scored.phat))
    return assess(ref, counts, Thresholds(), min_rows=1000)


def test_unshifted_synthetic_rows_flag_nothing(
    approved_compiled: CompiledModel, fresh_rows: pd.DataFrame
) -> None:
    summary = summarise(approved_compiled, fresh_rows)
    assert summary.status == OK and summary.flagged() == []
    assert summary.unseen_share == 0.0
    assert max(f.psi or 0.0 for f in summary.features) < 0.02


def test_planted_shift_flags_exactly_the_shifted_inputs(
    approved_compiled: CompiledModel, shifted_rows: pd.DataFrame
) -> None:
    summary = summarise(approved_compiled, shifted_rows)
    x91, x31, x12 = (summary.feature(c) for c in SHIFTED)
    assert x91.psi is not None and x91.psi >= 0.2 and x91.status == ALERT  # mean shift
    assert x31.status == ALERT and x31.unseen_share is not None and x31.unseen_share > 0.1  # new level
    assert x31.js is not None and x31.js >= 0.19
    assert summary.unseen_share > 0.1
    assert x12.status == ALERT and x12.missing_rate is not None and x12.missing_rate > 0.25  # more missing
    assert any("missing" in r for r in x12.reasons)
    for name in UNSHIFTED_INPUTS:
        f = summary.feature(name)
        assert f.status == OK and f.psi is not None and f.psi < 0.1, f
    assert set(summary.flagged()) == {*SHIFTED} | (
        {"phat"} if summary.feature("phat").status != OK else set()
    )


def test_too_few_rows_are_not_graded(approved_compiled: CompiledModel, shifted_rows: pd.DataFrame) -> None:
    ref = DriftReference.from_model(approved_compiled)
    scored = approved_compiled.score(rows_of(shifted_rows.head(50), approved_compiled))
    counts = count_batch(ref, scored.numeric_values, scored.category_codes, np.asarray(scored.phat))
    summary = assess(ref, counts, Thresholds(), min_rows=1000)
    assert not summary.reporting and summary.status == OK and summary.flagged() == []


def test_bad_rows_are_left_out(approved_compiled: CompiledModel, fresh_rows: pd.DataFrame) -> None:
    ref = DriftReference.from_model(approved_compiled)
    scored = approved_compiled.score(rows_of(fresh_rows.head(10), approved_compiled))
    keep = np.ones(10, dtype=bool)
    keep[[2, 5]] = False
    counts = count_batch(
        ref, scored.numeric_values, scored.category_codes, np.asarray(scored.phat), keep=keep
    )
    assert counts.rows == 8 and counts.numeric["x91"].sum() == 8 and counts.categorical["x5"].sum() == 8


def test_reference_without_distributions_is_refused(approved_compiled: CompiledModel) -> None:
    from service.errors import ArtifactError

    with pytest.raises(ArtifactError, match="reference_distributions"):
        DriftReference.build("v9", "0" * 64, ["x91"], {}, {})


# --- the per-worker monitor ---
def monitor_settings(tmp_path: Path | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "drift_min_rows": 500,
        "drift_chunk_rows": 1_000,
        "drift_window_rows": 3_000,
        "drift_publish_seconds": 3600,
    }
    if tmp_path is not None:
        values["drift_spool_dir"] = tmp_path / "spool"
    return Settings(**{**values, **overrides})


def batches(model: CompiledModel, frame: pd.DataFrame, size: int) -> list[Any]:
    rows = rows_of(frame, model)
    return [model.score(rows[i : i + size]) for i in range(0, len(rows), size)]


def test_monitor_window_is_bounded_and_flags_the_shift(
    approved_compiled: CompiledModel, shifted_rows: pd.DataFrame
) -> None:
    monitor = DriftMonitor(monitor_settings(), Metrics())
    for scored in batches(approved_compiled, shifted_rows, 250):
        monitor.observe(approved_compiled, scored)
    summary = monitor.publish()
    assert summary is not None
    assert 3_000 <= summary.rows <= 4_000  # ~window_rows: whole chunks of 1,000
    assert monitor.state()["chunks"] <= 4
    assert set(SHIFTED) <= set(summary.flagged(ALERT))
    assert not set(UNSHIFTED_INPUTS) & set(summary.flagged())


def test_model_swap_starts_a_new_window_and_ignores_the_retired_model(
    approved_registry: Registry, fresh_rows: pd.DataFrame
) -> None:
    artifact = approved_registry.load("production")
    old, new = CompiledModel.from_artifact(artifact), CompiledModel.from_artifact(artifact)
    monitor = DriftMonitor(monitor_settings(), Metrics())
    scored = batches(old, fresh_rows.head(2_000), 500)
    for s in scored[:3]:
        monitor.observe(old, s)
    assert (window := monitor.window()) is not None and window.rows == 1_500
    monitor.observe(new, scored[3])
    assert (window := monitor.window()) is not None and window.rows == 500
    monitor.observe(old, scored[0])  # a request that started before the swap
    assert (window := monitor.window()) is not None and window.rows == 500


def test_chunks_close_by_age_and_go_to_the_spool(
    approved_compiled: CompiledModel, fresh_rows: pd.DataFrame, tmp_path: Path
) -> None:
    clock = [1_000_000.0]
    settings = monitor_settings(tmp_path, drift_chunk_seconds=60)
    monitor = DriftMonitor(settings, Metrics(), clock=lambda: clock[0])
    for s in batches(approved_compiled, fresh_rows.head(600), 200):
        monitor.observe(approved_compiled, s)
    monitor.publish()
    assert monitor.state()["chunks"] == 0 and monitor.state()["open_rows"] == 600
    clock[0] += 61
    monitor.publish()
    assert monitor.state()["chunks"] == 1
    records = list(read_spool(settings.drift_spool_dir, since=0))  # type: ignore[arg-type]
    assert len(records) == 1 and records[0].data["rows"] == 600 and records[0].version == "v1"
    ref = monitor.reference
    assert ref is not None
    back = Counts.from_record(records[0].data, ref)
    window = monitor.window()
    assert window is not None and back.rows == window.rows
    np.testing.assert_array_equal(back.numeric["x91"], window.numeric["x91"])
    np.testing.assert_array_equal(back.categorical["x31"], window.categorical["x31"])


def test_single_rows_are_buffered_and_folded_in_bulk(
    approved_compiled: CompiledModel, fresh_rows: pd.DataFrame
) -> None:
    """The hot path only appends: single-row requests are counted FOLD_BATCHES at a time, into the same
    counts as one batch of those rows. (What observe costs per request is measured by `make bench`.)"""
    monitor = DriftMonitor(monitor_settings(drift_chunk_rows=5_000), Metrics())
    rows = fresh_rows.head(1 + FOLD_BATCHES)
    singles = batches(approved_compiled, rows, 1)
    monitor.observe(approved_compiled, singles[0])  # a new model: its first request publishes at once
    assert monitor.state()["open_rows"] == 1 and monitor.state()["buffered_rows"] == 0
    for scored in singles[1:-1]:
        monitor.observe(approved_compiled, scored)
    assert monitor.state()["open_rows"] == 1 and monitor.state()["buffered_rows"] == FOLD_BATCHES - 1
    monitor.observe(approved_compiled, singles[-1])
    assert monitor.state()["open_rows"] == 1 + FOLD_BATCHES and monitor.state()["buffered_rows"] == 0

    (whole,) = batches(approved_compiled, rows, len(rows))
    ref = monitor.reference
    assert ref is not None
    expected = count_batch(ref, whole.numeric_values, whole.category_codes, np.asarray(whole.phat))
    window = monitor.window()
    assert window is not None and window.rows == expected.rows == 1 + FOLD_BATCHES
    for name, counts in expected.numeric.items():
        np.testing.assert_array_equal(window.numeric[name], counts, err_msg=name)
    for name, counts in expected.categorical.items():
        np.testing.assert_array_equal(window.categorical[name], counts, err_msg=name)


# --- in the running app ---
def metric_values(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("propensity_drift_"):
                out[(sample.name, sample.labels.get("feature", ""))] = sample.value
    return out


def test_the_server_exports_drift_gauges(
    approved_registry: Registry, shifted_rows: pd.DataFrame, tmp_path: Path
) -> None:
    overrides = {"drift_min_rows": 500, "drift_chunk_rows": 1_000, "drift_spool_dir": tmp_path / "spool"}
    with app_client(approved_registry, **overrides) as client:
        values = metric_values(client.get("/metrics").text)
        assert values[("propensity_drift_rows_in_window", "")] == 0
        assert ("propensity_drift_psi", "x91") not in values  # nothing to report yet
        rows = shifted_rows[[f"x{i}" for i in range(100)]].head(3_000).to_dict(orient="records")
        for i in range(0, 3_000, 1_000):
            r = client.post(
                "/predict",
                content=orjson.dumps(rows[i : i + 1_000]),
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 200, r.text
        values = metric_values(client.get("/metrics").text)
    assert values[("propensity_drift_rows_in_window", "")] == 3_000
    assert values[("propensity_drift_psi", "x91")] >= 0.2
    assert values[("propensity_drift_status", "x91")] == 2
    assert (
        values[("propensity_drift_status", "x31")] == 2
        and values[("propensity_drift_js_distance", "x31")] > 0.19
    )
    assert values[("propensity_drift_unseen_share", "")] > 0.1
    assert values[("propensity_drift_missing_rate", "x12")] > 0.25
    assert values[("propensity_drift_status", "x12")] == 2
    for name in UNSHIFTED_INPUTS:
        assert values[("propensity_drift_psi", name)] < 0.1 and values[("propensity_drift_status", name)] == 0
    # the shutdown wrote the open chunk to the spool: 3 chunks of 1,000 rows in all
    assert sum(r.data["rows"] for r in read_spool(tmp_path / "spool", since=0)) == 3_000
