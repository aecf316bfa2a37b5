"""ColumnDecoder (big bodies): the same records, errors and unseen counts as the full orjson decode."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.model.notebook_import import approved_model
from service.model.synthetic import make_synthetic_frame
from service.serving.decoding import decode_rows
from service.serving.scorer import CompiledModel


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    return CompiledModel(approved_model(), version="v-test", sha256="0" * 64)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    frame = make_synthetic_frame(1000, 9, target=False)
    rows: list[dict[str, Any]] = orjson.loads(frame.to_json(orient="records"))
    return rows


VARIANTS = {
    "as sent": lambda rows: rows,
    "all strings": lambda rows: [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows],
    "integers": lambda rows: [dict(r, x44=3, x91=-2, x53=2**62) for r in rows],
    "unknown keys": lambda rows: [dict(r, extra="z", x100=1) for r in rows],
    "bad values": lambda rows: [dict(r, x44="abc") if i % 7 == 0 else r for i, r in enumerate(rows)],
    "unseen levels": lambda rows: [dict(r, x31="mars") if i % 5 == 0 else r for i, r in enumerate(rows)],
    "absent keys": lambda rows: [{k: v for k, v in r.items() if k not in ("x12", "x31")} for r in rows],
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_answer_as_the_full_decode(
    compiled: CompiledModel, base: list[dict[str, Any]], variant: str
) -> None:
    body = orjson.dumps(VARIANTS[variant](base))
    fast = compiled.column_decoder.decode(body, max_rows=10_000)
    assert fast is not None
    a, b = compiled.score(decode_rows(body, max_rows=10_000, max_errors=100).rows), compiled.score(fast.rows)
    assert orjson.dumps(compiled.records(a)) == orjson.dumps(compiled.records(b))
    assert (a.errors, a.bad_rows, a.unseen) == (b.errors, b.bad_rows, b.unseen)


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b"3", b'[{"x44": true}]', b'[{"x44": {"a": 1}}]', b"[1, 2]", b'{"x5": ["monday"]}'],
)
def test_declines_what_the_full_decode_must_report(compiled: CompiledModel, body: bytes) -> None:
    assert compiled.column_decoder.decode(body, max_rows=10_000) is None


def test_declines_too_many_rows(compiled: CompiledModel) -> None:
    assert compiled.column_decoder.decode(b"[" + b",".join([b"{}"] * 11) + b"]", max_rows=10) is None
