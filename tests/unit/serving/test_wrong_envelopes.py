"""The pandas orients, as a user would try them on both doors: /predict's rows (JsonRows) and MLflow's
/invocations (MlflowJson). For a DataFrame of the reference rows, `to_json(orient=o)` for every orient,
sent bare and, on /invocations, as the value of each MLflow key. Each is answered right (the same phat
bits as /predict's array of rows) or refused with a 4xx whose detail names the fix; none is a 200 with
other answers. One-row frames too: a row the shape check could take for a batch of one."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pandas as pd
import pytest

from service.errors import InputError, MalformedJSON
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.json_rows import JsonRows
from service.serving.mlflow_codec import FORMATS, NEEDS_COLUMNS, MlflowJson
from service.serving.pipeline import Codec, ScoringPipeline
from tests.unit.serving.test_mlflow_codec import run
from tests.unit.serving.test_pipeline import build

ROWS: list[dict[str, Any]] = example_rows()["rows"]
ORIENTS = ("split", "records", "index", "columns", "values", "table")
PREDICT = JsonRows(max_rows=10_000, max_errors=100)
MLFLOW = MlflowJson(max_rows=10_000, max_errors=100)
RECORDS = "send DataFrame.to_json(orient='records')"
SPLIT_OR_RECORDS = 'send {"dataframe_split": DataFrame.to_dict(orient="split")}'

# (door, MLflow key or None for a bare body, orient) -> None: answered right; else a fragment of the fix.
PREDICT_FIXES: dict[str, str | None] = {
    "split": "this is pandas DataFrame.to_json(orient='split'); " + RECORDS,
    "records": None,
    "index": "not wrapped in '0'",  # one row; several: "orient='index'" (below)
    "columns": "this looks like pandas DataFrame.to_json(orient='columns')",
    "values": "pandas DataFrame.to_json(orient='values') drops the names: send orient='records'",
    "table": "this is pandas DataFrame.to_json(orient='table'); " + RECORDS,
}
BARE_FIXES: dict[str, str | None] = {
    "split": 'this is pandas to_json(orient="split"): send it wrapped, as {"dataframe_split": <it>}',
    "records": 'wrap it as {"dataframe_records": [...]}, or POST the array to /predict as it is',
    "index": 'this looks like pandas to_json(orient="index") (rows keyed by index); ' + SPLIT_OR_RECORDS,
    "columns": 'this looks like pandas to_json(orient="columns") (each column an object); '
    + SPLIT_OR_RECORDS,
    "values": 'this is an array of arrays (pandas to_json(orient="values")): ' + NEEDS_COLUMNS,
    "table": 'this is pandas to_json(orient="table"); ' + SPLIT_OR_RECORDS,
}
OBJECTS = (
    "this is pandas to_json(orient='columns') or 'index' (an object per column or row); " + SPLIT_OR_RECORDS
)
WRAPPED_FIXES: dict[str, str | None] = {
    "split": 'this is a pandas "split" object: send it as {"dataframe_split": <it>}',
    "records": None,
    "index": OBJECTS,
    "columns": OBJECTS,
    "values": NEEDS_COLUMNS,
    "table": 'this is pandas to_json(orient="table"); ' + SPLIT_OR_RECORDS,
}
SPLIT_FIXES = {
    **WRAPPED_FIXES,
    "split": None,
    "records": 'send rows as objects in {"dataframe_records": [...]}',
}


def expected_fix(door: str, key: str | None, orient: str, rows: int) -> str | None:
    if door == "predict":
        return "orient='index'" if orient == "index" and rows > 1 else PREDICT_FIXES[orient]
    if key is None:
        return BARE_FIXES[orient]
    return SPLIT_FIXES[orient] if key == "dataframe_split" else WRAPPED_FIXES[orient]


CASES = [("predict", None, o, n) for o in ORIENTS for n in (1, 5)] + [
    ("invocations", key, o, n) for key in (None, *FORMATS) for o in ORIENTS for n in (1, 5)
]


def body_of(key: str | None, orient: str, rows: int) -> bytes:
    text = pd.DataFrame(ROWS[:rows]).to_json(orient=orient)
    return (text if key is None else f'{{"{key}": {text}}}').encode()


@pytest.fixture(scope="module")
def pipeline(approved_registry: Registry) -> ScoringPipeline:
    return build(approved_registry)[0]


@pytest.fixture(scope="module")
def right(pipeline: ScoringPipeline) -> list[float]:
    """phat of each reference row as /predict answers it (an array of row objects)."""
    return [r["phat"] for r in orjson.loads(run(pipeline, orjson.dumps(ROWS), PREDICT).body)]


def phat_of(door: str, body: bytes) -> list[float]:
    answer = json.loads(body)
    records = answer["predictions"] if door == "invocations" else answer
    return [r["phat"] for r in records]


@pytest.mark.parametrize(
    ("door", "key", "orient", "rows"), CASES, ids=[f"{d}-{k}-{o}-{n}" for d, k, o, n in CASES]
)
def test_an_orient_is_answered_right_or_refused_with_its_fix(
    pipeline: ScoringPipeline, right: list[float], door: str, key: str | None, orient: str, rows: int
) -> None:
    codec: Codec = MLFLOW if door == "invocations" else PREDICT
    fix = expected_fix(door, key, orient, rows)
    body = body_of(key, orient, rows)
    if fix is None:
        answer = run(pipeline, body, codec)
        assert phat_of(door, answer.body) == right[:rows]  # the very bits
        assert "X-Imputed-Columns" not in answer.headers and "X-Unknown-Keys" not in answer.headers
        return
    with pytest.raises(InputError) as caught:
        run(pipeline, body, codec)
    assert 400 <= caught.value.status < 500 and not isinstance(caught.value, MalformedJSON)
    assert fix in caught.value.detail, caught.value.detail


def test_records_as_lines_are_named_on_both_doors(pipeline: ScoringPipeline) -> None:
    lines = pd.DataFrame(ROWS).to_json(orient="records", lines=True).encode()
    for codec in (PREDICT, MLFLOW):
        with pytest.raises(MalformedJSON) as caught:
            run(pipeline, lines, codec)
        assert caught.value.status == 400
    with pytest.raises(MalformedJSON, match="NDJSON"):
        run(pipeline, lines, PREDICT)


@pytest.mark.parametrize("orient", ["split", "records", "list", "tight", "index", "dict"])
def test_to_dict_orients_inside_an_mlflow_key(
    pipeline: ScoringPipeline, right: list[float], orient: str
) -> None:
    """What MLflow's docs tell a user to json.dumps: DataFrame.to_dict(orient=...) as a key's value."""
    frame = pd.DataFrame(ROWS)
    value = frame.to_dict(orient=orient)
    answers: dict[str, Any] = {}
    for key in FORMATS:
        try:
            answers[key] = phat_of("invocations", run(pipeline, json.dumps({key: value}), MLFLOW).body)
        except InputError as exc:
            assert exc.status == 422 and ("send" in exc.detail or "use orient" in exc.detail), exc.detail
            answers[key] = None
    right_keys = {k for k, phat in answers.items() if phat is not None}
    assert all(answers[k] == right for k in right_keys)  # any 200 is right, bit for bit
    expected = {
        "split": {"dataframe_split"},
        "records": {"dataframe_records", "instances", "inputs"},
        "list": {"instances", "inputs"},  # columns of values: the columnar form of instances / inputs
        "tight": set(),
        "index": set(),
        "dict": set(),
    }
    assert right_keys == expected[orient]


@pytest.mark.parametrize("orient", ["split", "table"])
def test_orients_without_the_index_name_the_same_fix(
    pipeline: ScoringPipeline, right: list[float], orient: str
) -> None:
    body = pd.DataFrame(ROWS).to_json(orient=orient, index=False).encode()
    for door, codec in (("predict", PREDICT), ("invocations", MLFLOW)):
        with pytest.raises(InputError) as caught:
            run(pipeline, body, codec)
        fix = expected_fix(door, None, orient, len(ROWS))
        assert fix is not None and fix in caught.value.detail, caught.value.detail
    wrapped = f'{{"dataframe_split": {body.decode()}}}'
    if orient == "split":
        assert phat_of("invocations", run(pipeline, wrapped, MLFLOW).body) == right


def test_a_series_is_one_row_on_predict_and_named_on_invocations(
    pipeline: ScoringPipeline, right: list[float]
) -> None:
    body = pd.DataFrame(ROWS).iloc[2].to_json().encode()
    assert json.loads(run(pipeline, body, PREDICT).body)["phat"] == right[2]
    with pytest.raises(
        InputError, match=r'this is one row: send it as \{"dataframe_records": \[<the row>\]\}'
    ):
        run(pipeline, body, MLFLOW)
    wrapped = f'{{"dataframe_records": [{body.decode()}]}}'
    assert phat_of("invocations", run(pipeline, wrapped, MLFLOW).body) == right[2:3]
