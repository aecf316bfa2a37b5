"""Finite inputs whose logit is not finite are input errors (422 naming row and field), never `phat: null`.

{"x44": 1e308, "x91": 1e308} scales to +inf in both (z = (v - mean) / scale overflows) and their
contributions to the logit cancel to NaN; two finite contributions can also add up past the float range.
Either way the row cannot be scored: it is reported like any bad value, on the few-rows path and the array
path alike. A finite logit, however large, keeps its exact bits (phat 0.0 or 1.0 is its correct value).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.model.notebook_import import approved_model
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.metrics import Metrics
from service.serving.scorer import SMALL_BATCH, CompiledModel
from tests.conftest import app_client

ROW: dict[str, Any] = example_rows()["rows"][0]
JSON = {"content-type": "application/json"}
FLOAT_MAX = sys.float_info.max
OUT_OF_RANGE = "out of the range the model can score"


@pytest.fixture(scope="module")
def compiled() -> CompiledModel:
    return CompiledModel(approved_model(), version="v-test", sha256="0" * 64)


def value_for(model: CompiledModel, column: str, contribution: float) -> float:
    """The raw value of a numeric column whose contribution (coefficient x scaled value) is about this."""
    spec = next(s for s in model.numeric if s.name == column)
    coef = model.coefficients[model.features.index(column)]
    return spec.mean + contribution / coef * spec.scale


def overflowing_rows(model: CompiledModel) -> dict[str, tuple[dict[str, Any], set[str]]]:
    """Rows whose logit is not finite, and the fields each must be blamed on."""
    return {
        "scaled to inf, inf - inf": (dict(ROW, x44=1e308, x91=1e308), {"x44", "x91"}),
        "one value scaled to inf": (dict(ROW, x91=1e308), {"x91"}),
        "negative, scaled to -inf": (dict(ROW, x53=-1e308), {"x53"}),
        "finite contributions, sum overflows": (
            # each scaled value and contribution finite; the two add up past the float range
            dict(
                ROW,
                x44=value_for(model, "x44", 0.45 * FLOAT_MAX),
                x91=value_for(model, "x91", 0.7 * FLOAT_MAX),
            ),
            {"x44", "x91"},
        ),
        "as strings": (dict(ROW, x44="1e308", x91="-1e308"), {"x44", "x91"}),
        # x12's scale is large: $1e308 scales to a finite value with a small contribution, not to blame
        "a huge value that does not overflow": (dict(ROW, x12="$1e308", x91="1e308"), {"x91"}),
    }


CASES = list(overflowing_rows(CompiledModel(approved_model(), version="v", sha256="0" * 64)))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n", [1, SMALL_BATCH, SMALL_BATCH + 1, 300])
def test_a_logit_out_of_range_is_a_field_error(compiled: CompiledModel, case: str, n: int) -> None:
    bad, fields = overflowing_rows(compiled)[case]
    where = n // 2
    rows = [ROW] * n
    rows[where] = bad
    scored = compiled.score(rows)
    assert scored.bad_rows == {where}
    assert {e.field for e in scored.errors} == fields
    for e in scored.errors:
        assert e.row == where and OUT_OF_RANGE in e.reason
        sent = bad[e.field or ""]
        assert e.value == (sent if isinstance(sent, str) else repr(sent))
    clean = compiled.score([ROW]).phat[0]
    assert [p for i, p in enumerate(scored.phat) if i != where] == [clean] * (n - 1)


def test_the_small_path_defers_a_logit_out_of_range(compiled: CompiledModel) -> None:
    assert compiled._score_small([dict(ROW, x44=1e308, x91=1e308)]) is None
    assert compiled._score_small([dict(ROW, x44=1e300)]) is not None  # finite: scored here


@pytest.mark.parametrize("value", [1e300, -1e300, 1e307, -1e307, 5e307])
def test_a_large_finite_logit_is_scored_not_clipped(compiled: CompiledModel, value: float) -> None:
    """One huge value: the logit is huge but finite, phat is 0.0 or 1.0 (its correct limit), no error."""
    row = dict(ROW, x91=value)
    small, arrays = compiled.score([row]), compiled.score([row] * (SMALL_BATCH + 1))
    assert not small.errors and not arrays.errors
    assert small.phat == [1.0 if value > 0 else 0.0]
    assert arrays.phat == small.phat * (SMALL_BATCH + 1)
    spec = next(s for s in compiled.numeric if s.name == "x91")
    assert small.columns["x91"] == [(value - spec.mean) / spec.scale]  # the scaled value, unclipped


def test_a_contribution_out_of_range_is_blamed_on_its_field() -> None:
    """With a coefficient above 1, a finite scaled value can have a contribution that is not finite."""
    model = CompiledModel(approved_model(), version="v", sha256="0" * 64)
    j = model.features.index("x91")
    model.coefficients[j] *= 4.0
    spec = next(s for s in model.numeric if s.name == "x91")
    value = spec.mean + 0.5 * FLOAT_MAX * spec.scale  # z = FLOAT_MAX / 2: finite; coef * z is not
    assert math.isfinite((value - spec.mean) / spec.scale)
    for n in (1, SMALL_BATCH + 1):
        scored = model.score([dict(ROW, x91=value)] * n)
        assert scored.bad_rows == set(range(n))
        assert {(e.row, e.field) for e in scored.errors} == {(i, "x91") for i in range(n)}


# --- through the app: the same policy as any bad value ------------------------------------------------------
def post(client: TestClient, body: Any) -> Any:
    return client.post("/predict", content=orjson.dumps(body), headers=JSON)


@pytest.fixture(scope="module")
def strict(approved_registry: Registry) -> Any:
    with app_client(approved_registry) as client:
        yield client


@pytest.mark.parametrize("rows", [1, 3, 60])  # 60 rows: a body big enough for the column decoder
def test_the_app_answers_422_naming_row_and_field(strict: TestClient, rows: int) -> None:
    bad = dict(ROW, x44=1e308, x91=1e308)
    body: Any = bad if rows == 1 else [ROW] * (rows - 1) + [bad]
    r = post(strict, body)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith("/invalid-rows")
    where = rows - 1
    assert [(e["row"], e["field"], e["value"]) for e in problem["errors"]] == [
        (where, "x44", "1e+308"),
        (where, "x91", "1e+308"),
    ]
    assert all(OUT_OF_RANGE in e["reason"] for e in problem["errors"])
    assert f"row {where}, field x44" in problem["detail"]


def phat_samples(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line.startswith(("propensity_phat_sum", "propensity_phat_count")):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_score_valid_scores_the_other_rows_and_metrics_stay_finite(approved_registry: Registry) -> None:
    with app_client(approved_registry, batch_error_policy="score-valid") as client:
        r = post(client, [ROW, dict(ROW, x44=1e308, x91=1e308), ROW])
        assert r.status_code == 200 and r.headers["x-rejected-rows"] == "1"
        first, bad, last = r.json()
        assert first == last and first["phat"] == pytest.approx(0.08938371087386138, abs=1e-12)
        assert bad["row"] == 1 and [e["field"] for e in bad["errors"]] == ["x44", "x91"]
        big = post(client, [ROW] * 59 + [dict(ROW, x44=1e308, x91=1e308)])  # the column decoder's path
        assert big.status_code == 200 and big.json()[59]["row"] == 59
        samples = phat_samples(client)
        assert samples["propensity_phat_count"] == 2 + 59
        assert math.isfinite(samples["propensity_phat_sum"])
        assert samples["propensity_phat_sum"] == pytest.approx(61 * 0.08938371087386138, rel=1e-9)


# --- metrics skip what is not finite (defence in depth) -----------------------------------------------------
@pytest.mark.parametrize("n", [1, 8, 9, 1_000])
def test_phat_metrics_skip_values_that_are_not_finite(n: int) -> None:
    metrics = Metrics(CollectorRegistry())
    values = [0.25] * n
    values[n // 2] = math.nan
    metrics.observe_phat(values)
    metrics.observe_phat([math.inf, -math.inf, math.nan])
    metrics.buffer.flush()
    registry = metrics.registry
    assert registry.get_sample_value("propensity_phat_count") == n - 1
    assert registry.get_sample_value("propensity_phat_sum") == 0.25 * (n - 1)
    assert registry.get_sample_value("propensity_phat_bucket", {"le": "+Inf"}) == n - 1
