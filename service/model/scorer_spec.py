"""The serving artifact: everything the compiled scorer needs, as plain data (`scorer.json`), never a pickle.

A version's `model.joblib` holds the fitted sklearn Pipeline, for training, audit and the parity tests; a
serving worker reads only this file. It is the Pipeline flattened: per numeric model input its raw format,
imputation value, mean and scale; per category column its levels and which model input marks which level
(`null`: the `<column>_nan` indicator); the model inputs in coefficient order (a pairwise interaction is
named `a*b`); the coefficients, the intercept and the cutoff; the raw columns the Pipeline was fit on.

Floats are written by `repr` (json's), which reads back to the same bits; NaN and infinity are refused both
ways. Reading checks the shape and that every model input is accounted for, so a damaged or hand-made file
is refused with what is wrong, before any row is scored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from service.errors import ArtifactIntegrityError

if TYPE_CHECKING:  # the training stack: only a publisher has a FittedModel
    from service.model.artifact import FittedModel

SCORER_FILE = "scorer.json"
FORMAT = "propensity-scorer"
FORMAT_VERSION = 1
NAN_LEVEL = None  # in `dummies`: the model input that marks a missing value


@dataclass(frozen=True)
class NumericSpec:
    name: str  # model input == raw column
    fmt: str  # number, money or percent (service/model/parsing.py)
    fill: float  # imputation value, raw units
    mean: float
    scale: float


@dataclass(frozen=True)
class CategorySpec:
    column: str
    levels: tuple[str, ...]
    dummies: dict[str, int | None]  # model input -> index into levels; None: the missing indicator


@dataclass(frozen=True)
class ScorerSpec:
    features: tuple[str, ...]  # model inputs, in coefficient order
    coefficients: tuple[float, ...]
    intercept: float
    cutoff: float
    numeric: tuple[NumericSpec, ...]
    categories: tuple[CategorySpec, ...]
    known_columns: tuple[str, ...]  # the raw columns the Pipeline was fit on

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "features": list(self.features),
            "coefficients": list(self.coefficients),
            "intercept": self.intercept,
            "cutoff": self.cutoff,
            "numeric": [
                {"name": n.name, "format": n.fmt, "fill": n.fill, "mean": n.mean, "scale": n.scale}
                for n in self.numeric
            ],
            "categories": [
                {"column": c.column, "levels": list(c.levels), "dummies": c.dummies} for c in self.categories
            ],
            "known_columns": list(self.known_columns),
        }
        return (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str = SCORER_FILE) -> ScorerSpec:
        try:
            doc = json.loads(data, parse_constant=_no_constant)
            spec = cls._from_doc(doc)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ArtifactIntegrityError(
                f"{where}: not a scorer file this service can read ({exc})"
            ) from None
        spec.check(where)
        return spec

    @classmethod
    def _from_doc(cls, doc: dict[str, Any]) -> ScorerSpec:
        if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format {doc.get('format')!r} version {doc.get('format_version')!r}")
        return cls(
            features=tuple(_str(f) for f in doc["features"]),
            coefficients=tuple(_float(c) for c in doc["coefficients"]),
            intercept=_float(doc["intercept"]),
            cutoff=_float(doc["cutoff"]),
            numeric=tuple(
                NumericSpec(
                    _str(n["name"]), _str(n["format"]), *(_float(n[k]) for k in ("fill", "mean", "scale"))
                )
                for n in doc["numeric"]
            ),
            categories=tuple(
                CategorySpec(
                    _str(c["column"]),
                    tuple(_str(v) for v in c["levels"]),
                    {_str(k): None if v is None else _index(v) for k, v in c["dummies"].items()},
                )
                for c in doc["categories"]
            ),
            known_columns=tuple(_str(c) for c in doc["known_columns"]),
        )

    def check(self, where: str) -> None:
        """Every model input is a numeric input, a dummy of one category column, or a product of two."""
        problems = []
        if len(self.coefficients) != len(self.features):
            problems.append(f"{len(self.coefficients)} coefficients for {len(self.features)} model inputs")
        plain = [n.name for n in self.numeric] + [d for c in self.categories for d in c.dummies]
        if len(set(plain)) != len(plain):
            problems.append("a model input is defined twice")
        for c in self.categories:
            bad = [d for d, i in c.dummies.items() if i is not None and not i < len(c.levels)]
            if bad:
                problems.append(f"{', '.join(bad)}: level index beyond {c.column}'s {len(c.levels)} levels")
        for feature in self.features:
            a, star, b = feature.partition("*")
            if star and not (a in plain and b in plain):
                problems.append(f"{feature}: both factors must be model inputs")
            elif not star and feature not in plain:
                problems.append(f"{feature}: not a numeric input or a category's dummy")
        if set(plain) - set(self.features):
            problems.append(
                f"inputs without a coefficient: {', '.join(sorted(set(plain) - set(self.features)))}"
            )
        if problems:
            raise ArtifactIntegrityError(f"{where}: " + "; ".join(problems))


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a model can hold")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a string")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{value!r} is not a finite number")
    return float(value)


def _index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"{value!r} is not a level index")
    return value


def spec_of(model: FittedModel) -> ScorerSpec:
    """The fitted Pipeline flattened (its `parse` and `prepare` steps, the GLM's coefficients)."""
    parse = model.pipeline.named_steps["parse"]
    prepare = model.pipeline.named_steps["prepare"]
    formats = parse.formats or {}
    numeric_columns = [str(c) for c in prepare.transformers_[0][2]]
    numeric_steps = prepare.named_transformers_["numeric"].named_steps
    imputer, scaler = numeric_steps["impute"], numeric_steps["scale"]
    levels: dict[str, list[str]] = {
        str(c): [str(v) for v in known] for c, known in prepare.named_transformers_["dummies"].levels_.items()
    }
    features = tuple(model.feature_names)
    numeric = []
    dummies: dict[str, dict[str, int | None]] = {}
    for feature in features:
        if "*" in feature:
            continue
        if feature in numeric_columns:
            j = numeric_columns.index(feature)
            fill, mean, scale = imputer.statistics_[j], scaler.mean_[j], scaler.scale_[j]
            numeric.append(
                NumericSpec(feature, formats.get(feature, "number"), *map(float, (fill, mean, scale)))
            )
            continue
        column, level = _dummy_source(feature, levels)
        dummies.setdefault(column, {})[feature] = NAN_LEVEL if level is None else levels[column].index(level)
    used = [n.name for n in numeric] + list(dummies)
    return ScorerSpec(
        features=features,
        coefficients=tuple(float(c) for c in model.coefficients),
        intercept=float(model.intercept),
        cutoff=float(model.cutoff),
        numeric=tuple(numeric),
        categories=tuple(CategorySpec(c, tuple(levels[c]), d) for c, d in dummies.items()),
        known_columns=tuple(str(c) for c in getattr(parse, "feature_names_in_", used)),
    )


def _dummy_source(feature: str, levels: dict[str, list[str]]) -> tuple[str, str | None]:
    for column, known in levels.items():
        prefix = f"{column}_"
        if feature.startswith(prefix):
            level = feature[len(prefix) :]
            if level == "nan":
                return column, None
            if level in known:
                return column, level
    raise ArtifactIntegrityError(
        f"cannot compile model input {feature!r}: not a numeric column or a known dummy"
    )
