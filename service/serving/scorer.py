"""The compiled scorer: the fitted Pipeline flattened into a few arrays and lookups.

Only the raw columns the model uses are parsed, column-wise; categories are matched by dictionary lookup;
the linear predictor is a fixed-order sum over the model inputs (so a row's bits never depend on the other
rows of its batch). No pandas and no sklearn call per request. The sklearn Pipeline stays the reference:
tests/unit/serving/test_scorer_parity.py holds this module to it.

Range. Every parsed value is finite, but scaling or the sum can still overflow: {"x44": 1e308} scales to
inf, and two finite contributions can add up past the float range. A row whose logit is not finite is
reported like any bad value ("value out of the range the model can score", naming each field to blame)
and never scored as NaN; a finite logit, however large, keeps its exact bits (phat 0.0 or 1.0 is right).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from service.errors import ArtifactError, FieldError, SelfCheckFailed
from service.model.artifact_files import GOLDEN_TOLERANCE
from service.model.parsing import (
    MISSING_CODE,
    category_code,
    category_lookup,
    parse_category_column,
    parse_number,
    parse_numeric_column,
    truncate,
)
from service.model.schema import schema_columns
from service.model.scorer_spec import NumericSpec, ScorerSpec, spec_of
from service.model.serving_artifact import ServingArtifact
from service.serving.batch import Batch, JsonBatch
from service.serving.decoding import CONTAINERS, ColumnDecoder, shallow
from service.serving.row_keys import ColumnNames
from service.settings import DEFAULT_PASSTHROUGH_FIELDS

if TYPE_CHECKING:  # the training side's types: a serving worker compiles a ScorerSpec
    from service.model.artifact import FittedModel, LoadedArtifact

# Up to this many rows are scored row by row in plain Python: the array path costs ~200 numpy calls per
# batch whatever its size, the row path a little per row. Both give the same bits.
SMALL_BATCH = 8
FLOAT_MAX = sys.float_info.max
OUT_OF_RANGE = "value out of the range the model can score"

_Parsed = TypeVar("_Parsed")


def _parse_echoing_safely(parse: Callable[..., _Parsed], values: list[Any], *args: Any) -> _Parsed:
    """parse(values, *args). A value nested too deep for repr() (the error's echo) is parsed again as
    its `shallow` stand-in: the same error, echoed as the head of its repr."""
    try:
        return parse(values, *args)
    except RecursionError:
        return parse([shallow(v) if type(v) in CONTAINERS else v for v in values], *args)


@dataclass(frozen=True)
class CategoryInput:
    column: str
    levels: tuple[str, ...]
    lookup: dict[str, int]
    # model input name -> level index it indicates (MISSING_CODE for the `<col>_nan` indicator)
    dummies: dict[str, int]


@dataclass
class Scored:
    """The result of one batch: per model input a column, plus phat and outcome; problems per row."""

    columns: dict[str, list[Any]]
    phat: list[float]
    outcome: list[int]
    errors: list[FieldError] = field(default_factory=list)
    bad_rows: set[int] = field(default_factory=set)
    unseen: dict[str, int] = field(default_factory=dict)
    unseen_values: dict[str, list[str]] = field(default_factory=dict)  # column -> values (cut), row order
    unseen_rows: int = 0
    # Pass-through id field -> its raw value per row (ABSENT where a row lacks it); only fields a row sent.
    ids: dict[str, list[Any]] = field(default_factory=dict)
    # When asked: each row's top-k reason codes (service/serving/reasons.py: a `Reasons`).
    reasons: Any = None
    # What the rows' keys said that the answer's headers report (X-Unknown-Keys, X-Imputed-Columns); an
    # answer with any is not cached (a hit would come without them).
    notes: dict[str, str] = field(default_factory=dict)
    # Per raw column the parsed values (NaN: missing) and category codes: arrays, or lists from the
    # few-rows path (np.asarray takes both).
    numeric_values: dict[str, np.ndarray] = field(default_factory=dict)
    category_codes: dict[str, np.ndarray] = field(default_factory=dict)


class CompiledModel:
    """Array code for one model version, built from its serving artifact (a ScorerSpec), or from a fitted
    Pipeline by way of the same spec (the parity tests, the training side)."""

    def __init__(
        self,
        model: ScorerSpec | FittedModel,
        *,
        version: str,
        sha256: str,
        name: str = "propensity",
        known_columns: Iterable[str] | None = None,
        passthrough: Sequence[str] = DEFAULT_PASSTHROUGH_FIELDS,
    ) -> None:
        spec = model if isinstance(model, ScorerSpec) else spec_of(model)
        self.version = version
        self.sha256 = sha256
        self.name = name
        self.cutoff = spec.cutoff
        self.features = list(spec.features)
        self.coefficients = list(spec.coefficients)
        self.intercept = spec.intercept  # 0.0 but for a recalibrated champion
        self.numeric: list[NumericSpec] = list(spec.numeric)
        # (model input "a*b", a, b): pairwise interactions
        self.products: list[tuple[str, str, str]] = [
            (f, *f.partition("*")[::2]) for f in self.features if "*" in f
        ]
        self.categories = [
            CategoryInput(
                column=c.column,
                levels=c.levels,
                lookup=category_lookup(list(c.levels)),
                dummies={d: MISSING_CODE if i is None else i for d, i in c.dummies.items()},
            )
            for c in spec.categories
        ]
        plain = set(self.features) - {name for name, _, _ in self.products}
        for name, a, b in self.products:
            if a not in plain or b not in plain:
                raise ArtifactError(f"cannot compile model input {name!r}: both factors must be model inputs")
        self.output_keys = sorted([*self.features, "business_outcome", "phat"])
        self.used_columns = [n.name for n in self.numeric] + [c.column for c in self.categories]
        # The raw columns of the model's input schema: a row's other keys are counted as unknown.
        if known_columns is None:  # not given: the columns the fitted Pipeline was fit on
            known_columns = spec.known_columns
        self.known_columns = frozenset(str(c) for c in known_columns)
        clash = sorted(set(passthrough) & (self.known_columns | set(self.used_columns)))
        if clash:
            raise ArtifactError(f"pass-through field(s) {', '.join(clash)} are columns of the model's input")
        # Pass-through ids are echoed, never scored: known keys (not "unknown"), and decoded with the
        # model's columns by the column decoder.
        self.passthrough = tuple(passthrough)
        self.names = ColumnNames(tuple(self.used_columns), self.known_columns | set(self.passthrough))
        self._sources = self._raw_sources()
        self.column_decoder = ColumnDecoder(self.used_columns, extra=self.passthrough)
        self.reference: dict[str, Any] = {}  # the artifact's reference_distributions (drift monitoring)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (to ship it to the file scorer's processes and a cluster's workers, once each) without
        its column decoder, whose msgspec decoders do not pickle; it is rebuilt on arrival."""
        state = self.__dict__.copy()
        del state["column_decoder"]
        return state

    # How many models this process has received pickled: a cluster's worker receives each run's once.
    received = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        CompiledModel.received += 1
        self.__dict__.update(state)
        self.column_decoder = ColumnDecoder(self.used_columns, extra=self.passthrough)

    def _raw_sources(self) -> dict[str, tuple[str, ...]]:
        """Model input -> the raw columns its value comes from (a product: both factors' columns)."""
        sources: dict[str, tuple[str, ...]] = {spec.name: (spec.name,) for spec in self.numeric}
        for cat in self.categories:
            sources.update(dict.fromkeys(cat.dummies, (cat.column,)))
        for name, a, b in self.products:
            sources[name] = tuple(dict.fromkeys(sources[a] + sources[b]))
        return sources

    @classmethod
    def from_artifact(
        cls,
        artifact: ServingArtifact | LoadedArtifact,
        passthrough: Sequence[str] = DEFAULT_PASSTHROUGH_FIELDS,
    ) -> CompiledModel:
        """From a serving artifact (scorer.json, what a worker loads) or the training side's unpickled one."""
        schema = artifact.metadata.get("input_schema")
        compiled = cls(
            artifact.spec if isinstance(artifact, ServingArtifact) else artifact.model,
            version=artifact.version,
            sha256=artifact.sha256,
            name=str(artifact.metadata.get("name", "propensity")),
            known_columns=schema_columns(schema) if schema else None,
            passthrough=passthrough,
        )
        compiled.reference = artifact.metadata.get("reference_distributions") or {}
        return compiled

    def score(self, rows: list[dict[str, Any]], *, reject_unseen: bool = False) -> Scored:
        """Score JSON objects (dicts) given as a list."""
        return self.score_batch(JsonBatch(rows), reject_unseen=reject_unseen)

    def score_batch(self, batch: Batch, *, reject_unseen: bool = False) -> Scored:
        if len(batch.rows) <= SMALL_BATCH:
            small = self._score_small(batch.rows)
            if small is not None:
                return small
        return self._score_arrays(batch, reject_unseen=reject_unseen)

    def _score_small(self, rows: list[Any]) -> Scored | None:
        """Row by row, with the same IEEE operations in the same order as the array path (same bits).

        Clean rows only: on a value that is malformed, unseen or not finite, or a logit that is not finite,
        it returns None, and the array path scores the batch and reports every problem.
        """
        columns: dict[str, list[Any]] = {f: [] for f in self.features}
        raw: dict[str, list[float]] = {spec.name: [] for spec in self.numeric}
        codes: dict[str, list[int]] = {cat.column: [] for cat in self.categories}
        etas: list[float] = []
        for row in rows:
            contributions: dict[str, float] = {}
            for spec in self.numeric:
                try:
                    value = parse_number(row.get(spec.name), spec.fmt)
                except (ValueError, OverflowError):
                    return None
                raw[spec.name].append(value)
                z = ((spec.fill if value != value else value) - spec.mean) / spec.scale
                contributions[spec.name] = z
                columns[spec.name].append(z)
            for cat in self.categories:
                code = category_code(row.get(cat.column), cat.lookup)
                if code is None:
                    return None
                codes[cat.column].append(code)
                for feature, level in cat.dummies.items():
                    hit = code < 0 if level == MISSING_CODE else code == level
                    contributions[feature] = 1.0 if hit else 0.0
                    columns[feature].append(1 if hit else 0)
            for name, a, b in self.products:
                contributions[name] = contributions[a] * contributions[b]
                columns[name].append(contributions[name])
            eta = self.intercept
            for feature, coef in zip(self.features, self.coefficients, strict=True):
                eta += coef * contributions[feature]
            if not -FLOAT_MAX <= eta <= FLOAT_MAX:  # inf or NaN: the array path names the fields
                return None
            etas.append(eta)
        with np.errstate(over="ignore"):  # numpy's exp, exactly as the array path
            phat = (1.0 / (1.0 + np.exp(-np.array(etas, dtype=np.float64)))).tolist()
        cutoff = self.cutoff
        # The raw values and codes stay lists here (arrays of a few rows cost more to build than they
        # save); their readers take either.
        return Scored(
            columns=columns,
            phat=phat,
            outcome=[1 if p > cutoff else 0 for p in phat],
            numeric_values=raw,  # type: ignore[arg-type]
            category_codes=codes,  # type: ignore[arg-type]
        )

    def _score_arrays(self, batch: Batch, *, reject_unseen: bool = False) -> Scored:
        n = len(batch.rows)
        out = Scored(columns={}, phat=[], outcome=[])
        columns: dict[str, np.ndarray] = {}  # per model input, as the answer shows it
        contributions: dict[str, np.ndarray] = {}  # per model input, as the logit sums it
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is found on the logit, below
            self._numeric_inputs(batch, out, columns, contributions)
        unseen_mask = self._category_inputs(batch, out, columns, contributions, reject_unseen)
        eta = np.full(n, self.intercept, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            for name, a, b in self.products:
                columns[name] = contributions[name] = contributions[a] * contributions[b]
            for feature, coef in zip(self.features, self.coefficients, strict=True):
                eta += coef * contributions[feature]
        finite = np.isfinite(eta)
        if not finite.all():
            self._range_errors(batch, np.flatnonzero(~finite).tolist(), contributions, out)
        with np.errstate(over="ignore"):  # exp overflow -> inf -> phat 0.0, the correct limit
            phat = 1.0 / (1.0 + np.exp(-eta))
        out.errors.sort(key=lambda e: (e.row if e.row is not None else -1, e.field or ""))
        out.columns = {k: v.tolist() for k, v in columns.items()}
        out.phat = phat.tolist()
        out.outcome = (phat > self.cutoff).astype(np.int64).tolist()
        out.unseen_rows = int(unseen_mask.sum())
        return out

    def _numeric_inputs(
        self, batch: Batch, out: Scored, columns: dict[str, np.ndarray], contributions: dict[str, np.ndarray]
    ) -> None:
        for spec in self.numeric:
            parsed = batch.parsed_numbers(spec.name, spec.fmt)
            if parsed is None:
                parsed = _parse_echoing_safely(parse_numeric_column, batch.column(spec.name), spec.fmt)
            values, problems = parsed
            for i, reason, value in problems.items:
                out.errors.append(FieldError(i, spec.name, reason, value))
                out.bad_rows.add(i)
            out.numeric_values[spec.name] = values
            filled = np.where(np.isnan(values), spec.fill, values)
            columns[spec.name] = contributions[spec.name] = (filled - spec.mean) / spec.scale

    def _category_inputs(
        self,
        batch: Batch,
        out: Scored,
        columns: dict[str, np.ndarray],
        contributions: dict[str, np.ndarray],
        reject_unseen: bool,
    ) -> np.ndarray:
        """Dummy inputs of every categorical column; returns which rows hold an unseen level."""
        unseen_mask = np.zeros(len(batch.rows), dtype=bool)
        for cat in self.categories:
            parsed = batch.parsed_categories(cat.column, cat.lookup)
            if parsed is None:
                parsed = _parse_echoing_safely(parse_category_column, batch.column(cat.column), cat.lookup)
            codes, problems, unseen_values = parsed
            out.category_codes[cat.column] = codes
            for i, reason, value in problems.items:
                out.errors.append(FieldError(i, cat.column, reason, value))
                out.bad_rows.add(i)
            if unseen_values:
                out.unseen[cat.column] = len(unseen_values)
                out.unseen_values[cat.column] = [v for _, v in unseen_values]
                unseen_mask[[i for i, _ in unseen_values]] = True
                if reject_unseen:
                    allowed = ", ".join(cat.levels)
                    for i, value in unseen_values:
                        out.errors.append(
                            FieldError(i, cat.column, f"unknown category; allowed: {allowed}", value)
                        )
                        out.bad_rows.add(i)
            for feature, level in cat.dummies.items():
                indicator = (codes < 0) if level == MISSING_CODE else (codes == level)
                contributions[feature] = indicator.astype(np.float64)
                columns[feature] = indicator.astype(np.int64)
        return unseen_mask

    def _range_errors(
        self, batch: Batch, rows: list[int], contributions: dict[str, np.ndarray], out: Scored
    ) -> None:
        """An error for each field to blame in each row whose logit is not finite: a contribution
        (coefficient x model input) that is not finite, or one big enough to take part in the overflow
        (the sum of the inputs' contributions can only pass the float range if one passes its share)."""
        share = FLOAT_MAX / len(self.features)
        for i in rows:
            row = batch.rows[i]
            blamed: dict[str, None] = {}
            for feature, coef in zip(self.features, self.coefficients, strict=True):
                if not abs(coef * float(contributions[feature][i])) <= share:  # NaN is not <= either
                    blamed.update(dict.fromkeys(self._sources[feature]))
            for column in blamed:
                out.errors.append(FieldError(i, column, OUT_OF_RANGE, truncate(row.get(column))))
            out.bad_rows.add(i)

    def missing_rows(self, scored: Scored, column: str) -> list[int]:
        """The rows whose value of a raw column the scorer read as missing (or could not read)."""
        values = scored.numeric_values.get(column)
        if values is not None:
            return np.flatnonzero(np.isnan(values)).tolist()
        return np.flatnonzero(np.asarray(scored.category_codes[column]) == MISSING_CODE).tolist()

    def records(self, scored: Scored) -> list[dict[str, Any]]:
        """Rows as dicts with keys in alphabetical order (the API contract)."""
        data = {**scored.columns, "phat": scored.phat, "business_outcome": scored.outcome}
        keys = self.output_keys
        return [dict(zip(keys, values, strict=True)) for values in zip(*(data[k] for k in keys), strict=True)]

    def self_check(self, golden: dict[str, Any]) -> float:
        """Run the artifact's golden rows through the compiled path; raise SelfCheckFailed on any miss."""
        inputs = golden.get("inputs") or []
        expected = golden.get("expected") or []
        if not inputs or len(inputs) != len(expected):
            raise SelfCheckFailed(f"{self.version}: golden rows are missing or inconsistent")
        scored = self.score(inputs)
        if scored.errors:
            raise SelfCheckFailed(f"{self.version}: golden rows do not parse: {scored.errors[0]}")
        worst = max(abs(p - e["phat"]) for p, e in zip(scored.phat, expected, strict=True))
        outcomes = [int(e["business_outcome"]) for e in expected]
        if not worst <= GOLDEN_TOLERANCE or scored.outcome != outcomes:
            raise SelfCheckFailed(f"{self.version}: compiled path misses golden rows by up to {worst:.3g}")
        return float(worst)
