"""The scoring pipeline without HTTP: answers, named cache keys, gzip, errors, and big calls off the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest
from prometheus_client import CollectorRegistry

from service.errors import InputError, ModelNotReady, PayloadTooLarge, UnsupportedMediaType
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.batch import Batch
from service.serving.cache import LRUCache, columns_key, normalised_key, raw_key
from service.serving.decoding import row_slices
from service.serving.holder import ModelHolder
from service.serving.json_rows import ENCODE_SLICE_ROWS, JsonRows
from service.serving.metrics import Metrics
from service.serving.observe import Scoring, ScoringMetrics
from service.serving.pipeline import OFFLOAD_MIN_ROWS, Answer, Body, ScoringPipeline
from service.serving.scorer import CompiledModel, Scored
from service.serving.turns import SmallCallsFirst
from service.settings import BatchErrorPolicy, Settings

JSON = "application/json"
ROWS: list[dict[str, Any]] = example_rows()["rows"]
PHAT = [e["phat"] for e in example_rows()["expected"]]
ONE_COLUMN = {"x91": 0.04191}  # a valid row (the others imputed) in a few bytes: many rows, a small body


class Recording:
    """An observer that remembers what it saw, and on which thread."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str, int]] = []  # (rows, model version, thread id)

    def on_scored(self, event: Scoring) -> None:
        self.seen.append((len(event.batch), event.model.version, threading.get_ident()))


def build(
    registry: Registry,
    *,
    cache: bool = False,
    observers: tuple[Any, ...] = (),
    offload_min_rows: int = OFFLOAD_MIN_ROWS,
    **overrides: Any,
) -> tuple[ScoringPipeline, Metrics]:
    settings = Settings(
        artifacts_dir=registry.root, reload_interval_seconds=0, cache_min_body_bytes=0, **overrides
    )
    metrics = Metrics(CollectorRegistry(), flush_interval=3600)
    holder = ModelHolder(settings, metrics, registry)
    holder.refresh()
    codec = JsonRows(max_rows=settings.max_rows, max_errors=settings.max_errors_listed)
    lru = LRUCache(settings.cache_lru_max_bytes, settings.cache_max_value_bytes) if cache else None
    observers = (ScoringMetrics(metrics), *observers)
    pipeline = ScoringPipeline(
        settings, metrics, holder, codec, cache=lru, observers=observers, offload_min_rows=offload_min_rows
    )
    return pipeline, metrics


async def infer(
    pipeline: ScoringPipeline, body: bytes, *, chunk: int = 0, accepts_gzip: bool = False
) -> Answer:
    """What an adapter does: admit, read the body (fed to the hasher as it arrives), infer, release."""
    call = pipeline.admit(JSON, len(body))
    try:
        chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
        for part in chunks:
            if call.hasher is not None:
                call.hasher.update(part)
        return await pipeline.infer(call, Body(chunks, len(body), call.hasher), accepts_gzip=accepts_gzip)
    finally:
        call.release()


def answer(pipeline: ScoringPipeline, body: bytes, **kwargs: Any) -> Answer:
    async def run() -> Answer:
        return await infer(pipeline, body, **kwargs)

    return anyio.run(run)


def model_of(pipeline: ScoringPipeline) -> CompiledModel:
    model = pipeline.models.current
    assert model is not None
    return model


def lean(row: dict[str, Any], model: CompiledModel) -> dict[str, Any]:
    return {k: row.get(k) for k in model.used_columns}


# --- answers -----------------------------------------------------------------------------------------------
def test_answers_one_row_and_a_batch(approved_registry: Registry) -> None:
    pipeline, metrics = build(approved_registry)
    one = answer(pipeline, orjson.dumps(ROWS[0]))
    assert (one.status, one.media_type, one.headers) == (200, JSON, {"X-Model-Version": "v1"})
    assert orjson.loads(one.body)["phat"] == pytest.approx(PHAT[0], abs=1e-9)
    batch = answer(pipeline, orjson.dumps(ROWS))
    assert [r["phat"] for r in orjson.loads(batch.body)] == pytest.approx(PHAT, abs=1e-9)
    model = model_of(pipeline)
    assert batch.body == orjson.dumps(model.records(model.score(ROWS)))  # the scorer's bits, encoded
    metrics.buffer.flush()
    assert metrics.registry.get_sample_value("propensity_rows_scored_total") == 6.0


