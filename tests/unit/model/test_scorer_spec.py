"""scorer.json: written and read back to the same bits, and refused when it is not a scorer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.errors import ArtifactIntegrityError
from service.model.notebook_import import approved_model
from service.model.schema import notebook_reference
from service.model.scorer_spec import ScorerSpec, spec_of


@pytest.fixture(scope="module")
def spec() -> ScorerSpec:
    return spec_of(approved_model())


def doc_of(spec: ScorerSpec) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(spec.to_json())
    return loaded


def test_it_reads_back_to_the_same_floats(spec: ScorerSpec) -> None:
    back = ScorerSpec.from_json(spec.to_json())
    assert back == spec
    assert [c.hex() for c in back.coefficients] == [c.hex() for c in spec.coefficients]


def test_it_holds_the_approved_figures(spec: ScorerSpec) -> None:
    ref = notebook_reference()
    coefficients = dict(zip(spec.features, spec.coefficients, strict=True))
    assert coefficients == ref["final_coefficients"]
    assert spec.cutoff == 0.712 and spec.intercept == 0.0
    assert len(spec.known_columns) == 100
    weekday = next(c for c in spec.categories if c.column == "x5")
    assert weekday.dummies == {
        f: weekday.levels.index(f.removeprefix("x5_")) for f in spec.features if f.startswith("x5_")
    }
    money = next(n for n in spec.numeric if n.name == "x12")
    assert money.fmt == "money"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.update(format="something-else"), "format"),
        (lambda d: d.update(format_version=2), "version 2"),
        (lambda d: d["coefficients"].pop(), "coefficients for"),
        (lambda d: d.update(cutoff=True), "not a finite number"),
        (lambda d: d.update(intercept="0"), "not a finite number"),
        (lambda d: d["numeric"][0].update(mean=None), "not a finite number"),
        (lambda d: d["categories"][0]["dummies"].update({"x5_monday": 99}), "level index beyond"),
        (lambda d: d["categories"][0]["dummies"].update({"x5_monday": -1}), "not a level index"),
        (lambda d: d["features"].append("x1*x2"), "both factors"),
        (lambda d: d["features"].__setitem__(0, "x1000"), "x1000"),
        (lambda d: d.pop("known_columns"), "known_columns"),
    ],
)
def test_a_damaged_file_is_refused_with_what_is_wrong(spec: ScorerSpec, change: Any, says: str) -> None:
    doc = doc_of(spec)
    change(doc)
    with pytest.raises(ArtifactIntegrityError, match=says):
        ScorerSpec.from_json(json.dumps(doc).encode())


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_number_that_is_not_finite_is_refused(spec: ScorerSpec, constant: str) -> None:
    text = spec.to_json().decode().replace('"intercept": 0.0', f'"intercept": {constant}')
    with pytest.raises(ArtifactIntegrityError, match=constant):
        ScorerSpec.from_json(text.encode())


def test_bytes_that_are_not_json_are_refused() -> None:
    with pytest.raises(ArtifactIntegrityError, match="not a scorer file"):
        ScorerSpec.from_json(b"\x80\x04\x95 a pickle")
