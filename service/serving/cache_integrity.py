"""Signed cache values: a value read back from Redis is served only if a replica of this service wrote it.

Whatever can reach Redis can write to it, and a value written to a key the service computes would
otherwise be served as the answer (`X-Cache: hit`). So every value stored in Redis carries a tag: keyed
BLAKE3 (BLAKE3's MAC mode) over the key the value is stored under and the value itself, keyed by the
server secret (`PROPENSITY_CACHE_SECRET` or `PROPENSITY_CACHE_SECRET_FILE`, one secret shared by every
replica). The tag binds the key, so a genuine answer copied under another request's key does not verify
either; aliases are values and are tagged the same way.

A value whose tag does not verify (forged, moved, or written under another secret) is refused: counted
(`propensity_cache_requests_total{result="rejected"}`), logged once per process and reason, and treated as
a miss: the answer is computed, and stored over the refused value.

Keyed BLAKE3, not HMAC-SHA256: the same guarantee at several times the speed, and a hit on a 10,000-row
batch verifies megabytes on the request path (docs/operations.md, "The response cache", has the figures).

The in-process LRU is not tagged: only its own worker writes it, and whatever could write into a worker's
memory could read the secret there too.
"""

from __future__ import annotations

import hmac
import logging
import threading
from pathlib import Path

import blake3

from service.settings import Settings

log = logging.getLogger("propensity.cache")

TAG_BYTES = 32
MIN_SECRET_CHARS = 16
# BLAKE3's key derivation turns a secret of any length into the 32-byte MAC key; the context string is
# this use's own, so the same secret used elsewhere yields an unrelated key.
_KEY_CONTEXT = "propensity-service response cache value tags v1"
_NO_SECRET = (
    "a Redis cache needs PROPENSITY_CACHE_SECRET or PROPENSITY_CACHE_SECRET_FILE (the same on every "
    "replica; e.g. `openssl rand -hex 32`): values in a shared Redis are signed and verified with it"
)


class CacheSigner:
    """Seals a value for the key it is stored under (tag + value) and opens it again (None: refused)."""

    def __init__(self, secret: bytes) -> None:
        self._key = blake3.blake3(secret, derive_key_context=_KEY_CONTEXT).digest()

    def _tag(self, key: str, value: bytes | memoryview) -> bytes:
        name = key.encode()
        mac = blake3.blake3(len(name).to_bytes(4, "big"), key=self._key)  # the length: no key/value overlap
        mac.update(name)
        mac.update(value)
        return mac.digest()

    def seal(self, key: str, value: bytes) -> bytes:
        return self._tag(key, value) + value

    def open(self, key: str, sealed: bytes) -> bytes | None:
        """The value sealed for `key`, or None when its tag does not verify."""
        if len(sealed) < TAG_BYTES:
            return None
        view = memoryview(sealed)
        if not hmac.compare_digest(self._tag(key, view[TAG_BYTES:]), view[:TAG_BYTES]):
            return None
        return sealed[TAG_BYTES:]


def read_secret_file(path: Path, what: str) -> str:
    """A secret from a file (a Swarm secret under /run/secrets), without its trailing newline."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if not text:
        raise ValueError(f"the {what} file {path} is empty")
    return text


def cache_secret(settings: Settings) -> bytes | None:
    """The configured cache secret, or None when neither setting is given."""
    if settings.cache_secret is not None and settings.cache_secret_file is not None:
        raise ValueError("set PROPENSITY_CACHE_SECRET or PROPENSITY_CACHE_SECRET_FILE, not both")
    if settings.cache_secret_file is not None:
        secret = read_secret_file(settings.cache_secret_file, "cache secret")
    elif settings.cache_secret is not None:
        secret = settings.cache_secret.get_secret_value()
    else:
        return None
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"the cache secret has fewer than {MIN_SECRET_CHARS} characters")
    return secret.encode()


def shared_signer(settings: Settings) -> CacheSigner:
    """The signer of a cache shared by replicas: there is no safe default secret, so none means an error
    (the service does not start) rather than values anyone could forge or only one process could read."""
    secret = cache_secret(settings)
    if secret is None:
        raise ValueError(_NO_SECRET)
    return CacheSigner(secret)


_logged: set[str] = set()
_logged_lock = threading.Lock()


def log_refusal_once(reason: str, where: str) -> None:
    """Log the first refusal of each reason in this process; the counter has them all."""
    with _logged_lock:
        if reason in _logged:
            return
        _logged.add(reason)
    log.warning(
        "cached value refused (%s; %s): answered as a miss; further refusals are only counted "
        '(propensity_cache_requests_total{result="rejected"})',
        reason,
        where,
    )
