"""Pass-through ids: fields a client sends with a row to get back, unchanged, with its result.

They are never read by the model (service/serving/scorer.py refuses a model whose input columns include
one). An id is a string, an integer or a finite number, at most `max_chars` long as text; null is echoed
as null and a row without the field gets no such key. Anything else (an object, an array, a boolean, text
too long for an id) is that row's input error, named by row and field: an id that came back changed or
cut would match an answer to the wrong customer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from service.errors import FieldError
from service.model.parsing import truncate
from service.serving.batch import ABSENT, Batch
from service.serving.decoding import CONTAINERS, shallow

NOT_AN_ID = "a pass-through id is a string, an integer or a finite number"


def collect_ids(
    batch: Batch, fields: Sequence[str], max_chars: int
) -> tuple[dict[str, list[Any]], list[FieldError]]:
    """(field -> value per row, for the fields some row sent; the rows' id errors)."""
    ids: dict[str, list[Any]] = {}
    errors: list[FieldError] = []
    for name in fields:
        values = batch.passthrough(name)
        if values.count(ABSENT) == len(values):  # no row sent it (count() tests identity first)
            continue
        ids[name] = values
        for i, value in enumerate(values):
            reason = _problem(value, max_chars)
            if reason is not None:
                echo = shallow(value) if type(value) in CONTAINERS else value
                errors.append(FieldError(i, name, reason, truncate(echo)))
    return ids, errors


def _problem(value: Any, max_chars: int) -> str | None:
    kind = type(value)
    if value is ABSENT or value is None:
        return None
    if kind is str:
        text = value
    elif kind is int:
        text = str(value)
    elif kind is float:
        if not math.isfinite(value):
            return NOT_AN_ID
        text = repr(value)
    else:
        return NOT_AN_ID
    if len(text) > max_chars:
        return f"a pass-through id is at most {max_chars} characters; this one has {len(text)}"
    return None
