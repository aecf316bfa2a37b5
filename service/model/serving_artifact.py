"""A version as a serving worker loads it: sha256 of every file, the signature when signing is on, then
scorer.json parsed as data. model.joblib is hashed like every file and never unpickled (nor is anything
else), so a serving process imports no pandas, scikit-learn or statsmodels and no pickle it reads can run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ArtifactIntegrityError
from service.model.artifact_files import CHECKSUMS_FILE, MODEL_FILE, read_checksums, verify_directory
from service.model.scorer_spec import SCORER_FILE, ScorerSpec
from service.model.signing import verify_signature


@dataclass
class ServingArtifact:
    path: Path
    metadata: dict[str, Any]
    spec: ScorerSpec
    signed_by: str | None = None  # the key id, when the signature was checked

    @property
    def version(self) -> str:
        return str(self.metadata["version"])

    @property
    def sha256(self) -> str:
        """Identity of the version: sha256 of its model file, as for the training side's LoadedArtifact
        (metrics, cache keys and reports name a version by it whichever side loaded it)."""
        return str(self.metadata["files"][MODEL_FILE]["sha256"])


def load_serving_artifact(directory: Path, verify_key: Path | None = None) -> ServingArtifact:
    if verify_key is not None and directory.is_dir():  # before anything of the version is read
        signed_by: str | None = verify_signature(directory, verify_key)
    else:
        signed_by = None
    metadata = verify_directory(directory)
    expected = read_checksums(directory).get(SCORER_FILE)
    if expected is None:
        raise ArtifactIntegrityError(
            f"{directory}: no {SCORER_FILE} in {CHECKSUMS_FILE} (a version written before the serving "
            f"artifact existed): add it with `propensity registry upgrade {directory.name}`"
        )
    data = (directory / SCORER_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:  # the bytes parsed are the bytes verified
        raise ArtifactIntegrityError(f"{directory}: {SCORER_FILE} changed while it was read")
    spec = ScorerSpec.from_json(data, f"{directory}/{SCORER_FILE}")
    return ServingArtifact(directory, metadata, spec, signed_by)
