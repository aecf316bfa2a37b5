"""The compiled fast path against the sklearn Pipeline it was compiled from."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from service.model.artifact import FittedModel
from service.model.notebook_import import approved_model
from service.model.schema import example_rows
from service.model.synthetic import make_synthetic_frame
from service.serving.scorer import CompiledModel

TOLERANCE = 1e-12


@pytest.fixture(scope="module")
def model() -> FittedModel:
    return approved_model()


@pytest.fixture(scope="module")
def compiled(model: FittedModel) -> CompiledModel:
    return CompiledModel(model, version="v-test", sha256="0" * 64)


def reference(model: FittedModel, rows: list[dict[str, Any]]) -> tuple[np.ndarray, pd.DataFrame]:
    frame = pd.DataFrame(rows, columns=[f"x{i}" for i in range(100)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unseen-category warnings are expected in adversarial rows
        features = model.features(frame)
        phat = 1.0 / (1.0 + np.exp(-(features.to_numpy(dtype=np.float64) @ model.coefficients)))
    return phat, features


def assert_parity(model: FittedModel, compiled: CompiledModel, rows: list[dict[str, Any]]) -> float:
    scored = compiled.score(rows)
    assert not scored.errors, scored.errors[:3]
    want_phat, want_features = reference(model, rows)
    worst = float(np.max(np.abs(np.asarray(scored.phat) - want_phat)))
    assert worst <= TOLERANCE
    for name in compiled.features:
        np.testing.assert_allclose(
            np.asarray(scored.columns[name], dtype=float),
            want_features[name].to_numpy(),
            rtol=0,
            atol=1e-12,
            err_msg=name,
        )
    assert scored.outcome == (want_phat > model.cutoff).astype(int).tolist()
    return worst


@pytest.mark.slow
def test_parity_on_100k_synthetic_rows(model: FittedModel, compiled: CompiledModel) -> None:
    frame = make_synthetic_frame(100_000, 2024, target=False)
    rows: list[dict[str, Any]] = orjson.loads(frame.to_json(orient="records"))
    assert len(rows) == 100_000
    assert assert_parity(model, compiled, rows) <= TOLERANCE


def test_parity_on_all_string_rows(model: FittedModel, compiled: CompiledModel) -> None:
    frame = make_synthetic_frame(5_000, 7, target=False)
    rows = [
        {k: ("nan" if v is None else str(v)) for k, v in r.items()}
        for r in orjson.loads(frame.to_json(orient="records"))
    ]
    assert_parity(model, compiled, rows)


def adversarial_rows() -> list[dict[str, Any]]:
    base: dict[str, Any] = example_rows()["rows"][0]
    missing = [None, "", "nan", "NaN", "null", "None", "NULL", " nan ", "ABSENT"]
    money = [
        "$6,882.34",
        "$6,882.34 ",
        "$-5,032.58",
        "($5,032.58)",
        "$-4446.82",
        "$0.00",
        "4446.82",
        -4446.82,
        "$9,999,999.99",
        " $1 ",
    ]
    percent = ["62.59%", "3.11%", "90.90%", "0%", "100%", 62.59, "-5%"]
    extreme = [1e300, -1e300, 1e-300, -0.0, 0, 123456789012345, "1e300", "-1E-300"]
    categories = {
        "x5": ["monday", "Monday", " SUNDAY ", "friday", "funday", "", None],
        "x31": ["asia", "Asia", "JAPAN", "america", "mars", "nan", None, "germany "],
        "x81": ["July", "july", "DECEMBER", "April", "Smarch", None, "null"],
        "x82": ["Male", "female", "other", None],
    }
    rows: list[dict[str, Any]] = []
    for column in ("x12", "x44", "x53", "x56", "x58", "x62", "x91", "x63"):
        for value in missing:
            row = dict(base)
            if value == "ABSENT":
                del row[column]
            else:
                row[column] = value
            rows.append(row)
    rows += [dict(base, x12=v) for v in money]
    rows += [dict(base, x63=v) for v in percent]
    rows += [dict(base, **{c: v}) for c, v in itertools.product(("x44", "x91", "x12", "x62"), extreme)]
    for column, values in categories.items():
        rows += [dict(base, **{column: v}) for v in values]
    rows.append({})  # every value absent
    rows.append({k: None for k in base})
    return rows


def test_parity_on_adversarial_rows(model: FittedModel, compiled: CompiledModel) -> None:
    rows = adversarial_rows()
    assert len(rows) > 100
    assert_parity(model, compiled, rows)


def test_extreme_values_give_probabilities_not_nan(compiled: CompiledModel) -> None:
    scored = compiled.score(
        [dict(example_rows()["rows"][0], x91=1e300), dict(example_rows()["rows"][0], x91=-1e300)]
    )
    assert scored.phat == [1.0, 0.0]


def test_self_check_uses_the_compiled_path(compiled: CompiledModel) -> None:
    golden = {
        "inputs": example_rows()["rows"],
        "expected": [
            {"phat": e["phat"], "business_outcome": e["business_outcome_at_0.712"]}
            for e in example_rows()["expected"]
        ],
    }
    assert compiled.self_check(golden) <= 1e-15
    golden["expected"][0]["phat"] += 1e-6
    with pytest.raises(Exception, match="misses golden rows"):
        compiled.self_check(golden)
