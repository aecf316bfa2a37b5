"""One model version on disk: the fitted model object, its metadata, and integrity checks.

A version directory holds:
    model.joblib    FittedModel (sklearn Pipeline + final GLM coefficients + intercept + cutoff)
    summary.txt     the statsmodels summary of the final fit
    metadata.json   everything a reader needs without unpickling (schema, coefficients, metrics, ...)
    SHA256SUMS      sha256 of the three files above, in `sha256sum -c` format

Loading verifies every sha256 BEFORE anything is unpickled, then runs the golden rows through the
pipeline and refuses a model that does not reproduce them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from service.errors import ArtifactIntegrityError, SelfCheckFailed

MODEL_FILE = "model.joblib"
SUMMARY_FILE = "summary.txt"
METADATA_FILE = "metadata.json"
CHECKSUMS_FILE = "SHA256SUMS"
GOLDEN_TOLERANCE = 1e-9


def sigmoid(eta: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-eta))
    return out


@dataclass
class FittedModel:
    """The reference model: the fitted Pipeline, the GLM coefficients (pipeline output order), the cutoff.

    `intercept` is 0.0 for the notebook's GLM (fit without a constant); a recalibrated champion
    (service/model/recalibration.py) has one. Pickles written before the field existed load with the
    class default, 0.0, and 0.0 added to a logit leaves its bits as they were.
    """

    pipeline: Pipeline
    coefficients: np.ndarray
    cutoff: float
    intercept: float = 0.0

    @property
    def feature_names(self) -> list[str]:
        return [str(f) for f in self.pipeline.get_feature_names_out()]

    def features(self, raw: pd.DataFrame) -> pd.DataFrame:
        out: pd.DataFrame = self.pipeline.transform(raw)
        return out

    def linear_predictor(self, raw: pd.DataFrame) -> np.ndarray:
        """The logit of each row: model inputs x coefficients, plus the intercept."""
        eta: np.ndarray = self.features(raw).to_numpy(dtype=np.float64) @ self.coefficients + self.intercept
        return eta

    def phat(self, raw: pd.DataFrame) -> np.ndarray:
        return sigmoid(self.linear_predictor(raw))

    def predict(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Per row: the model inputs, phat and business_outcome (reference path; slow but obvious)."""
        features = self.features(raw)
        phat = sigmoid(features.to_numpy(dtype=np.float64) @ self.coefficients + self.intercept)
        out = features.copy()
        out["phat"] = phat
        out["business_outcome"] = (phat > self.cutoff).astype(np.int64)
        return out[sorted(out.columns)]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_safe(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python, recursively; for metadata and golden rows."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_checksums(directory: Path, names: list[str]) -> None:
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in names]
    (directory / CHECKSUMS_FILE).write_text("".join(lines))


def read_checksums(directory: Path) -> dict[str, str]:
    path = directory / CHECKSUMS_FILE
    if not path.is_file():
        raise ArtifactIntegrityError(
            f"{directory}: {CHECKSUMS_FILE} is missing; refusing an incomplete artifact"
        )
    sums: dict[str, str] = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise ArtifactIntegrityError(f"{path}: malformed line {line[:80]!r}")
        sums[name] = digest
    return sums


def verify_directory(directory: Path) -> dict[str, Any]:
    """Check every file's sha256 (metadata.json via SHA256SUMS, the rest via metadata `files`).

    Returns the parsed metadata. Raises ArtifactIntegrityError naming the first bad or missing file.
    """
    if not directory.is_dir():
        raise ArtifactIntegrityError(f"{directory}: not an artifact directory")
    sums = read_checksums(directory)
    for name in (METADATA_FILE, MODEL_FILE, SUMMARY_FILE):
        if name not in sums:
            raise ArtifactIntegrityError(f"{directory}: {CHECKSUMS_FILE} does not list {name}")
    for name, expected in sums.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactIntegrityError(f"{directory}: {name} is missing; refusing an incomplete artifact")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactIntegrityError(
                f"{directory}: {name} sha256 {actual[:12]}… does not match {expected[:12]}…; "
                "the artifact was modified after it was written"
            )
    metadata: dict[str, Any] = json.loads((directory / METADATA_FILE).read_text())
    for name, info in metadata.get("files", {}).items():
        if sums.get(name) != info.get("sha256"):
            raise ArtifactIntegrityError(
                f"{directory}: metadata sha256 of {name} disagrees with {CHECKSUMS_FILE}"
            )
    return metadata


def check_golden_rows(model: FittedModel, golden: dict[str, Any], where: str) -> float:
    """Run the golden rows through the reference pipeline; returns max |Δphat| or raises SelfCheckFailed."""
    inputs = golden.get("inputs") or []
    expected = golden.get("expected") or []
    if not inputs or len(inputs) != len(expected):
        raise SelfCheckFailed(f"{where}: golden rows are missing or inconsistent")
    phat = model.phat(pd.DataFrame(inputs))
    want = np.array([row["phat"] for row in expected], dtype=np.float64)
    worst = float(np.max(np.abs(phat - want)))
    outcomes = (phat > model.cutoff).astype(int).tolist()
    want_outcomes = [int(row["business_outcome"]) for row in expected]
    if not worst <= GOLDEN_TOLERANCE or outcomes != want_outcomes:
        raise SelfCheckFailed(f"{where}: golden rows differ from their expected phat by up to {worst:.3g}")
    return worst


@dataclass
class LoadedArtifact:
    path: Path
    metadata: dict[str, Any]
    model: FittedModel

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def sha256(self) -> str:
        """Identity of the version: sha256 of its model file (changes whenever the model does)."""
        return str(self.metadata["files"][MODEL_FILE]["sha256"])


def load_artifact(directory: Path, *, self_check: bool = True) -> LoadedArtifact:
    metadata = verify_directory(directory)
    payload = joblib.load(directory / MODEL_FILE)
    if not isinstance(payload, FittedModel):
        raise ArtifactIntegrityError(f"{directory}: {MODEL_FILE} does not hold a FittedModel")
    if self_check:
        check_golden_rows(payload, metadata.get("golden_rows", {}), str(directory))
    return LoadedArtifact(path=directory, metadata=metadata, model=payload)
