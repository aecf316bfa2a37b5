"""Nothing read back from a cache is trusted as it is: tags over key + value, the secret's settings, the
cap on decompression, and a refused value answered as a miss (with Redis:
tests/integration/test_redis_cache.py)."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from service.model.registry import Registry
from service.serving import cache_integrity
from service.serving.cache import raw_key
from service.serving.cache_integrity import TAG_BYTES, CacheSigner, cache_secret, shared_signer
from service.serving.compression import gunzip_body, gzip_body
from service.serving.metrics import Metrics
from service.serving.redis_cache import RedisCache, make_client
from service.settings import Settings
from tests.unit.serving.test_pipeline import ROWS, answer, build, model_of

SECRET = b"0123456789abcdef0123456789abcdef"
GIB = 1 << 30


def gzip_bomb(inflated: int, chunk: int = 1 << 20) -> bytes:
    """One gzip member of `inflated` zero bytes (a multiple of `chunk`), about a thousandth of that in size:
    a self-contained compressed block of `chunk` zeros, repeated, so building it costs little."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(chunk)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)  # no reference back past it
    crc = 0
    for _ in range(inflated // chunk):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = crc.to_bytes(4, "little") + (inflated % (1 << 32)).to_bytes(4, "little")
    return header + block * (inflated // chunk) + deflate.flush() + trailer


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    metrics.buffer.flush()
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# --- tags ---------------------------------------------------------------------------------------------------
def test_a_sealed_value_opens_only_for_its_key_and_secret() -> None:
    signer = CacheSigner(SECRET)
    value = orjson.dumps([{"business_outcome": 0, "phat": 0.25}] * 100)
    sealed = signer.seal("propensity:k:raw:1", value)
    assert len(sealed) == len(value) + TAG_BYTES and sealed.endswith(value)
    assert signer.open("propensity:k:raw:1", sealed) == value
    assert signer.seal("propensity:k:raw:1", value) == sealed  # deterministic: no nonce needed
    assert signer.open("propensity:k:raw:2", sealed) is None  # a genuine value moved to another key
    assert CacheSigner(SECRET[::-1]).open("propensity:k:raw:1", sealed) is None  # another secret
    for at in (0, TAG_BYTES - 1, TAG_BYTES, len(sealed) - 1):  # any flipped bit, tag or value
        forged = bytearray(sealed)
        forged[at] ^= 0x01
        assert signer.open("propensity:k:raw:1", bytes(forged)) is None, at
    assert signer.open("propensity:k:raw:1", value) is None  # an unsigned value (what the issue forged)
    assert signer.open("propensity:k:raw:1", sealed[: TAG_BYTES - 1]) is None
    assert signer.open("propensity:k:raw:1", sealed[:TAG_BYTES]) is None  # the tag of b"" is another
    # the key's length is tagged: moving bytes between the key and the value does not verify
    assert (
        signer.open("propensity:k:raw:", signer.seal("propensity:k:raw:1", b"2")[:TAG_BYTES] + b"12") is None
    )


def test_the_secret_comes_from_one_setting_and_has_a_minimum_length(tmp_path: Path) -> None:
    secret_file = tmp_path / "cache_secret"
    secret_file.write_text(SECRET.decode() + "\n")  # what `echo ... > file` writes
    assert cache_secret(Settings(cache_secret_file=secret_file)) == SECRET
    assert cache_secret(Settings(cache_secret=SecretStr(SECRET.decode()))) == SECRET
    assert cache_secret(Settings()) is None
    with pytest.raises(ValueError, match="not both"):
        cache_secret(Settings(cache_secret=SecretStr(SECRET.decode()), cache_secret_file=secret_file))
    with pytest.raises(ValueError, match="fewer than 16 characters"):
        cache_secret(Settings(cache_secret=SecretStr("short")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        cache_secret(Settings(cache_secret_file=tmp_path / "empty"))
    with pytest.raises(ValueError, match="cannot read the cache secret file"):
        cache_secret(Settings(cache_secret_file=tmp_path / "missing"))
    assert SECRET.decode() not in repr(Settings(cache_secret=SecretStr(SECRET.decode())))


def test_a_redis_cache_without_a_secret_is_refused_at_start() -> None:
    """No safe default: a per-process secret would make every other replica's values unreadable, a fixed
    one would let anyone forge them. So Redis without a secret is a configuration error."""
    with pytest.raises(ValueError, match="PROPENSITY_CACHE_SECRET"):
        shared_signer(Settings(redis_url="redis://127.0.0.1:6390/0"))
    with pytest.raises(ValueError, match="PROPENSITY_CACHE_SECRET"):
        RedisCache(Settings(redis_url="redis://127.0.0.1:6390/0"), Metrics())


def test_the_redis_password_comes_from_the_url_or_a_file_never_both(tmp_path: Path) -> None:
    password_file = tmp_path / "redis_password"
    password_file.write_text("s3cret-password\n")
    url = "redis://127.0.0.1:6390/0"
    from_file = make_client(Settings(redis_url=url, redis_password_file=password_file), 0.05)
    assert from_file.connection_pool.connection_kwargs["password"] == "s3cret-password"
    in_url = make_client(Settings(redis_url="redis://:in-url@127.0.0.1:6390/0"), 0.05)
    assert in_url.connection_pool.connection_kwargs["password"] == "in-url"
    assert make_client(Settings(redis_url=url), 0.05).connection_pool.connection_kwargs["password"] is None
    with pytest.raises(ValueError, match="PROPENSITY_REDIS_URL and PROPENSITY_REDIS_PASSWORD_FILE"):
        make_client(Settings(redis_url="redis://:x@127.0.0.1:6390/0", redis_password_file=password_file), 1)


# --- the cap on decompression -------------------------------------------------------------------------------
def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip_bomb(GIB)
    assert len(bomb) < 1_100_000  # the bomb: about 1 MB that inflates to 1 GiB
    assert gunzip_body(bomb, 16 * 1024 * 1024) is None
    small = gzip_bomb(4 << 20)
    assert gzip.decompress(small) == bytes(4 << 20)  # a well-formed gzip member: the cap refuses it
    assert gunzip_body(small, 4 << 20) == bytes(4 << 20)  # exactly at the cap: fine
    assert gunzip_body(small, (4 << 20) - 1) is None  # one byte past it: refused


def test_gzip_that_is_not_one_whole_member_is_refused() -> None:
    packed = gzip_body(b'[{"business_outcome":0,"phat":0.1}]' * 100)
    assert gunzip_body(packed, 1 << 20) is not None
    assert gunzip_body(packed[:-5], 1 << 20) is None  # truncated
    assert gunzip_body(packed + packed, 1 << 20) is None  # a second member (or trailing bytes)
    assert gunzip_body(packed[:10] + b"\x00" * 30, 1 << 20) is None  # not deflate
    corrupt = bytearray(packed)
    corrupt[-6] ^= 0xFF  # the CRC
    assert gunzip_body(bytes(corrupt), 1 << 20) is None


# --- through the pipeline: a refused value is a miss --------------------------------------------------------
def test_a_stored_gzip_bomb_is_refused_counted_and_the_answer_recomputed(
    approved_registry: Registry, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_integrity, "_logged", set())  # a fresh process: nothing logged yet
    pipeline, metrics = build(approved_registry, cache=True)
    body = orjson.dumps(ROWS)
    expected = answer(build(approved_registry)[0], body).body  # no cache at all
    assert pipeline.cache is not None
    key = raw_key(model_of(pipeline).sha256, body)
    pipeline.cache.set([key], gzip_bomb(GIB))  # as if the cache held it at the key of this very request
    with caplog.at_level(logging.WARNING, logger="propensity.cache"):
        first = answer(pipeline, body)
    assert "X-Cache" not in first.headers and first.body == expected
    assert sample(metrics, "propensity_cache_requests_total", result="rejected") == 1
    assert sample(metrics, "propensity_cache_requests_total", result="hit") == 0
    assert sample(metrics, "propensity_cache_requests_total", result="miss") == 1
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()] == [
        "cached value refused (gzip value not whole or over the size cap; model v1): answered as a miss; "
        'further refusals are only counted (propensity_cache_requests_total{result="rejected"})'
    ]
    again = answer(pipeline, body)  # the recomputed answer was stored over the bomb
    assert again.headers.get("X-Cache") == "hit" and again.body == expected
