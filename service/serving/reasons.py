"""Reason codes: for each row, the model inputs that moved its logit most.

The GLM's logit is the sum over its inputs of coefficient x input (plus an intercept, which is 0.0 but
for a recalibrated champion), so these contributions are exact: all of them add up, in the model's
feature order and after the intercept, to the very logit behind phat.
A row's reasons are its top k by magnitude, signed (positive pushes towards buying), ties in the model's
feature order.

Kept as two arrays, not as Python objects per reason: 10,000 rows x 3 reasons as dicts would be 40,000
more objects for the cyclic garbage collector to walk while the answer is built (it doubled the cost of
a 10,000-row call in the benchmark). A JSON answer gets each row's reasons as one pre-encoded fragment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.serving.scorer import CompiledModel, Scored


@dataclass(frozen=True)
class Reasons:
    """Per row its top-k reason codes: `inputs` (rows x k, indexes into `names`) and `contributions`
    (rows x k, coefficient x input), largest magnitude first."""

    inputs: np.ndarray
    contributions: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.inputs)

    def row(self, i: int) -> list[dict[str, Any]]:
        """Row i's reasons as answered: [{"contribution": c, "input": name}, ...]."""
        return [
            {"contribution": c, "input": self.names[j]}
            for j, c in zip(self.inputs[i].tolist(), self.contributions[i].tolist(), strict=True)
        ]

    def json_fragments(self) -> list[orjson.Fragment]:
        """Each row's reasons as the JSON orjson writes for `row(i)`, one fragment per row: the
        contributions are encoded by orjson in one call (the same float text as any other value) and cut
        into rows and values (a float's JSON text holds no comma or bracket)."""
        if not len(self):
            return []
        k = self.inputs.shape[1]
        names = [orjson.dumps(n) for n in self.names]
        template = b"[" + b",".join([b'{"contribution":%s,"input":%s}'] * k) + b"]"
        text = orjson.dumps(self.contributions, option=orjson.OPT_SERIALIZE_NUMPY)
        fragment = orjson.Fragment
        out: list[orjson.Fragment] = []
        for row_text, picked in zip(text[2:-2].split(b"],["), self.inputs.tolist(), strict=True):
            pairs: list[bytes] = []
            for value, j in zip(row_text.split(b","), picked, strict=True):
                pairs += (value, names[j])
            out.append(fragment(template % tuple(pairs)))
        return out


def contributions(model: CompiledModel, scored: Scored) -> np.ndarray:
    """Rows x model inputs (the model's feature order): coefficient x input, the terms of each logit."""
    inputs = np.array([scored.columns[f] for f in model.features], dtype=np.float64).T
    with np.errstate(over="ignore", invalid="ignore"):  # a row out of range is an error row anyway
        terms: np.ndarray = inputs * np.array(model.coefficients, dtype=np.float64)
    return terms


def top_reasons(model: CompiledModel, scored: Scored, k: int) -> Reasons:
    """Per row, its top-k contributions, largest |contribution| first (ties: the model's feature order)."""
    names = tuple(model.features)
    if not scored.phat:
        return Reasons(np.zeros((0, k), dtype=np.int64), np.zeros((0, k)), names)
    terms = contributions(model, scored)
    order = np.argsort(-np.abs(terms), axis=1, kind="stable")[:, :k]
    return Reasons(order, np.take_along_axis(terms, order, axis=1), names)
