"""A version directory's files and their integrity: names, sha256 sums, the metadata; no unpickling here.

A version directory holds:
    model.joblib    FittedModel (sklearn Pipeline + GLM coefficients + cutoff): training, audit, parity
    scorer.json     the serving artifact (service/model/scorer_spec.py): what a serving worker loads
    summary.txt     the statsmodels summary of the final fit
    metadata.json   everything a reader needs without unpickling (schema, coefficients, metrics, ...)
    SHA256SUMS      sha256 of the files above, in `sha256sum -c` format
    SIGNATURE       optional: an Ed25519 signature of SHA256SUMS (service/model/signing.py)

This module imports no training stack: a serving worker verifies a version with it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import ArtifactIntegrityError

MODEL_FILE = "model.joblib"
SUMMARY_FILE = "summary.txt"
METADATA_FILE = "metadata.json"
CHECKSUMS_FILE = "SHA256SUMS"
GOLDEN_TOLERANCE = 1e-9


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


def checksums_text(directory: Path, names: list[str]) -> str:
    """SHA256SUMS for `names` as the files in `directory` are now (`sha256sum -c` format)."""
    return "".join(f"{sha256_file(directory / name)}  {name}\n" for name in names)


def write_checksums(directory: Path, names: list[str]) -> None:
    (directory / CHECKSUMS_FILE).write_text(checksums_text(directory, names))


def read_checksums(directory: Path) -> dict[str, str]:
    path = directory / CHECKSUMS_FILE
    if not path.is_file():
        raise ArtifactIntegrityError(
            f"{directory}: {CHECKSUMS_FILE} is missing; refusing an incomplete artifact"
        )
    sums: dict[str, str] = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or "/" in name or name.startswith("."):
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