def test_unseen_and_unknown_keys_are_reported(approved_registry: Registry) -> None:
    pipeline, metrics = build(approved_registry)
    out = answer(pipeline, orjson.dumps([dict(ROWS[0], x31="mars"), dict(ROWS[1], note="x")]))
    assert out.headers == {
        "X-Model-Version": "v1",
        "X-Unseen-Categories": "1",
        "X-Unseen-Values": "1; x31=mars",
        "X-Unknown-Keys": "1; note",
    }
    metrics.buffer.flush()
    assert metrics.registry.get_sample_value("propensity_unknown_keys_total") == 1.0
    assert metrics.registry.get_sample_value("propensity_unseen_categories_total", {"column": "x31"}) == 1.0


def test_score_valid_policy_answers_the_good_rows(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry, batch_error_policy=BatchErrorPolicy.SCORE_VALID)
    out = answer(pipeline, orjson.dumps([ROWS[0], dict(ROWS[1], x12="??")]))
    assert out.headers["X-Rejected-Rows"] == "1"
    good, bad = orjson.loads(out.body)
    assert good["phat"] == pytest.approx(PHAT[0], abs=1e-9)
    assert bad["row"] == 1 and bad["errors"][0]["field"] == "x12"


# --- errors -------------------------------------------------------------------------------------------------
def test_admission_refuses_before_the_body_is_read(approved_registry: Registry, tmp_path: Any) -> None:
    pipeline, _ = build(approved_registry)
    with pytest.raises(UnsupportedMediaType):
        pipeline.admit("text/csv", 10)
    with pytest.raises(PayloadTooLarge):
        pipeline.admit(JSON, pipeline.max_body_bytes + 1)
    assert pipeline.admit(JSON, None).model.version == "v1"
    empty, _ = build(Registry(tmp_path, "propensity"))
    with pytest.raises(ModelNotReady):
        empty.admit(JSON, 10)


def test_rows_that_cannot_be_scored_are_a_422(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry)
    with pytest.raises(InputError) as caught:
        answer(pipeline, orjson.dumps([ROWS[0], dict(ROWS[1], x44="abc")]))
    assert caught.value.status == 422 and caught.value.extra["bad_rows"] == [1]
    assert caught.value.detail.startswith("1 of 2 row(s) cannot be scored; first: row 1, field x44")


# --- the cache: named keys ----------------------------------------------------------------------------------
def test_the_answer_is_stored_under_the_raw_key_and_aliased_by_the_normalised_key(
    approved_registry: Registry,
) -> None:
    pipeline, metrics = build(approved_registry, cache=True)
    cache = pipeline.cache
    assert cache is not None
    sha = model_of(pipeline).sha256
    body = orjson.dumps(ROWS)
    miss = answer(pipeline, body, chunk=100)  # hashed chunk by chunk as it "arrived"
    assert "X-Cache" not in miss.headers and miss.headers["Vary"] == "Accept-Encoding"
    assert cache.get([raw_key(sha, body)]) == miss.body  # the raw key holds the bytes
    assert cache.get([str(normalised_key(sha, ROWS))]) == miss.body  # the normalised key is an alias of it
    again = answer(pipeline, body)
    assert again.headers == {"X-Model-Version": "v1", "X-Cache": "hit", "Vary": "Accept-Encoding"}
    assert again.body == miss.body
    reformatted = orjson.dumps([dict(reversed(list(r.items()))) for r in ROWS], option=orjson.OPT_INDENT_2)
    assert answer(pipeline, reformatted).headers.get("X-Cache") == "hit"
    assert cache.get([raw_key(sha, reformatted)]) == miss.body  # stored under its own raw key on that hit
    metrics.buffer.flush()
    assert metrics.registry.get_sample_value("propensity_cache_requests_total", {"result": "hit"}) == 2.0
    assert metrics.registry.get_sample_value("propensity_cache_requests_total", {"result": "miss"}) == 1.0


