"""The few-rows path of CompiledModel.score: the same bits as the array path; problems go to the latter."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from service.model.artifact import FittedModel
from service.model.notebook_import import approved_model
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from service.serving.batch import JsonBatch
from service.serving.scorer import SMALL_BATCH, CompiledModel


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    model: FittedModel = approved_model()
    return CompiledModel(model, version="v-test", sha256="0" * 64)


def _rows(n: int) -> list[dict[str, Any]]:
    frame = make_synthetic_frame(n, 11, target=False)
    rows: list[dict[str, Any]] = orjson.loads(frame.to_json(orient="records"))
    strings = [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows[: n // 4]]
    return rows + strings + list(example_rows()["rows"])


def test_small_path_matches_array_path_bit_for_bit(compiled: CompiledModel) -> None:
    rows = _rows(800)
    rng = random.Random(3)
    i = 0
    while i < len(rows):
        chunk = rows[i : i + rng.randint(1, SMALL_BATCH)]
        small, arrays = compiled._score_small(chunk), compiled._score_arrays(JsonBatch(chunk))
        assert small is not None
        assert small.phat == arrays.phat and small.outcome == arrays.outcome
        assert orjson.dumps(compiled.records(small)) == orjson.dumps(compiled.records(arrays))
        i += len(chunk)


@pytest.mark.parametrize(
    "change",
    [{"x31": "mars"}, {"x44": True}, {"x12": "12 dollars"}, {"x5": 3}, {"x62": "inf"}],
)
def test_small_path_defers_problems(compiled: CompiledModel, change: dict[str, Any]) -> None:
    row = {**example_rows()["rows"][0], **change}
    assert compiled._score_small([row]) is None
    scored = compiled.score([row])
    assert scored.errors or scored.unseen
