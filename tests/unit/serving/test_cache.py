"""Cache keys, the in-process LRU and the circuit breaker (no Redis needed here)."""

from __future__ import annotations

from typing import Any

import orjson

from service.serving.cache import CacheKeys, LRUCache, normalised_key, raw_key
from service.serving.redis_cache import BreakerState, CircuitBreaker

SHA_A = "a" * 64
SHA_B = "b" * 64
ROWS: list[dict[str, Any]] = [
    {"x1": "1.5", "x5": "monday", "x31": None},
    {"x1": 2, "x5": "friday", "x31": "asia"},
]


def test_normalised_key_ignores_whitespace_and_key_order_but_raw_key_does_not() -> None:
    compact = orjson.dumps(ROWS)
    spaced = orjson.dumps(ROWS, option=orjson.OPT_INDENT_2)
    reordered = orjson.dumps([dict(reversed(list(row.items()))) for row in ROWS])
    assert len({raw_key(SHA_A, b) for b in (compact, spaced, reordered)}) == 3
    norms = {normalised_key(SHA_A, orjson.loads(b)) for b in (compact, spaced, reordered)}
    assert len(norms) == 1


def test_keys_change_with_the_model_and_the_rows() -> None:
    body = orjson.dumps(ROWS)
    assert raw_key(SHA_A, body) != raw_key(SHA_B, body)
    assert normalised_key(SHA_A, ROWS) != normalised_key(SHA_B, ROWS)
    other = [{**ROWS[0], "x1": "1.6"}, ROWS[1]]
    assert normalised_key(SHA_A, ROWS) != normalised_key(SHA_A, other)
    assert raw_key(SHA_A, body).startswith(f"propensity:{SHA_A[:16]}:raw:")


def test_lru_stores_once_and_aliases_the_other_keys() -> None:
    cache = LRUCache(max_bytes=10_000, max_value_bytes=1_000)
    value = b'[{"phat":0.5}]'
    cache.set(["raw", "norm"], value)
    assert cache.get(["raw"]) == value
    assert cache.get(["other", "norm"]) == value  # via the alias
    assert cache.bytes_used == len(value) + len("raw")  # the value once, plus a key-sized alias
    assert cache.get(["absent"]) is None


def test_lru_evicts_least_recently_used_by_bytes_and_drops_dangling_aliases() -> None:
    cache = LRUCache(max_bytes=100, max_value_bytes=100)
    cache.set(["a"], b"x" * 40)
    cache.set(["b", "b-alias"], b"y" * 40)
    assert cache.get(["a"]) == b"x" * 40  # a is now the most recent
    cache.set(["c"], b"z" * 40)  # over 100 bytes: b goes first
    assert cache.get(["b"]) is None
    assert cache.get(["b-alias"]) is None  # its target is gone: a miss, not an error
    assert cache.get(["a"]) == b"x" * 40 and cache.get(["c"]) == b"z" * 40
    assert cache.bytes_used <= 100


def test_lru_refuses_values_over_the_limit() -> None:
    cache = LRUCache(max_bytes=1_000, max_value_bytes=10)
    cache.set(["big"], b"x" * 11)
    assert cache.get(["big"]) is None and len(cache) == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_then_probes_once() -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(3, 5.0, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    breaker.success()  # a success resets the count: failures must be consecutive
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    clock.now += 4.9
    assert not breaker.allow()
    clock.now += 0.2
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()  # the one probe
    assert not breaker.allow()  # nobody else while it is out
    breaker.failure()  # the probe failed: open again for a full period
    assert state_of(breaker) is BreakerState.OPEN and not breaker.allow()
    clock.now += 5.0
    assert breaker.allow()
    breaker.success()
    assert state_of(breaker) is BreakerState.CLOSED and breaker.allow() and breaker.allow()
    assert changes == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state now (a call, so a type checker does not carry an earlier reading over)."""
    return breaker.state


def test_rows_without_a_normalised_key_are_stored_under_the_raw_key_alone() -> None:
    # A batch that cannot be normalised keys its answer by the raw body twice: storing an alias of the
    # key to itself would replace the answer with the alias (and no repeat would ever hit).
    cache = LRUCache(1 << 20, 1 << 20)
    keys = CacheKeys("raw-key", "raw-key")
    assert keys.for_store() == ["raw-key"]
    cache.set(keys.for_store(), b'{"phat":0.5}')
    assert cache.get(["raw-key"]) == b'{"phat":0.5}'
    both = CacheKeys("raw-2", "normalised-2")
    cache.set(both.for_store(), b"[1]")
    assert cache.get(["normalised-2"]) == b"[1]" and cache.get(["raw-2"]) == b"[1]"