def test_a_big_body_is_aliased_by_its_columns_key(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry, cache=True)
    model = model_of(pipeline)
    rows = ROWS * 20  # over 64 KB: the column decoder's batch
    body = orjson.dumps(rows)
    miss = answer(pipeline, body)
    decoded = model.column_decoder.decode(body, max_rows=10_000)
    assert decoded is not None
    assert pipeline.cache is not None
    assert pipeline.cache.get([columns_key(model.sha256, decoded.rows)]) == miss.body
    assert pipeline.cache.get([str(normalised_key(model.sha256, rows))]) is None


def test_gzip_is_stored_for_a_client_that_accepts_it(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry, cache=True)
    body = orjson.dumps(ROWS[:3])
    plain = answer(build(approved_registry)[0], body).body
    zipped = answer(pipeline, body, accepts_gzip=True)
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.body[:2] == b"\x1f\x8b"
    hit = answer(pipeline, body)  # a client without gzip: the stored answer, decompressed
    assert hit.headers.get("X-Cache") == "hit" and "Content-Encoding" not in hit.headers and hit.body == plain
    hit_gz = answer(pipeline, body, accepts_gzip=True)
    assert hit_gz.headers["Content-Encoding"] == "gzip" and hit_gz.body == zipped.body


def test_answers_with_unseen_levels_are_not_stored(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry, cache=True)
    body = orjson.dumps([dict(ROWS[0], x31="mars")])
    first = answer(pipeline, body)
    assert "Vary" not in first.headers and answer(pipeline, body).headers.get("X-Cache") is None


# --- big calls leave the event loop -------------------------------------------------------------------------
class Gate:
    """Holds the scoring of batches of at least `rows` rows until released; records who scored what."""

    def __init__(self, model: CompiledModel, rows: int) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.threads: dict[int, int] = {}  # rows -> thread that scored them
        real: Callable[..., Scored] = model.score_batch

        def gated(batch: Batch, **kwargs: Any) -> Scored:
            self.threads[len(batch)] = threading.get_ident()
            if len(batch) >= rows:
                self.started.set()
                assert self.release.wait(30)
            return real(batch, **kwargs)

        model.score_batch = gated  # type: ignore[method-assign]


def test_a_small_call_is_answered_while_a_10000_row_batch_is_scored(approved_registry: Registry) -> None:
    recording = Recording()
    pipeline, metrics = build(approved_registry, observers=(recording,))
    model = model_of(pipeline)
    gate = Gate(model, rows=10_000)
    big_body = orjson.dumps([lean(ROWS[i % 5], model) for i in range(10_000)])
    order: list[str] = []

    async def scenario() -> tuple[Answer, Answer, int]:
        results: dict[str, Answer] = {}

        async def big() -> None:
            results["big"] = await infer(pipeline, big_body)
            order.append("big answered")

        async with anyio.create_task_group() as tg:
            tg.start_soon(big)
            assert await anyio.to_thread.run_sync(gate.started.wait, 30)
            order.append("big being scored")
            results["small"] = await infer(pipeline, orjson.dumps(ROWS[2]))
            order.append("small answered")
            assert "big" not in results
            gate.release.set()
        return results["small"], results["big"], threading.get_ident()

    small, big, loop_thread = anyio.run(scenario)
    assert order == ["big being scored", "small answered", "big answered"]
    assert orjson.loads(small.body)["phat"] == pytest.approx(PHAT[2], abs=1e-9)
    big_phat = [r["phat"] for r in orjson.loads(big.body)]
    assert len(big_phat) == 10_000 and big_phat[:5] == pytest.approx(PHAT, abs=1e-9)
    assert gate.threads[1] == loop_thread != gate.threads[10_000]  # the small one inline, the big one not
    # the observers saw both, on the loop thread, the big one when its thread was done
    assert recording.seen == [(1, "v1", loop_thread), (10_000, "v1", loop_thread)]
    metrics.buffer.flush()
    assert metrics.registry.get_sample_value("propensity_rows_scored_total") == 10_001.0
    assert (
        metrics.registry.get_sample_value("propensity_stage_duration_seconds_count", {"stage": "score"})
        == 2.0
    )


