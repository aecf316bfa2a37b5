"""The silent-0.5 family: bodies that look like rows to a careless reader, each with the fix it must name.

Each case builds its body from real rows (so a big variant is the same shape with more rows). Used by the
decoder-level tests (tests/unit/serving/test_row_keys.py) and through the app
(tests/unit/api/test_wrong_envelopes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pandas as pd

Rows = list[dict[str, Any]]
MODEL_COLUMNS = ("x5", "x12", "x31", "x44", "x53", "x56", "x58", "x62", "x81", "x91")


@dataclass(frozen=True)
class Wrong:
    name: str
    build: Callable[[Rows], bytes]
    status: int
    kind: str  # the problem type's last segment
    fix: str  # a fragment of the detail: the fix it names
    grows: bool = True  # more rows make a bigger body (a big variant exists)


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def _pandas(orient: str, lines: bool = False) -> Callable[[Rows], bytes]:
    def build(rows: Rows) -> bytes:
        return pd.DataFrame(rows).to_json(orient=orient, lines=lines).encode()  # type: ignore[no-any-return]

    return build


def _renamed(rename: Callable[[str], str], only: tuple[str, ...] = MODEL_COLUMNS) -> Callable[[Rows], bytes]:
    return lambda rows: _json([{rename(k) if k in only else k: v for k, v in r.items()} for r in rows])


def _v2(rows: Rows) -> bytes:
    inputs = [
        {"name": c, "datatype": "BYTES", "shape": [len(rows)], "data": [r[c] for r in rows]}
        for c in MODEL_COLUMNS
    ]
    return _json({"inputs": inputs})


def _split(rows: Rows) -> dict[str, Any]:
    columns = list(rows[0])
    return {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}


RESEMBLES = "resembles"
NOT_WRAPPED = "not wrapped in"
WRONG: list[Wrong] = [
    Wrong("one row wrapped in data", lambda rows: _json({"data": rows[0]}), 422, "invalid-rows",
          "rows are sent bare, not wrapped in 'data'", grows=False),
    Wrong("rows wrapped in data", lambda rows: _json({"data": rows}), 422, "invalid-rows",
          "rows are sent bare, not wrapped in 'data'"),
    Wrong("rows wrapped in rows", lambda rows: _json({"rows": rows}), 422, "invalid-rows",
          "not wrapped in 'rows'"),
    Wrong("instances", lambda rows: _json({"instances": rows}), 422, "invalid-rows",
          "MLflow scoring body ('instances'): /predict takes the rows bare"),
    Wrong("dataframe_records", lambda rows: _json({"dataframe_records": rows}), 422, "invalid-rows",
          "MLflow scoring body ('dataframe_records')"),
    Wrong("dataframe_split", lambda rows: _json({"dataframe_split": _split(rows)}), 422, "invalid-rows",
          "MLflow scoring body ('dataframe_split')"),
    Wrong("inputs as columns", lambda rows: _json({"inputs": {c: [r[c] for r in rows] for c in rows[0]}}),
          422, "invalid-rows", "MLflow scoring body ('inputs')"),
    Wrong("open inference protocol inputs", _v2, 422, "invalid-rows",
          "Open Inference Protocol (KServe V2) request: /predict takes the rows bare"),
    Wrong("empty object", lambda rows: b"{}", 422, "invalid-rows", "the row is empty", grows=False),
    Wrong("array of empty objects", lambda rows: _json([{} for _ in rows]), 422, "invalid-rows",
          "the row is empty", grows=False),
    Wrong("unknown keys only", lambda rows: _json([{"customer": 1, "note": "x"} for _ in rows]), 422,
          "invalid-rows", "a row is an object with the model's columns as keys: x5, x12", grows=False),
    Wrong("upper-case keys", _renamed(str.upper), 422, "invalid-rows",
          f"field X12: not a column of the model, but it {RESEMBLES} 'x12'"),
    Wrong("one upper-case key", _renamed(str.upper, ("x12",)), 422, "invalid-rows", f"{RESEMBLES} 'x12'"),
    Wrong("x_12 keys", _renamed(lambda k: k.replace("x", "x_")), 422, "invalid-rows", f"{RESEMBLES} 'x12'"),
    Wrong("one x_12 key", _renamed(lambda k: "x_12", ("x12",)), 422, "invalid-rows", f"{RESEMBLES} 'x12'"),
    Wrong("spaced keys", _renamed(lambda k: f" {k}"), 422, "invalid-rows", f"{RESEMBLES} 'x12'"),
    Wrong("title-case dashed key", _renamed(lambda k: "X-91", ("x91",)), 422, "invalid-rows",
          f"{RESEMBLES} 'x91'"),
    Wrong("pandas orient split", _pandas("split"), 422, "invalid-rows", "orient='split'"),
    Wrong("pandas orient index", _pandas("index"), 422, "invalid-rows", "orient='index'"),
    Wrong("pandas orient columns", _pandas("columns"), 422, "invalid-rows", "orient='columns'"),
    Wrong("pandas orient values", _pandas("values"), 422, "bad-body-shape", "orient='values'"),
    Wrong("pandas orient table", _pandas("table"), 422, "invalid-rows", "orient='table'"),
    Wrong("pandas records as lines", _pandas("records", lines=True), 400, "malformed-json", "NDJSON"),
]  # fmt: skip
