"""What drift is measured against (a model version's reference), bucket counts, and the drift assessment.

A `DriftReference` is built once per model version from the artifact's `reference_distributions` and the
compiled model's inputs: per numeric input the reference decile bins, per categorical input column its
levels in the scorer's code order (plus missing and unseen), and the phat deciles. `Counts` are what a
window (or a CSV, or a spool of windows) saw in those buckets; `assess` turns counts into statistics and a
status per feature. The server (drift_monitor), the spool and the HTML report all use these same pieces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from service.errors import ArtifactError
from service.model.parsing import MISSING_CODE, UNSEEN_CODE
from service.monitoring.drift_stats import (
    ALERT,
    OK,
    STATUS_LEVEL,
    WARN,
    Thresholds,
    bin_counts,
    decile_bins,
    grade,
    js_distance,
    psi,
    worst,
)

if TYPE_CHECKING:
    from service.serving.scorer import CompiledModel

PHAT = "phat"


@dataclass(frozen=True)
class NumericBins:
    name: str
    quantiles: tuple[float, ...]  # the reference decile edges (for plots)
    edges: np.ndarray  # distinct interior edges (searchsorted)
    expected: np.ndarray  # reference share per bin
    missing_rate: float

    @classmethod
    def from_profile(cls, name: str, profile: Mapping[str, Any]) -> NumericBins:
        quantiles = tuple(float(q) for q in profile.get("quantiles") or ())
        if len(quantiles) < 2:
            raise ArtifactError(f"reference of {name} has no quantiles")
        edges, expected = decile_bins(quantiles)
        return cls(name, quantiles, edges, expected, float(profile.get("missing_rate") or 0.0))

    @property
    def n_bins(self) -> int:
        return int(self.expected.size)


@dataclass(frozen=True)
class CategoryBins:
    column: str
    levels: tuple[str, ...]  # scorer code order; buckets are levels..., missing, unseen
    expected: np.ndarray
    missing_rate: float

    @classmethod
    def from_profile(cls, column: str, levels: Sequence[str], profile: Mapping[str, Any]) -> CategoryBins:
        freq: Mapping[str, float] = profile.get("frequencies") or {}
        missing = float(profile.get("missing_rate") or 0.0)
        expected = np.array([float(freq.get(level, 0.0)) for level in levels] + [missing, 0.0])
        if expected.sum() <= 0:
            raise ArtifactError(f"reference of {column} has no frequencies")
        return cls(column, tuple(levels), expected / expected.sum(), missing)

    @property
    def labels(self) -> list[str]:
        return [*self.levels, "(missing)", "(unseen)"]


@dataclass(frozen=True)
class DriftReference:
    version: str
    sha256: str
    numeric: tuple[NumericBins, ...]
    categorical: tuple[CategoryBins, ...]
    phat: NumericBins

    @classmethod
    def build(
        cls,
        version: str,
        sha256: str,
        numeric: Sequence[str],
        categories: Mapping[str, Sequence[str]],
        reference: Mapping[str, Any],
    ) -> DriftReference:
        """From a compiled model's inputs and an artifact's `reference_distributions`."""
        if not reference:
            raise ArtifactError(f"{version}: the artifact has no reference_distributions")
        numeric_ref = reference.get("numeric") or {}
        categorical_ref = reference.get("categorical") or {}
        missing = [n for n in numeric if n not in numeric_ref] + [
            c for c in categories if c not in categorical_ref
        ]
        if missing:
            raise ArtifactError(f"{version}: no reference distribution for {', '.join(missing)}")
        return cls(
            version=version,
            sha256=sha256,
            numeric=tuple(NumericBins.from_profile(n, numeric_ref[n]) for n in numeric),
            categorical=tuple(
                CategoryBins.from_profile(c, levels, categorical_ref[c]) for c, levels in categories.items()
            ),
            phat=NumericBins.from_profile(PHAT, reference.get("phat") or {}),
        )

    @classmethod
    def from_model(cls, model: CompiledModel) -> DriftReference:
        return cls.build(
            model.version,
            model.sha256,
            [n.name for n in model.numeric],
            {c.column: c.levels for c in model.categories},
            model.reference,
        )

    def layout(self) -> dict[str, Any]:
        """What a spool record needs to be read back without the model: inputs and level order."""
        return {
            "numeric": [b.name for b in self.numeric],
            "categorical": {b.column: list(b.levels) for b in self.categorical},
        }


@dataclass
class Counts:
    """Bucket counts of scored rows. numeric: bins + [missing]; categorical: levels + [missing, unseen]."""

    rows: int
    unseen_rows: int
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    phat: np.ndarray
    start: float = 0.0  # wall-clock seconds of the first and last rows
    end: float = 0.0

    @classmethod
    def empty(cls, ref: DriftReference, now: float = 0.0) -> Counts:
        return cls(
            rows=0,
            unseen_rows=0,
            numeric={b.name: np.zeros(b.n_bins + 1, dtype=np.int64) for b in ref.numeric},
            categorical={b.column: np.zeros(len(b.levels) + 2, dtype=np.int64) for b in ref.categorical},
            phat=np.zeros(ref.phat.n_bins, dtype=np.int64),
            start=now,
            end=now,
        )

    def add(self, other: Counts) -> None:
        if other.rows == 0:
            return
        self.start = other.start if self.rows == 0 else min(self.start, other.start)
        self.end = max(self.end, other.end)
        self.rows += other.rows
        self.unseen_rows += other.unseen_rows
        for name, counts in other.numeric.items():
            self.numeric[name] += counts
        for column, counts in other.categorical.items():
            self.categorical[column] += counts
        self.phat += other.phat

    def to_record(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "rows": self.rows,
            "unseen_rows": self.unseen_rows,
            "numeric": {k: v.tolist() for k, v in self.numeric.items()},
            "categorical": {k: v.tolist() for k, v in self.categorical.items()},
            "phat": self.phat.tolist(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], ref: DriftReference) -> Counts:
        """Read back a record, checking its buckets against the reference's."""
        out = cls.empty(ref)
        try:
            other = cls(
                rows=int(record["rows"]),
                unseen_rows=int(record["unseen_rows"]),
                numeric={b.name: np.asarray(record["numeric"][b.name], dtype=np.int64) for b in ref.numeric},
                categorical={
                    b.column: np.asarray(record["categorical"][b.column], dtype=np.int64)
                    for b in ref.categorical
                },
                phat=np.asarray(record["phat"], dtype=np.int64),
                start=float(record["start"]),
                end=float(record["end"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"drift record does not match {ref.version}'s inputs: {exc!r}") from None
        shapes_ok = other.phat.shape == out.phat.shape and all(
            other.numeric[k].shape == v.shape for k, v in out.numeric.items()
        )
        if not shapes_ok or any(other.categorical[k].shape != v.shape for k, v in out.categorical.items()):
            raise ArtifactError(f"drift record buckets do not match {ref.version}'s reference")
        out.add(other)
        return out


def count_batch(
    ref: DriftReference,
    numeric_values: Mapping[str, np.ndarray],
    category_codes: Mapping[str, np.ndarray],
    phat: np.ndarray,
    *,
    keep: np.ndarray | None = None,
    now: float = 0.0,
) -> Counts:
    """Bucket one block of scored rows (the compiled scorer's parsed values, codes and phat).

    keep: boolean mask of rows to count (rows that failed to parse are left out).
    """
    out = Counts.empty(ref, now)
    n = int(phat.size)
    if keep is not None:
        phat = phat[keep]
        n = int(phat.size)
    if n == 0:
        return out
    out.rows = n
    for b in ref.numeric:
        values = np.asarray(numeric_values[b.name], dtype=np.float64)  # a list from a few-rows batch
        if keep is not None:
            values = values[keep]
        counts = out.numeric[b.name]
        counts[:-1] = bin_counts(values, b.edges)
        counts[-1] = int(np.isnan(values).sum())
    unseen = np.zeros(n, dtype=bool)
    for c in ref.categorical:
        codes = np.asarray(category_codes[c.column], dtype=np.int64)
        if keep is not None:
            codes = codes[keep]
        is_unseen = codes == UNSEEN_CODE
        unseen |= is_unseen
        levels = len(c.levels)
        index = np.where(codes >= 0, codes, np.where(codes == MISSING_CODE, levels, levels + 1))
        out.categorical[c.column] = np.bincount(index, minlength=levels + 2).astype(np.int64)
    out.unseen_rows = int(unseen.sum())
    out.phat = bin_counts(phat, ref.phat.edges).astype(np.int64)
    return out


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str  # numeric | categorical | score
    psi: float | None
    js: float | None
    missing_rate: float | None
    reference_missing_rate: float | None
    unseen_share: float | None
    status: str
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class DriftSummary:
    version: str
    rows: int
    min_rows: int
    unseen_share: float
    features: tuple[FeatureDrift, ...]
    status: str
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def reporting(self) -> bool:
        """Enough rows for the statistics to mean something."""
        return self.rows >= self.min_rows

    def flagged(self, at_least: str = WARN) -> list[str]:
        level = STATUS_LEVEL[at_least]
        return [f.feature for f in self.features if STATUS_LEVEL[f.status] >= level]

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rows": self.rows,
            "reporting": self.reporting,
            "status": self.status,
            "unseen_share": self.unseen_share,
            "features": [f.as_dict() for f in self.features],
            "thresholds": self.thresholds.__dict__,
        }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _missing_drift(observed: float, reference: float, t: Thresholds) -> tuple[str, list[str]]:
    delta = abs(observed - reference)
    status = grade(delta, t.missing_warn, t.missing_alert)
    reasons = [f"missing {_pct(observed)} vs {_pct(reference)} reference"] if status != OK else []
    return status, reasons


def assess(ref: DriftReference, counts: Counts, t: Thresholds, min_rows: int = 1) -> DriftSummary:
    """Statistics and a status per feature. Below min_rows every status is "ok" (too few rows to tell)."""
    enough = counts.rows >= max(min_rows, 1)
    features: list[FeatureDrift] = []
    for b in ref.numeric:
        c = counts.numeric[b.name]
        present = c[:-1]
        missing_rate = float(c[-1] / counts.rows) if counts.rows else None
        value = psi(b.expected, present) if present.sum() > 0 else None
        statuses, reasons = [grade(value, t.psi_warn, t.psi_alert)], []
        if statuses[0] != OK and value is not None:
            reasons.append(f"PSI {value:.3f}")
        if missing_rate is not None:
            status, why = _missing_drift(missing_rate, b.missing_rate, t)
            statuses.append(status)
            reasons += why
        features.append(
            FeatureDrift(
                b.name,
                "numeric",
                value,
                None,
                missing_rate,
                b.missing_rate,
                None,
                worst(statuses) if enough else OK,
                tuple(reasons) if enough else (),
            )
        )
    for cb in ref.categorical:
        c = counts.categorical[cb.column]
        total = int(c.sum())
        value = psi(cb.expected, c) if total else None
        js = js_distance(cb.expected, c) if total else None
        missing_rate = float(c[-2] / total) if total else None
        unseen_share = float(c[-1] / total) if total else None
        statuses = [
            grade(value, t.psi_warn, t.psi_alert),
            grade(js, t.js_warn, t.js_alert),
            grade(unseen_share, t.unseen_warn, t.unseen_alert),
        ]
        reasons = []
        if statuses[0] != OK and value is not None:
            reasons.append(f"PSI {value:.3f}")
        if statuses[1] != OK and js is not None:
            reasons.append(f"JS {js:.3f}")
        if statuses[2] != OK and unseen_share is not None:
            reasons.append(f"unseen levels in {_pct(unseen_share)} of rows")
        if missing_rate is not None:
            status, why = _missing_drift(missing_rate, cb.missing_rate, t)
            statuses.append(status)
            reasons += why
        features.append(
            FeatureDrift(
                cb.column,
                "categorical",
                value,
                js,
                missing_rate,
                cb.missing_rate,
                unseen_share,
                worst(statuses) if enough else OK,
                tuple(reasons) if enough else (),
            )
        )
    phat_psi = psi(ref.phat.expected, counts.phat) if counts.phat.sum() > 0 else None
    phat_status = grade(phat_psi, t.psi_warn, t.psi_alert) if enough else OK
    features.append(
        FeatureDrift(
            PHAT,
            "score",
            phat_psi,
            None,
            None,
            None,
            None,
            phat_status,
            (f"PSI {phat_psi:.3f}",) if phat_status != OK and phat_psi is not None else (),
        )
    )
    unseen = counts.unseen_rows / counts.rows if counts.rows else 0.0
    return DriftSummary(
        version=ref.version,
        rows=counts.rows,
        min_rows=min_rows,
        unseen_share=float(unseen),
        features=tuple(features),
        status=worst([f.status for f in features]),
        thresholds=t,
    )


__all__ = [
    "ALERT",
    "OK",
    "PHAT",
    "WARN",
    "CategoryBins",
    "Counts",
    "DriftReference",
    "DriftSummary",
    "FeatureDrift",
    "NumericBins",
    "assess",
    "count_batch",
]