def test_many_rows_in_a_small_body_are_scored_off_the_loop(approved_registry: Registry) -> None:
    pipeline, _ = build(approved_registry, offload_min_rows=300)
    model = model_of(pipeline)
    gate = Gate(model, rows=10**9)  # records threads only
    body = orjson.dumps([ONE_COLUMN] * 300)
    assert len(body) < pipeline.offload_min_bytes

    async def scenario() -> int:
        await infer(pipeline, body)
        await infer(pipeline, orjson.dumps([ONE_COLUMN] * 299))
        return threading.get_ident()

    loop_thread = anyio.run(scenario)
    assert gate.threads[299] == loop_thread != gate.threads[300]


def test_an_error_off_the_loop_is_raised_and_its_metrics_kept(approved_registry: Registry) -> None:
    pipeline, metrics = build(approved_registry, offload_min_rows=2)
    gate = Gate(model_of(pipeline), rows=10**9)  # records threads only
    with pytest.raises(InputError):
        answer(pipeline, orjson.dumps([dict(ROWS[0], x31="mars"), dict(ROWS[1], x44="abc", note=1)]))
    assert gate.threads[2] != threading.get_ident()  # scored in a worker thread
    metrics.buffer.flush()
    assert metrics.registry.get_sample_value("propensity_unseen_categories_total", {"column": "x31"}) == 1.0
    assert metrics.registry.get_sample_value("propensity_unknown_keys_total") == 1.0
    assert metrics.registry.get_sample_value("propensity_rows_scored_total") == 0.0


class CountingTurns(SmallCallsFirst):
    """Records the threads its pauses ran on (and never waits)."""

    def __init__(self) -> None:
        super().__init__(max_pause_seconds=0)
        self.paused_on: list[int] = []

    def pause(self) -> None:
        self.paused_on.append(threading.get_ident())


def test_a_call_off_the_loop_for_its_size_pauses_between_slices(approved_registry: Registry) -> None:
    settings = Settings(artifacts_dir=approved_registry.root, reload_interval_seconds=0)
    metrics = Metrics(CollectorRegistry(), flush_interval=3600)
    holder = ModelHolder(settings, metrics, approved_registry)
    holder.refresh()
    turns = CountingTurns()
    codec = JsonRows(max_rows=settings.max_rows, max_errors=settings.max_errors_listed)
    pipeline = ScoringPipeline(settings, metrics, holder, codec, turns=turns, offload_min_rows=300)
    model = model_of(pipeline)
    big_body = orjson.dumps([ROWS[i % 5] for i in range(10_000)])
    assert len(big_body) >= 2 * model.column_decoder.slice_bytes  # decoded in slices

    async def scenario() -> tuple[Answer, int]:
        await infer(pipeline, orjson.dumps(ROWS[0]))  # inline: no pause
        await infer(pipeline, orjson.dumps([ONE_COLUMN] * 300))  # off the loop for its rows: counted as small
        assert turns.paused_on == []
        return await infer(pipeline, big_body), threading.get_ident()

    big, loop_thread = anyio.run(scenario)
    assert [r["phat"] for r in orjson.loads(big.body)][:5] == pytest.approx(PHAT, abs=1e-9)
    slices = len(list(row_slices(big_body, model.column_decoder.slice_bytes)))
    encode_slices = 10_000 // ENCODE_SLICE_ROWS
    # every decode slice, after decode, after score, between two encode slices
    assert len(turns.paused_on) == slices + 2 + (encode_slices - 1)
    assert loop_thread not in turns.paused_on
