"""The canary: a stable hash routes a share of calls to the challenger, a failed canary call is answered
by production, and a canary that fails too often or is too slow is rolled back (the registry's alias
deleted, with the reason in its audit log)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import orjson
import pytest
from prometheus_client import CollectorRegistry

from service.errors import InputError, ModelNotReady
from service.model.registry import Registry
from service.model.scorer_spec import NumericSpec, ScorerSpec
from service.serving.batch import ABSENT, ColumnBatch, JsonBatch
from service.serving.canary import HASH_SPACE, CanaryGuard, CanaryRouter, bucket, routing_key
from service.serving.json_rows import JsonRows
from service.serving.metrics import Metrics
from service.serving.observe import ScoringMetrics
from service.serving.pipeline import Answer, Body, ScoringPipeline
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tools.bench.cluster_bench import make_rows


class Fixed:
    """Where a model is read (a holder's `current`), set by the test."""

    def __init__(self, model: CompiledModel | None) -> None:
        self.current = model
        self.first_attempt = threading.Event()

    def unavailable(self) -> ModelNotReady:
        return ModelNotReady("none")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class Failing(CompiledModel):
    """A canary version whose scoring fails: the fault a broken release brings."""

    def score_batch(self, batch: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected scoring fault")


SPEC: list[ScorerSpec] = []  # the approved model's, once read


@pytest.fixture(scope="module")
def approved(approved_registry: Registry) -> CompiledModel:
    artifact = approved_registry.load_serving("production")
    SPEC[:] = [artifact.spec]
    return CompiledModel.from_artifact(artifact)


def relabelled(model: CompiledModel, version: str, cls: type[CompiledModel] = CompiledModel) -> CompiledModel:
    return cls(SPEC[0], version=version, sha256=version * 16, known_columns=model.known_columns)


def challenger_of(model: CompiledModel, version: str = "v2") -> CompiledModel:
    """Other coefficients, and an input (x0) the approved model does not read."""
    spec = SPEC[0]
    extra = NumericSpec(name="x0", fmt="number", fill=0.0, mean=0.0, scale=10.0)
    changed = dataclasses.replace(
        spec,
        features=(*spec.features, "x0"),
        coefficients=(*(c * 1.07 for c in spec.coefficients), 0.03),
        numeric=(*spec.numeric, extra),
    )
    return CompiledModel(changed, version=version, sha256="2" * 64, known_columns=model.known_columns)


def build(
    production: CompiledModel,
    canary: CompiledModel | None,
    registry: Any = None,
    offload: int = 1 << 30,
    **overrides: Any,
) -> tuple[ScoringPipeline, CanaryRouter, Metrics]:
    settings = Settings(
        reload_interval_seconds=0, cache_min_body_bytes=0, **{"canary_share": 0.1, **overrides}
    )
    metrics = Metrics(CollectorRegistry(), flush_interval=3600)
    router = CanaryRouter(
        settings,
        metrics,
        Fixed(canary),
        registry,
        background=lambda work: work(),
    )
    codec = JsonRows(max_rows=settings.max_rows, max_errors=settings.max_errors_listed)
    pipeline = ScoringPipeline(
        settings,
        metrics,
        Fixed(production),
        codec,
        observers=(ScoringMetrics(metrics),),
        router=router,
        offload_min_bytes=offload,
    )
    return pipeline, router, metrics


def call(pipeline: ScoringPipeline, payload: Any, request_id: str = "") -> Answer:
    body = orjson.dumps(payload)

    async def run() -> Answer:
        admitted = pipeline.admit("application/json", len(body), request_id=request_id)
        try:
            return await pipeline.infer(admitted, Body([body], len(body)))
        finally:
            admitted.release()

    return anyio.run(run)


def value(metrics: Metrics, name: str, **labels: str) -> float:
    metrics.buffer.flush()
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


# --- the hash ------------------------------------------------------------------------------------------
def test_the_bucket_is_blake2b_of_the_key_the_same_everywhere() -> None:
    digest = hashlib.blake2b(b"customer-17", digest_size=8).digest()
    assert bucket("customer-17") == int.from_bytes(digest, "big")
    assert bucket("customer-17") == 0xDC08544B35D13A11  # pinned: a change would move customers
    assert bucket("customer-17") == bucket("customer-17")  # no per-process salt (str hash would have one)


def test_a_tenth_of_the_ids_fall_in_a_ten_percent_share() -> None:
    threshold = int(0.1 * HASH_SPACE)
    share = sum(bucket(f"c{i}") < threshold for i in range(100_000)) / 100_000
    assert 0.095 < share < 0.105


def test_the_routing_key_is_the_first_rows_id_else_the_request_id() -> None:
    ids = ("customer_id",)
    assert routing_key(JsonBatch([{"customer_id": "a"}, {"customer_id": "b"}]), ids, "r1") == "a"
    assert routing_key(JsonBatch([{"customer_id": 42}]), ids, "r1") == "42"
    assert routing_key(JsonBatch([{"x1": 1}]), ids, "r1") == "r1"
    assert routing_key(JsonBatch([{"customer_id": None}]), ids, "r1") == "r1"
    assert routing_key(JsonBatch([{"customer_id": ""}]), ids, "r1") == "r1"
    assert routing_key(JsonBatch([{"customer_id": "a"}]), (), "r1") == "r1"
    assert routing_key(ColumnBatch([SimpleNamespace(customer_id=ABSENT)]), ids, "r2") == "r2"
    assert routing_key(ColumnBatch([SimpleNamespace(customer_id="z")]), ids, "r2") == "z"


# --- routing through the pipeline ------------------------------------------------------------------------
def test_a_share_of_customers_is_answered_by_the_canary_and_always_by_it(approved: CompiledModel) -> None:
    canary = challenger_of(approved)
    pipeline, _, metrics = build(approved, canary)
    rows = make_rows(2_000, seed=5)
    versions: dict[str, str] = {}
    for i, row in enumerate(rows):
        payload = dict(row, customer_id=f"c{i}")
        for attempt in range(2):
            answer = call(pipeline, payload, request_id=f"req-{i}-{attempt}")
            version = answer.headers["X-Model-Version"]
            assert versions.setdefault(payload["customer_id"], version) == version  # one model per id
            model = canary if version == "v2" else approved
            expected = model.score_batch(JsonBatch([payload]))
            assert orjson.loads(answer.body)["phat"] == expected.phat[0]  # that model's bits
    share = sum(v == "v2" for v in versions.values()) / len(versions)
    assert 0.08 < share < 0.12
    assert set(versions.values()) == {"v1", "v2"}
    served_by_canary = sum(v == "v2" for v in versions.values()) * 2
    assert value(metrics, "propensity_version_calls_total", version="v2", route="canary") == served_by_canary
    assert value(metrics, "propensity_version_calls_total", version="v1", route="production") == (
        4_000 - served_by_canary
    )


def test_without_an_id_the_request_id_routes(approved: CompiledModel) -> None:
    pipeline, _, _ = build(approved, challenger_of(approved), canary_share=0.5)
    row = make_rows(1, seed=6)[0]
    routed = {f"r{i}": call(pipeline, row, request_id=f"r{i}").headers["X-Model-Version"] for i in range(200)}
    assert routed == {key: "v2" if bucket(key) < int(0.5 * HASH_SPACE) else "v1" for key in routed}


def test_a_column_batch_is_decoded_again_for_a_canary_that_reads_more_columns(
    approved: CompiledModel,
) -> None:
    """A big body is decoded for production's columns only; routed to a canary that also reads x0, it is
    decoded again for the canary, whose answer is then its own bits on the whole rows."""
    canary = challenger_of(approved)
    key = next(f"c{i}" for i in range(1000) if bucket(f"c{i}") < int(0.1 * HASH_SPACE))
    rows = [dict(row, customer_id=key if i == 0 else f"o{i}") for i, row in enumerate(make_rows(400, 7))]
    for row in rows:
        row["x0"] = 3.5
    pipeline, _, _ = build(approved, canary, offload=1)  # every body goes to the column decoder
    answer = call(pipeline, rows)
    assert answer.headers["X-Model-Version"] == "v2"
    expected = canary.score_batch(JsonBatch(rows))
    assert [r["phat"] for r in orjson.loads(answer.body)] == expected.phat


# --- failures, fallbacks, rollbacks --------------------------------------------------------------------
@pytest.fixture
def staged(approved_registry: Registry, tmp_path: Path) -> Registry:
    """A registry whose staging alias names v1: the canary version of these tests."""
    shutil.copytree(approved_registry.root, tmp_path / "artifacts")
    registry = Registry(tmp_path / "artifacts", approved_registry.name)
    registry.set_alias("staging", "v1", reason="to canary")
    return registry


def test_a_failing_canary_is_answered_by_production_and_rolled_back(
    approved: CompiledModel, staged: Registry
) -> None:
    production = relabelled(approved, "v0")
    canary = relabelled(approved, "v1", Failing)
    pipeline, router, metrics = build(production, canary, staged, canary_share=0.5, canary_min_calls=20)
    rows = make_rows(300, seed=8)
    for i, row in enumerate(rows):
        answer = call(pipeline, dict(row, customer_id=f"c{i}"))
        assert answer.headers["X-Model-Version"] == "v0"  # every call answered, by production
        assert orjson.loads(answer.body)["phat"] == production.score_batch(JsonBatch([row])).phat[0]
    fell_back = value(metrics, "propensity_version_calls_total", version="v0", route="fallback")
    assert fell_back == 20  # the canary's 20 failed calls, then no more routing to it
    assert router.halted == {"v1"}
    assert value(metrics, "propensity_canary_rollbacks_total", version="v1", reason="error_rate") == 1
    assert "staging" not in staged.aliases()  # the rollback reached the registry
    deleted = [e for e in staged.history() if e["event"] == "alias-delete"]
    assert len(deleted) == 1 and deleted[0]["previous"] == "v1"
    assert deleted[0]["reason"].startswith("canary rolled back automatically (error_rate): 20 of")
    assert deleted[0]["by"].startswith("canary-guard@")


def test_bad_input_both_models_refuse_is_production_s_error_and_not_the_canary_s(
    approved: CompiledModel,
) -> None:
    canary = challenger_of(approved)
    pipeline, router, metrics = build(approved, canary, canary_share=1.0)
    bad = dict(make_rows(1, seed=9)[0], x12="not a number", customer_id="c1")
    with pytest.raises(InputError) as raised:
        call(pipeline, bad)
    assert raised.value.errors[0].field == "x12"
    assert router.halted == set() and len(router.guard._failed) == 0
    assert value(metrics, "propensity_version_calls_total", version="v1", route="fallback") == 0


def test_a_row_only_the_canary_refuses_is_answered_by_production(approved: CompiledModel) -> None:
    canary = challenger_of(approved)  # reads x0, which production ignores
    pipeline, router, _ = build(approved, canary, canary_share=1.0)
    row = dict(make_rows(1, seed=10)[0], x0="not a number", customer_id="c1")
    answer = call(pipeline, row)
    assert answer.headers["X-Model-Version"] == "v1"
    assert list(router.guard._failed) == [True]


def test_the_guard_judges_the_error_rate_only_after_enough_calls() -> None:
    guard = CanaryGuard(Settings(canary_min_calls=20, canary_max_error_rate=0.1))
    for _ in range(3):
        assert guard.canary(None) is None  # 3 of 3 failed, but too few calls to judge
    for _ in range(16):
        assert guard.canary(0.001) is None
    verdict = guard.canary(0.001)
    assert verdict is not None and verdict.reason == "error_rate"
    assert verdict.detail == "3 of its last 20 calls failed"
    guard.reset()
    assert guard.canary(None) is None


def test_the_guard_rolls_back_a_canary_slower_than_production_by_the_ratio_and_the_margin() -> None:
    settings = Settings(
        canary_min_calls=20,
        canary_window_calls=50,
        canary_max_latency_ratio=2.0,
        canary_min_latency_regression_seconds=0.002,
    )
    guard = CanaryGuard(settings)
    for _ in range(50):
        guard.production(0.001)
    assert [guard.canary(0.0019) for _ in range(100)] == [None] * 100  # 1.9x: within the ratio
    guard.reset()
    assert [guard.canary(0.0029) for _ in range(100)] == [None] * 100  # 2.9x but only 1.9 ms more
    guard.reset()
    verdicts = [guard.canary(0.0035) for _ in range(50)]
    assert verdicts[:-1] == [None] * 49  # judged once the window is full (a p95 of 20 is one call)
    assert verdicts[-1] is not None and verdicts[-1].reason == "latency"
    assert "3.5 ms against production's 1 ms (over 50 and 50 calls)" in verdicts[-1].detail


def test_a_rolled_back_version_staged_again_after_its_alias_went_is_a_new_canary(
    approved: CompiledModel,
) -> None:
    holder = Fixed(challenger_of(approved))
    settings = Settings(canary_share=1.0)
    router = CanaryRouter(settings, Metrics(CollectorRegistry()), holder, None, background=lambda w: None)
    router.halted.add("v2")
    assert router.candidate(approved) is None
    holder.current = None  # the alias was deleted: the follower let it go
    assert router.candidate(approved) is None and router.halted == set()
    holder.current = challenger_of(approved)
    assert router.candidate(approved) is holder.current
