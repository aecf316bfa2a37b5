"""One model version as the training side reads it: the fitted model object (unpickled), its metadata.

The files of a version are described in service/model/artifact_files.py. Loading verifies every sha256
BEFORE anything is unpickled, then runs the golden rows through the pipeline and refuses a model that does
not reproduce them. A serving worker never comes here: it loads scorer.json
(service/model/serving_artifact.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from service.errors import ArtifactIntegrityError, SelfCheckFailed
from service.model.artifact_files import (
    CHECKSUMS_FILE,
    GOLDEN_TOLERANCE,
    METADATA_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    json_safe,
    read_checksums,
    sha256_file,
    verify_directory,
    write_checksums,
)


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


__all__ = [
    "CHECKSUMS_FILE",
    "GOLDEN_TOLERANCE",
    "METADATA_FILE",
    "MODEL_FILE",
    "SUMMARY_FILE",
    "FittedModel",
    "LoadedArtifact",
    "json_safe",
    "load_artifact",
    "read_checksums",
    "sha256_file",
    "verify_directory",
    "write_checksums",
]
