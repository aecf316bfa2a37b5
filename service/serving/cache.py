"""Response cache for /predict: key = model sha256 + hash of the request.

Two keys are tried, both scoped by the model's sha256 (so a new production model never serves old
answers): the hash of the raw body bytes (a repeat of the exact same payload hits without parsing
it), then the hash of the normalised request (the decoded rows re-encoded with sorted keys), so the same
rows sent with other whitespace or key order hit too. A stored value is the exact response body, so a
hit returns the same bytes a miss would.

A call's two keys are a `CacheKeys`. `set(keys, value)` stores the bytes once, under `keys[0]` (the
raw-body key: exact repeats, the common case, then hit in one lookup); every other key is an *alias* that
names `keys[0]`. A lookup that lands on an alias follows it once; an alias whose target has expired or
been evicted is a miss.

A cache that others can write to (Redis) serves only what verifies: service/serving/cache_integrity.py.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import blake3
import msgspec
import orjson

# BLAKE3: cryptographic (a client cannot craft a body that collides with another's key) and several times
# faster than sha256 or blake2b. A hit on a big batch is mostly moving and hashing its body, so the hash's
# speed is much of a hit's time in the app.
_HASH = blake3.blake3
ALIAS_PREFIX = b"@"  # a stored response body is JSON ("{", "[") or gzip (0x1f 0x8b), never "@"


def body_hasher() -> Any:
    """An incremental hash of the raw body: fed chunk by chunk while the body arrives, so hashing a large
    body overlaps with receiving it instead of following it."""
    return _HASH()


def chunks_hasher(chunks: Iterable[bytes]) -> Any:
    """A body_hasher() fed a body that arrived without one (no Content-Length: a chunked upload)."""
    hasher = _HASH()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher


def raw_key(model_sha: str, body: bytes) -> str:
    return hashed_raw_key(model_sha, _HASH(body))


def hashed_raw_key(model_sha: str, hasher: Any) -> str:
    """raw_key of a body already fed to `hasher` (a body_hasher()), chunk by chunk."""
    return f"propensity:{model_sha[:16]}:raw:{hasher.hexdigest()[:40]}"


def rekeyed(raw: str | None, model_sha: str) -> str | None:
    """A raw-body key (hashed_raw_key) of the same body for another model."""
    if raw is None:
        return None
    return f"propensity:{model_sha[:16]}:" + raw.split(":", 2)[2]


def normalised_key(model_sha: str, payload: Any) -> str | None:
    """None for rows orjson cannot write back (nested deeper than its recursion limit)."""
    try:
        canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return f"propensity:{model_sha[:16]}:norm:{_HASH(canonical).hexdigest()[:40]}"


def columns_key(model_sha: str, rows: list[Any]) -> str:
    """Key of a batch decoded by columns: only the model's columns, all that the answer depends on."""
    digest = _HASH(msgspec.json.encode(rows)).hexdigest()
    return f"propensity:{model_sha[:16]}:cols:{digest[:40]}"


@dataclass(frozen=True, slots=True)
class CacheKeys:
    """The two keys of one call: `raw` (of the body's bytes) holds the stored answer, `normalised` (of the
    decoded rows) is an alias of it, so the same rows in other bytes hit too."""

    raw: str
    normalised: str

    def for_store(self) -> list[str]:
        """In the order ResponseCache.set takes: the key that holds the bytes first, then its alias (none
        when the rows could not be normalised: the raw key stands for them, and an alias of itself would
        replace the answer)."""
        return [self.raw] if self.normalised == self.raw else [self.raw, self.normalised]


class ResponseCache(Protocol):
    """What /predict needs from a cache. Implementations never raise: a broken cache is a miss."""

    name: str

    def get(self, keys: list[str]) -> bytes | None:
        """The value of the first key that has one (following an alias), else None."""
        ...

    def set(self, keys: list[str], value: bytes) -> None:
        """Store `value` under keys[0]; make every other key an alias of keys[0]."""
        ...


class LRUCache:
    """In-process LRU bounded by total bytes (the embedded default, when no Redis is configured)."""

    name = "lru"

    def __init__(self, max_bytes: int, max_value_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_value_bytes = max_value_bytes
        self._data: OrderedDict[str, bytes | str] = OrderedDict()  # str = alias: the key holding the bytes
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, keys: list[str]) -> bytes | None:
        with self._lock:
            for key in keys:
                value = self._data.get(key)
                if value is None:
                    continue
                self._data.move_to_end(key)
                if isinstance(value, str):
                    target = value
                    value = self._data.get(target)
                    if not isinstance(value, bytes):
                        continue  # dangling alias: its target was evicted
                    self._data.move_to_end(target)
                return value
        return None

    def set(self, keys: list[str], value: bytes) -> None:
        if not keys or len(value) > self.max_value_bytes or len(value) > self.max_bytes:
            return
        primary = keys[0]
        with self._lock:
            self._put(primary, value)
            for key in keys[1:]:
                self._put(key, primary)
            while self._bytes > self.max_bytes and self._data:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= _size(evicted)

    def _put(self, key: str, value: bytes | str) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= _size(old)
        self._data[key] = value
        self._bytes += _size(value)


def _size(value: bytes | str) -> int:
    return len(value)
