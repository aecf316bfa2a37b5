"""Hostile bodies: deep nesting, booleans and containers where values belong, bytes that are not UTF-8.

Whatever the column decoder (bodies of 64 KiB and more) fails on is an input error or a fallback to the
full decode, never a 500; and a boolean or a container in a model column no longer sends a big body down
the full decode: the column decoder takes it, and the answer is the full decode's, to the byte.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import anyio
import msgspec
import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.errors import InputError, MalformedJSON
from service.model.notebook_import import approved_model
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.batch import ColumnBatch
from service.serving.decoding import ColumnDecoder, decode_rows, repr_head
from service.serving.holder import ModelHolder
from service.serving.json_rows import COLUMN_DECODE_MIN_BYTES, JsonRows
from service.serving.metrics import Metrics
from service.serving.pipeline import Answer, Body, ScoringPipeline
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tests.conftest import app_client

ROW: dict[str, Any] = example_rows()["rows"][0]
JSON = {"content-type": "application/json"}
PADDING_ROWS = 50  # rows of ROW before the hostile one: a body over 64 KiB, read by the column decoder


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    return CompiledModel(approved_model(), version="v-test", sha256="0" * 64)


def nested(depth: int, kind: str = "array") -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def with_value(key: str, value: bytes) -> bytes:
    """ROW with `key` set to the raw JSON `value`."""
    return (
        orjson.dumps({k: v for k, v in ROW.items() if k != key})[:-1]
        + b', "'
        + key.encode()
        + b'": '
        + value
        + b"}"
    )


def body(place: str, depth: int, big: bool) -> bytes:
    if place in ("the body", "a row"):
        element = nested(depth)
    elif place == "an object in a model column":
        element = with_value("x44", nested(depth, "object"))
    else:
        key = {"a numeric column": "x44", "a category column": "x31", "an ignored key": "zz"}[place]
        element = with_value(key, nested(depth))
    if place == "the body" and not big:
        return element
    rows = [orjson.dumps(ROW)] * (PADDING_ROWS if big else 1) + [element]
    out = b"[" + b",".join(rows) + b"]"
    assert (len(out) >= COLUMN_DECODE_MIN_BYTES) == big
    return out


PLACES = [
    "the body",
    "a row",
    "a numeric column",
    "a category column",
    "an object in a model column",
    "an ignored key",
]


def expected_status(place: str, depth: int, big: bool) -> int:
    """4xx for all of them but one: a small body with a deep value under a key the model ignores is
    scored (orjson reads up to 1,024 levels; the column decoder refuses about 1,000 with a 400)."""
    if depth > 1024:
        return 400  # orjson's depth limit
    if place in ("the body", "a row"):
        return 422  # not an object: the column decoder declines at once, the full decode names the row
    if big and depth >= 1000:
        return 400  # deeper than the column decoder follows
    return 200 if place == "an ignored key" else 422


@pytest.fixture(scope="module")
def client(approved_registry: Registry) -> Iterator[TestClient]:
    with app_client(approved_registry) as c:
        yield c


# (depth, big): 100,000 levels take 200 KB, so a small body nests 10,000 deep at most here
SIZES = [(300, False), (1000, False), (10_000, False), (300, True), (1000, True), (100_000, True)]


@pytest.mark.parametrize(("depth", "big"), SIZES, ids=[f"{d}-{'big' if b else 'small'}" for d, b in SIZES])
@pytest.mark.parametrize("place", PLACES)
def test_deep_nesting_is_a_4xx_never_a_500(client: TestClient, place: str, depth: int, big: bool) -> None:
    data = body(place, depth, big)
    r = client.post("/predict", content=data, headers=JSON)
    want = expected_status(place, depth, big)
    assert r.status_code == want, r.text[:300]
    if want == 200:
        assert r.json() == client.post("/predict", content=body_without_zz(data), headers=JSON).json()
        return
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == want and problem["detail"]
    kind = (
        "malformed-json"
        if want == 400
        else "bad-body-shape"
        if place in ("the body", "a row")
        else "invalid-rows"
    )
    assert problem["type"].endswith("/" + kind)
    if want == 422 and "column" in place:
        [error] = problem["errors"]
        assert error["row"] == (PADDING_ROWS if big else 1)
        assert error["field"] == ("x31" if "category" in place else "x44")
        head = ("{'a': " * 7)[:39] if "object" in place else "[" * 39
        assert error["value"] == head + "…"
    assert len(r.content) < 20_000


def body_without_zz(data: bytes) -> bytes:
    rows = orjson.loads(data)
    return orjson.dumps([{k: v for k, v in row.items() if k != "zz"} for row in rows])


def test_the_server_still_answers(client: TestClient) -> None:
    assert client.post("/predict", content=orjson.dumps(ROW), headers=JSON).status_code == 200


def test_the_column_decoder_refuses_nesting_it_cannot_follow(compiled: CompiledModel) -> None:
    for place in ("an ignored key", "a numeric column"):
        with pytest.raises(MalformedJSON):
            compiled.column_decoder.decode(body(place, 1000, big=True), max_rows=10_000)


@pytest.mark.parametrize("key", ["x44", "x31"])
def test_bytes_that_are_not_utf8_in_a_model_column_are_a_400(client: TestClient, key: str) -> None:
    data = b"[" + b",".join([orjson.dumps(ROW)] * PADDING_ROWS + [with_value(key, b'"\xff\xfe"')]) + b"]"
    r = client.post("/predict", content=data, headers=JSON)
    assert r.status_code == 400 and r.json()["type"].endswith("/malformed-json")


# --- booleans and containers: the column decoder takes them, with the full decode's answer ------------------
HOSTILE_VALUES: dict[str, Any] = {
    "x44": True,
    "x91": False,
    "x12": True,
    "x63": False,
    "x31": True,
    "x5": False,
    "x53": [1.5],
    "x62": {"a": [1, {"b": None}], "c": "d"},
    "x81": ["July"],
    "x56": [],
    "x58": {},
}


def hostile_rows(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = [dict(ROW) for _ in range(n)]
    for i in rng.sample(range(n), min(40, n)):
        column = rng.choice(list(HOSTILE_VALUES))
        rows[i][column] = HOSTILE_VALUES[column]
    rows[n // 2]["x53"] = orjson.loads(nested(300))  # deeper than repr and orjson.dumps like
    rows[n // 3]["x31"] = {"k": orjson.loads(nested(200))}
    rows[n // 4]["x44"] = True  # the boolean in a numeric column, the case
    return rows


def pipeline_with(registry: Registry, column_decode_min_bytes: int, **overrides: Any) -> ScoringPipeline:
    settings = Settings(artifacts_dir=registry.root, reload_interval_seconds=0, **overrides)
    metrics = Metrics(CollectorRegistry(), flush_interval=3600)
    holder = ModelHolder(settings, metrics, registry)
    holder.refresh()
    codec = JsonRows(
        max_rows=settings.max_rows,
        max_errors=settings.max_errors_listed,
        column_decode_min_bytes=column_decode_min_bytes,
    )
    return ScoringPipeline(settings, metrics, holder, codec)


def run(pipeline: ScoringPipeline, data: bytes) -> Answer | InputError:
    async def go() -> Answer:
        call = pipeline.admit("application/json", len(data))
        try:
            return await pipeline.infer(call, Body([data], len(data)))
        finally:
            call.release()

    try:
        return anyio.run(go)
    except InputError as exc:
        return exc


@pytest.mark.parametrize("policy", ["reject", "score-valid"])
@pytest.mark.parametrize("n", [1, 5, 300])
def test_the_column_path_answers_as_the_full_path(approved_registry: Registry, policy: str, n: int) -> None:
    rows = hostile_rows(n, seed=n)
    data = msgspec.json.encode(rows[0] if n == 1 else rows)  # orjson writes 255 levels at most
    columns = pipeline_with(approved_registry, 0, batch_error_policy=policy)
    full = pipeline_with(approved_registry, 10**12, batch_error_policy=policy)
    model = columns.models.current
    assert model is not None
    assert isinstance(columns.codec.decode(model, data), ColumnBatch)  # not declined: no slow path
    a, b = run(columns, data), run(full, data)
    assert type(a) is type(b)
    if isinstance(a, InputError):
        assert isinstance(b, InputError)
        assert (a.status, a.detail, a.errors, a.extra) == (b.status, b.detail, b.errors, b.extra)
        assert any("got a boolean" in e.reason for e in a.errors)
    else:
        assert isinstance(b, Answer)
        assert (a.body, a.headers) == (b.body, b.headers)
        assert b"got a boolean" in a.body


def test_a_boolean_is_reported_as_the_full_path_reports_it(compiled: CompiledModel) -> None:
    data = orjson.dumps([dict(ROW, x44=True), dict(ROW, x31=False)] + [ROW] * PADDING_ROWS)
    batch = compiled.column_decoder.decode(data, max_rows=10_000)
    assert isinstance(batch, ColumnBatch)
    errors = compiled.score_batch(batch).errors
    assert [(e.row, e.field, e.reason, e.value) for e in errors] == [
        (0, "x44", "expected a number or a string, got a boolean", "True"),
        (1, "x31", "expected a string category, got a boolean", "False"),
    ]


def random_json(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(8 if depth else 5)
    leaves: list[Any] = [
        None,
        True,
        rng.random() * 10 ** rng.randint(-5, 300),
        rng.randint(-9, 10**6),
        "a'\"\\é",
    ]
    if kind < 5:
        return leaves[kind]
    if kind == 5:
        return {f"k{i}'": random_json(rng, depth - 1) for i in range(rng.randrange(4))}
    return [random_json(rng, depth - 1) for _ in range(rng.randrange(4))]


def test_repr_head_is_the_head_of_repr() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        value = random_json(rng, 6)
        for limit in (0, 1, 7, 41, 10_000):
            assert repr_head(value, limit) == repr(value)[:limit]
    deep: Any = [True]
    for _ in range(100_000):  # far deeper than repr() can go
        deep = {"a": deep}
    assert repr_head(deep, 41) == ("{'a': " * 7)[:41]


def test_a_sliced_body_takes_them_slice_by_slice(compiled: CompiledModel) -> None:
    data = msgspec.json.encode(hostile_rows(300, seed=3))
    sliced = ColumnDecoder(compiled.used_columns, slice_bytes=4096)  # a few rows per slice
    pieces = sliced.decode(data, max_rows=10_000)
    whole = ColumnDecoder(compiled.used_columns, slice_bytes=10**9).decode(data, max_rows=10_000)
    assert pieces is not None and whole is not None and len(pieces) == 300
    assert msgspec.json.encode(pieces.rows) == msgspec.json.encode(whole.rows)
    full = decode_rows(data, max_rows=10_000, max_errors=100)
    a, b = compiled.score_batch(pieces), compiled.score_batch(full)
    assert (a.errors, a.bad_rows) == (b.errors, b.bad_rows) and len(a.errors) >= 40


def test_a_sliced_body_nested_too_deep_is_refused(compiled: CompiledModel) -> None:
    sliced = ColumnDecoder(compiled.used_columns, slice_bytes=4096)
    for place in ("an ignored key", "a numeric column"):
        with pytest.raises(MalformedJSON):
            sliced.decode(body(place, 1000, big=True), max_rows=10_000)
