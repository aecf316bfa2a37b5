"""Response cache for /predict: key = model sha256 + hash of the request.

Two keys are tried, both scoped by the model's sha256 (so a new production model never serves old
answers): the hash of the raw body bytes (a repeat of the exact same payload hits without parsing
it), then the hash of the normalised request (the decoded rows re-encoded with sorted keys), so the same
rows sent with other whitespace or key order hit too. A stored value is the exact response body, so a
hit returns the same bytes a miss would.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Protocol

import orjson


def raw_key(model_sha: str, body: bytes) -> str:
    return f"propensity:{model_sha[:16]}:raw:{hashlib.blake2b(body, digest_size=20).hexdigest()}"


def normalised_key(model_sha: str, payload: Any) -> str:
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return f"propensity:{model_sha[:16]}:norm:{hashlib.blake2b(canonical, digest_size=20).hexdigest()}"


class ResponseCache(Protocol):
    name: str

    def get(self, keys: list[str]) -> bytes | None: ...

    def set(self, keys: list[str], value: bytes) -> None: ...


class LRUCache:
    """In-process LRU bounded by total bytes (the embedded default, when no Redis is configured)."""

    name = "lru"

    def __init__(self, max_bytes: int, max_value_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_value_bytes = max_value_bytes
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, keys: list[str]) -> bytes | None:
        with self._lock:
            for key in keys:
                value = self._data.get(key)
                if value is not None:
                    self._data.move_to_end(key)
                    return value
        return None

    def set(self, keys: list[str], value: bytes) -> None:
        if len(value) > self.max_value_bytes or len(value) > self.max_bytes:
            return
        with self._lock:
            for key in keys:
                old = self._data.pop(key, None)
                if old is not None:
                    self._bytes -= len(old)
                self._data[key] = value
                self._bytes += len(value)
            while self._bytes > self.max_bytes and self._data:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= len(evicted)
