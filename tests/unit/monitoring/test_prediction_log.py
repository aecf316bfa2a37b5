"""The prediction log's writer: rows as scored, the spool while the database is away, the replay after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from service.monitoring.prediction_log import PredictionLog, Spool
from service.monitoring.prediction_store import PredictionStore
from service.serving.json_rows import JsonRows
from service.serving.metrics import Metrics
from service.serving.observe import CacheHit, Scoring
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tests.conftest import free_port

CODEC = JsonRows(max_rows=10_000, max_errors=100)


def scoring(
    model: CompiledModel, rows: list[dict[str, Any]], request_id: str, at: float = 1_000.0
) -> Scoring:
    batch = CODEC.decode(model, orjson.dumps(rows))
    scored = model.score_batch(batch)
    from service.serving.passthrough import collect_ids

    scored.ids, _ = collect_ids(batch, model.passthrough, 128)
    return Scoring(model, batch, scored, request_id, at)


def make_log(tmp_path: Path, opener: Callable[[str], PredictionStore], **overrides: Any) -> PredictionLog:
    settings = Settings(artifacts_dir=tmp_path, **overrides)
    return PredictionLog(settings, Metrics(), open_store=opener, clock=lambda: clock[0])


clock = [1_000.0]


@pytest.fixture(autouse=True)
def _clock() -> None:
    clock[0] = 1_000.0


def sqlite(tmp_path: Path) -> Callable[[str], PredictionStore]:
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    return lambda _url: PredictionStore.open(url)


def unreachable() -> Callable[[str], PredictionStore]:
    """A real PostgreSQL URL on a loopback port nothing listens on: every connection is refused."""
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    return lambda _url: PredictionStore.open(url, connect_timeout=1)


def test_every_good_row_is_logged_with_its_id_inputs_and_result(
    tmp_path: Path, approved_compiled: CompiledModel, reference_rows: list[dict[str, Any]]
) -> None:
    log = make_log(tmp_path, sqlite(tmp_path))
    rows = [dict(r, customer_id=f"C{i}") for i, r in enumerate(reference_rows)]
    event = scoring(approved_compiled, rows, "req-1")
    log.on_scored(event)
    assert log.flush() == len(rows)
    store = log.store
    assert store is not None
    with store.engine.connect() as conn:
        logged = conn.exec_driver_sql(
            "SELECT request_id, row_index, passthrough_id, model_version, scored_at, phat, outcome, inputs "
            "FROM predictions ORDER BY row_index"
        ).all()
    assert [r[1] for r in logged] == list(range(len(rows)))
    assert {r[0] for r in logged} == {"req-1"} and logged[0][2] == "C0"
    assert [r[5] for r in logged] == event.scored.phat  # the bits served
    assert [r[6] for r in logged] == event.scored.outcome
    inputs = orjson.loads(logged[0][7])
    assert set(inputs) <= set(approved_compiled.used_columns)
    assert all(inputs[c] == reference_rows[0].get(c) for c in inputs)
    log.stop()


def test_a_cache_hit_is_scored_again_and_logged_the_same(
    tmp_path: Path, approved_compiled: CompiledModel, reference_rows: list[dict[str, Any]]
) -> None:
    log = make_log(tmp_path, sqlite(tmp_path))
    body = orjson.dumps(reference_rows)
    chunks = [body[:100], body[100:]]  # as the body arrived
    log.on_cache_hit(CacheHit(approved_compiled, CODEC, None, chunks, "hit-1", 5.0))
    log.flush()
    frame = log._store().frame(0.0)
    assert sorted(frame.phat.tolist()) == sorted(scoring(approved_compiled, reference_rows, "x").scored.phat)
    log.stop()


def test_sampling_takes_whole_requests_and_counts_the_rest(
    tmp_path: Path, approved_compiled: CompiledModel, reference_rows: list[dict[str, Any]]
) -> None:
    draws = iter([0.1, 0.9, 0.2])
    settings = Settings(artifacts_dir=tmp_path, prediction_log_sample_rate=0.5)
    metrics = Metrics()
    log = PredictionLog(settings, metrics, open_store=sqlite(tmp_path), sample=lambda: next(draws))
    for rid in ("a", "b", "c"):
        log.on_scored(scoring(approved_compiled, reference_rows, rid))
    metrics.buffer.flush()
    assert log.flush() == 2 * len(reference_rows)
    assert metrics.prediction_log_rows.labels("sampled_out")._value.get() == len(reference_rows)
    log.stop()


def test_rows_over_the_pending_cap_are_dropped_and_counted(
    tmp_path: Path, approved_compiled: CompiledModel, reference_rows: list[dict[str, Any]]
) -> None:
    log = make_log(tmp_path, sqlite(tmp_path), prediction_log_max_pending_rows=10_000)
    many = reference_rows * (10_000 // len(reference_rows))
    log.on_scored(scoring(approved_compiled, many, "big"))
    log.on_scored(scoring(approved_compiled, reference_rows, "over"))
    log.metrics.buffer.flush()
    assert log.metrics.prediction_log_rows.labels("dropped")._value.get() == len(reference_rows)
    assert log.flush() == len(many)
    log.stop()


def test_an_unreachable_database_spools_and_the_spool_is_replayed_once_it_answers(
    tmp_path: Path, approved_compiled: CompiledModel, reference_rows: list[dict[str, Any]]
) -> None:
    stores = {"open": unreachable()}
    log = make_log(tmp_path, lambda url: stores["open"](url), prediction_log_retry_seconds=5)
    log.on_scored(scoring(approved_compiled, reference_rows, "during-1"))
    log.run_once()  # the database refuses: the rows go to the spool
    log.on_scored(scoring(approved_compiled, reference_rows, "during-2"))
    log.run_once()  # within the retry interval: straight to the spool, no connection attempt
    spool = Spool(tmp_path / "prediction-spool")
    assert spool.rows() == 2 * len(reference_rows) and len(spool.files()) == 2
    m = log.metrics.prediction_log_rows
    assert m.labels("spooled")._value.get() == 2 * len(reference_rows)
    assert m.labels("written")._value.get() == 0
    log.store = None
    stores["open"] = sqlite(tmp_path)  # the database is back
    clock[0] += 6
    log.on_scored(scoring(approved_compiled, reference_rows, "after"))
    log.run_once()
    assert spool.files() == [] and log.metrics.prediction_log_spool_rows._value.get() == 0
    assert m.labels("replayed")._value.get() == 2 * len(reference_rows)
    frame = log._store().frame(0.0)
    assert len(frame) == 3 * len(reference_rows)
    log.stop()


def test_a_spool_file_replayed_twice_writes_its_rows_once(
    tmp_path: Path, approved_compiled: CompiledModel, reference_rows: list[dict[str, Any]]
) -> None:
    log = make_log(tmp_path, sqlite(tmp_path))
    rows = [("b-1", "r", i, None, None, "v1", 1.0, 0.5, 0, "{}") for i in range(3)]
    spool = Spool(tmp_path / "prediction-spool")
    assert spool.put("b-1", rows)
    copy = spool.files()[0].read_bytes()
    assert log.replay() == 3
    (spool.directory / "0000000000.000000-h-1-b-1-3.rows.json").write_bytes(
        copy
    )  # e.g. a crash before unlink
    assert log.replay() == 0
    assert log._store().count() == 3 and spool.files() == []
    log.stop()


def test_stop_writes_what_is_pending(
    tmp_path: Path, approved_compiled: CompiledModel, reference_rows: list[dict[str, Any]]
) -> None:
    log = make_log(tmp_path, sqlite(tmp_path), prediction_log_flush_seconds=60)
    log.start()
    log.on_scored(scoring(approved_compiled, reference_rows, "last"))
    log.stop()
    assert PredictionStore.open(f"sqlite:///{tmp_path / 'log.sqlite'}").count() == len(reference_rows)


def test_cache_hits_can_be_left_out() -> None:
    settings = Settings(prediction_log_cache_hits=False)
    assert PredictionLog(settings, Metrics()).watches_hits is False


def shadow_row(request: str, i: int) -> tuple[object, ...]:
    """A shadow_predictions row as shadow scoring hands it over (no batch id yet)."""
    return (request, i, 1_000.0 + i, "v1", 0.25, 0, "v2", None if i == 1 else 0.75, None if i == 1 else 1)


def test_shadow_rows_are_written_spooled_while_the_database_is_away_and_replayed(tmp_path: Path) -> None:
    stores = {"open": unreachable()}
    log = make_log(tmp_path, lambda url: stores["open"](url), prediction_log_retry_seconds=5)
    log.take_shadow([shadow_row("a", i) for i in range(3)])
    log.run_once()  # the database refuses: to the shadow spool, apart from the predictions' one
    shadow_spool = Spool(tmp_path / "prediction-spool", ".shadow.json")
    assert shadow_spool.rows() == 3 and Spool(tmp_path / "prediction-spool").files() == []
    m = log.metrics.shadow_log_rows
    assert m.labels("spooled")._value.get() == 3 and m.labels("written")._value.get() == 0
    assert log.metrics.prediction_log_spool_rows._value.get() == 3
    log.store = None
    stores["open"] = sqlite(tmp_path)
    clock[0] += 6
    log.take_shadow([shadow_row("b", i) for i in range(2)])
    log.run_once()
    assert shadow_spool.files() == [] and m.labels("replayed")._value.get() == 3
    assert m.labels("written")._value.get() == 2
    frame = log._store().shadow_frame(0.0)
    assert len(frame) == 5 and int(np.isnan(frame.shadow_phat).sum()) == 2
    assert log._store().count() == 0  # nothing went to the predictions table
    log.stop()


def test_shadow_rows_over_the_pending_cap_are_dropped_and_counted(tmp_path: Path) -> None:
    log = make_log(tmp_path, sqlite(tmp_path), prediction_log_max_pending_rows=10_000)
    log.take_shadow([shadow_row("a", i) for i in range(9_900)])
    log.take_shadow([shadow_row("b", i) for i in range(200)])
    assert log.metrics.shadow_log_rows.labels("dropped")._value.get() == 200
    assert log.flush() == 9_900 and log._pending_rows == 0
    log.stop()
