"""The per-worker in-flight budget: what fits is taken, what does not is refused with a 503 naming the
limit (and counted), and everything taken comes back."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest
from prometheus_client import CollectorRegistry, Counter

from service.errors import Overloaded
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.admission import RETRY_AFTER_SECONDS, Budget
from service.serving.batch import Batch
from service.serving.holder import ModelHolder
from service.serving.json_rows import JsonRows
from service.serving.metrics import Metrics
from service.serving.pipeline import OFFLOAD_MIN_BYTES, Answer, Body, ScoringPipeline
from service.serving.scorer import Scored
from service.settings import Settings

ROWS: list[dict[str, Any]] = example_rows()["rows"]
JSON = "application/json"


def shed_counter() -> tuple[Counter, CollectorRegistry]:
    registry = CollectorRegistry()
    return Counter("shed", "shed", ["reason"], registry=registry), registry


def test_bytes_that_fit_are_taken_and_the_rest_refused_with_the_limit_named() -> None:
    counter, registry = shed_counter()
    budget = Budget(max_rows=100, max_bytes=1000, shed=counter)
    budget.take_bytes(600)
    budget.take_bytes(400)  # exactly full
    with pytest.raises(Overloaded) as refused:
        budget.take_bytes(1)
    error = refused.value
    assert (error.status, error.kind) == (503, "overloaded")
    assert error.extra == {"reason": "bytes", "retry_after": RETRY_AFTER_SECONDS}
    assert "PROPENSITY_MAX_INFLIGHT_BYTES" in error.detail and "1000" in error.detail
    assert budget.bytes == 1000  # a refusal takes nothing
    assert registry.get_sample_value("shed_total", {"reason": "bytes"}) == 1.0
    assert registry.get_sample_value("shed_total", {"reason": "rows"}) == 0.0
    budget.give_back(0, 600)
    budget.take_bytes(600)
    assert budget.bytes == 1000


def test_rows_that_fit_are_taken_and_the_rest_refused_with_the_limit_named() -> None:
    counter, registry = shed_counter()
    budget = Budget(max_rows=10_000, max_bytes=1000, shed=counter)
    budget.take_rows(10_000)
    with pytest.raises(Overloaded) as refused:
        budget.take_rows(1)
    assert refused.value.extra["reason"] == "rows"
    assert "PROPENSITY_MAX_INFLIGHT_ROWS" in refused.value.detail and "10000" in refused.value.detail
    budget.give_back(10_000, 0)
    assert (budget.rows, budget.bytes) == (0, 0)
    budget.take_rows(1)
    assert registry.get_sample_value("shed_total", {"reason": "rows"}) == 1.0


def test_one_request_of_the_largest_size_always_fits_an_idle_worker() -> None:
    settings = Settings()
    assert settings.max_inflight_rows >= settings.max_rows
    assert settings.max_inflight_bytes >= settings.max_body_bytes
    with pytest.raises(ValueError, match="max_inflight_rows must be at least max_rows"):
        Settings(max_rows=5000, max_inflight_rows=4999)
    with pytest.raises(ValueError, match="max_inflight_bytes must be at least max_body_bytes"):
        Settings(max_body_bytes=10_000, max_inflight_bytes=9999)
    budget = Budget(settings.max_inflight_rows, settings.max_inflight_bytes)
    budget.take_bytes(settings.max_body_bytes)
    budget.take_rows(settings.max_rows)


def test_a_call_decoded_in_a_worker_thread_takes_its_rows_on_the_loop(approved_registry: Registry) -> None:
    """Two scoring threads (production has one, so the rows of a thread's call meet those of calls
    decoded on the loop): the second thread's call is refused for rows the first holds."""
    settings = Settings(
        artifacts_dir=approved_registry.root,
        reload_interval_seconds=0,
        cache_enabled=False,
        max_rows=1000,
        max_inflight_rows=1000,
    )
    metrics = Metrics(CollectorRegistry(), flush_interval=3600)
    holder = ModelHolder(settings, metrics, approved_registry)
    holder.refresh()
    codec = JsonRows(max_rows=settings.max_rows, max_errors=settings.max_errors_listed)
    pipeline = ScoringPipeline(settings, metrics, holder, codec, offload_threads=2)
    model = holder.current
    assert model is not None
    started, release = threading.Event(), threading.Event()
    real = model.score_batch

    def gated(batch: Batch, **kwargs: Any) -> Scored:
        if len(batch) == 600:
            started.set()
            assert release.wait(30)
        return real(batch, **kwargs)

    model.score_batch = gated  # type: ignore[method-assign]
    first, second = orjson.dumps(ROWS * 120), orjson.dumps(ROWS * 100)
    assert min(len(first), len(second)) >= OFFLOAD_MIN_BYTES  # both decoded in a thread

    async def call(body: bytes, out: list[Answer]) -> None:
        admitted = pipeline.admit(JSON, len(body))
        try:
            out.append(await pipeline.infer(admitted, Body([body], len(body))))
        finally:
            admitted.release()

    async def scenario() -> list[Answer]:
        answers: list[Answer] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(call, first, answers)
            assert await anyio.to_thread.run_sync(started.wait, 30)
            assert pipeline.budget.rows == 600
            with pytest.raises(Overloaded) as refused:
                await call(second, answers)
            assert refused.value.extra["reason"] == "rows"
            assert pipeline.budget.rows == 600 and pipeline.budget.bytes == len(first)
            release.set()
        assert (pipeline.budget.rows, pipeline.budget.bytes) == (0, 0)
        return answers

    [answer] = anyio.run(scenario)
    assert len(orjson.loads(answer.body)) == 600
    assert metrics.registry.get_sample_value("propensity_requests_shed_total", {"reason": "rows"}) == 1.0
