"""Reason codes (service/serving/reasons.py): exact contributions, their order, and the JSON fragments
that stand for them in an answer."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd

from service.serving.batch import JsonBatch
from service.serving.reasons import Reasons, top_reasons
from service.serving.scorer import CompiledModel


def test_all_contributions_sum_to_the_logit_in_feature_order(
    approved_compiled: CompiledModel, fresh_rows: pd.DataFrame
) -> None:
    rows = fresh_rows.head(500).astype(object).where(fresh_rows.head(500).notna(), None).to_dict("records")
    scored = approved_compiled.score_batch(JsonBatch(rows))
    everything = top_reasons(approved_compiled, scored, len(approved_compiled.features))
    for i, phat in enumerate(scored.phat):
        by_input = {r["input"]: r["contribution"] for r in everything.row(i)}
        eta = 0.0
        for feature in approved_compiled.features:
            eta += by_input[feature]
        assert 1.0 / (1.0 + np.exp(-eta)) == phat


def test_the_top_k_are_the_largest_magnitudes_ties_in_feature_order() -> None:
    reasons = Reasons(np.array([[2, 0, 1]]), np.array([[-3.0, 2.0, -2.0]]), ("a", "b", "c"))
    assert reasons.row(0) == [
        {"contribution": -3.0, "input": "c"},
        {"contribution": 2.0, "input": "a"},
        {"contribution": -2.0, "input": "b"},
    ]


def test_fragments_are_the_json_of_the_rows(
    approved_compiled: CompiledModel, fresh_rows: pd.DataFrame
) -> None:
    rows = fresh_rows.head(300).astype(object).where(fresh_rows.head(300).notna(), None).to_dict("records")
    scored = approved_compiled.score_batch(JsonBatch(rows))
    for k in (1, 3, 25):
        reasons = top_reasons(approved_compiled, scored, k)
        fragments = reasons.json_fragments()
        assert [orjson.dumps(f) for f in fragments] == [orjson.dumps(reasons.row(i)) for i in range(300)]
    odd = Reasons(
        np.array([[0, 1], [1, 0]]), np.array([[-0.0, 1e-300], [1.7976931348623157e308, -5e-324]]), ("x", "y")
    )
    assert [orjson.loads(orjson.dumps(f)) for f in odd.json_fragments()] == [odd.row(0), odd.row(1)]
    assert Reasons(np.zeros((0, 2), dtype=np.int64), np.zeros((0, 2)), ("x",)).json_fragments() == []
