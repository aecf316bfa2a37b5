"""The prediction store on SQLite (PostgreSQL: tests/integration/test_prediction_log_postgres.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.errors import PredictionLogUnavailable
from service.monitoring.prediction_store import LabelItem, PredictionStore


def rows(
    batch: str, request: str, n: int, at: float = 1_000.0, version: str = "v1"
) -> list[tuple[object, ...]]:
    return [
        (
            batch,
            request,
            i,
            f"C{request}-{i}",
            None,
            version,
            at + i,
            i / (n + 1),
            int(i / (n + 1) > 0.5),
            "{}",
        )
        for i in range(n)
    ]


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore.open(f"sqlite:///{tmp_path / 'log.sqlite'}")
    s.migrate()
    yield s
    s.close()


def test_migrating_twice_is_a_no_op(store: PredictionStore) -> None:
    store.migrate()
    assert store.count() == 0


def test_a_batch_is_written_once_even_when_replayed(store: PredictionStore) -> None:
    batch = rows("b1", "r1", 5)
    assert store.write(batch) == 5
    assert store.write(batch, replay=True) == 0
    assert store.count() == 5
    assert store.write([]) == 0


def test_the_frame_joins_labels_and_keeps_unlabelled_rows_as_nan(store: PredictionStore) -> None:
    store.write(rows("b1", "r1", 4))
    counts = store.apply_labels([LabelItem(1, "r1", 0), LabelItem(0, "r1", 2)])
    assert (counts.matched, counts.unmatched, counts.duplicate, counts.conflicting) == (2, 0, 0, 0)
    frame = store.frame(0.0)
    assert len(frame) == 4
    order = np.argsort(frame.scored_at)
    assert frame.label[order][0] == 1.0 and frame.label[order][2] == 0.0
    assert math.isnan(frame.label[order][1]) and math.isnan(frame.label[order][3])
    assert list(frame.version) == ["v1"] * 4
    assert len(store.frame(0.0, until=1_002.0)) == 2
    assert len(store.frame(0.0, version="v2")) == 0


def test_repeats_are_duplicates_and_different_labels_conflicts(store: PredictionStore) -> None:
    store.write(rows("b1", "r1", 3))
    first = store.apply_labels([LabelItem(1, "r1", 0)])
    again = store.apply_labels(
        [LabelItem(1, "r1", 0), LabelItem(0, "r1", 0), LabelItem(1, "r1", 1), LabelItem(0, "r1", 1)]
    )
    assert first.matched == 1
    assert (again.matched, again.duplicate, again.conflicting) == (1, 1, 2)
    assert again.conflicts == [(1, 1), (3, 1)]  # (item, the label stored): the first label stays
    frame = store.frame(0.0)
    assert sorted(frame.label[~np.isnan(frame.label)].tolist()) == [1.0, 1.0]


def test_a_pass_through_id_matches_its_latest_scoring_before_the_observation(store: PredictionStore) -> None:
    store.write([("b1", "early", 0, "C-1", None, "v1", 100.0, 0.2, 0, "{}")])
    store.write([("b2", "late", 0, "C-1", None, "v1", 200.0, 0.9, 1, "{}")])
    counts = store.apply_labels([LabelItem(1, passthrough_id="C-1", observed_at=150.0)])
    assert counts.matched == 1
    frame = store.frame(0.0)
    labelled = frame.phat[~np.isnan(frame.label)]
    assert labelled.tolist() == [0.2]
    latest = store.apply_labels([LabelItem(0, passthrough_id="C-1")])  # no time: the latest scoring
    assert latest.matched == 1
    assert store.apply_labels([LabelItem(1, passthrough_id="C-1", observed_at=50.0)]).unmatched == 1


def test_unmatched_labels_are_kept_and_matched_once_their_prediction_is_logged(
    store: PredictionStore,
) -> None:
    counts = store.apply_labels([LabelItem(1, "later", 0), LabelItem(0, passthrough_id="Clater-1")])
    assert counts.unmatched == 2 and counts.unmatched_items == [0, 1]
    assert store.unmatched_count() == 2
    store.write(rows("b1", "later", 2))  # e.g. replayed from the spool after an outage
    frame = store.frame(0.0)  # the frame matches what it can first
    assert store.unmatched_count() == 0
    assert sorted(frame.label.tolist()) == [0.0, 1.0]


def test_labelled_frame_has_the_raw_inputs_and_the_label(store: PredictionStore) -> None:
    store.write([("b1", "r", 0, None, None, "v1", 10.0, 0.3, 0, '{"x1": "$1,000.00", "x5": null}')])
    store.write([("b2", "r", 1, None, None, "v1", 11.0, 0.8, 1, '{"x1": 4.5}')])
    store.apply_labels([LabelItem(1, "r", 0)])
    frame = store.labelled_frame(0.0, ["x1", "x5", "x9"])
    assert frame.to_dict("records") == [
        {"x1": "$1,000.00", "x5": None, "x9": None, "y": 1, "scored_at": 10.0, "version": "v1"}
    ]


def test_prune_deletes_old_rows_and_their_labels(store: PredictionStore) -> None:
    store.write(rows("b1", "old", 2, at=10.0))
    store.write(rows("b2", "new", 2, at=1_000.0))
    store.apply_labels([LabelItem(1, "old", 0), LabelItem(1, "new", 0)])
    assert store.prune(before=500.0) == 2
    frame = store.frame(0.0)
    assert len(frame) == 2 and np.nansum(frame.label) == 1.0


def test_a_bad_url_is_refused_in_words() -> None:
    with pytest.raises(PredictionLogUnavailable, match="not a database URL"):
        PredictionStore.open("no such thing")
    with pytest.raises(PredictionLogUnavailable, match="use sqlite or postgresql"):
        PredictionStore.open("mysql://u@h/db")


def shadow_rows(batch: str, request: str, n: int, at: float = 1_000.0) -> list[tuple[object, ...]]:
    return [
        (
            batch,
            request,
            i,
            at + i,
            "v1",
            i / (n + 1),
            int(i / (n + 1) > 0.5),
            "v2",
            None if i == 0 else (i + 0.5) / (n + 1),  # row 0: refused by the challenger
            None if i == 0 else int((i + 0.5) / (n + 1) > 0.6),
        )
        for i in range(n)
    ]


def test_shadow_rows_are_read_back_with_the_served_rows_labels(store: PredictionStore) -> None:
    store.write(rows("b1", "r1", 4))
    written = shadow_rows("s1", "r1", 4)
    assert store.write(written, table="shadow_predictions") == 4
    assert store.write(written, table="shadow_predictions", replay=True) == 0  # the batch is there
    store.apply_labels([LabelItem(1, "r1", 2), LabelItem(0, "r1", 0)])
    frame = store.shadow_frame(0.0)
    assert len(frame) == 4 and list(frame.served_version) == ["v1"] * 4
    assert frame.served_phat.tolist() == [r[5] for r in written]
    assert np.isnan(frame.shadow_phat[0]) and frame.shadow_phat[1:].tolist() == [r[8] for r in written[1:]]
    assert frame.shadow_outcome.tolist() == [-1, 0, 0, 1] and frame.served_outcome.tolist() == [0, 0, 0, 1]
    assert frame.label[[0, 2]].tolist() == [0.0, 1.0] and np.isnan(frame.label[[1, 3]]).all()
    assert len(store.shadow_frame(0.0, shadow_version="v3")) == 0
    assert len(store.shadow_frame(1_002.0)) == 2 and len(store.shadow_frame(0.0, 1_001.0)) == 1
    store.prune(1_002.0)
    assert len(store.shadow_frame(0.0)) == 2


def test_a_table_outside_the_log_is_refused(store: PredictionStore) -> None:
    with pytest.raises(ValueError, match="not a prediction log table"):
        store.write(rows("b1", "r1", 1), table="labels; DROP TABLE labels")
