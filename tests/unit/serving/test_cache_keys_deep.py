"""Rows too deep to normalise still go through the cache: their raw-body key stands for them."""

from __future__ import annotations

from service.model.registry import Registry
from service.serving.cache import normalised_key
from tests.conftest import app_client


def deep(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_normalised_key_is_none_past_orjsons_recursion_limit() -> None:
    assert normalised_key("a" * 64, {"x44": deep(10)}) is not None
    assert normalised_key("a" * 64, {"x44": deep(300)}) is None


def test_a_small_deep_body_is_a_4xx_and_cached_answers_still_work(
    approved_registry: Registry, reference_rows: list[dict[str, object]]
) -> None:
    body = '{"x44": ' + "[" * 300 + "1" + "]" * 300 + "}"
    with app_client(approved_registry, cache_min_body_bytes=0) as client:
        answer = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        first = client.post("/predict", json=reference_rows[0])
        again = client.post("/predict", json=reference_rows[0])
        assert first.status_code == again.status_code == 200
        assert again.headers.get("x-cache") == "hit" and again.content == first.content
