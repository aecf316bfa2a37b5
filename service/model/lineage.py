"""Where a version came from: the data (absolute path, sha256, rows), the code, who made it and when; and
the fingerprint that tells a registry it already holds a version trained on the same data the same way."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

from service.model.registry import actor, now_iso

PACKAGE = "propensity-service"


def code_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def code_revision() -> str | None:
    """The git commit of the checkout the code runs from, when it runs from one (a wheel has none)."""
    here = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def lineage(path: Path, data_sha256: str, rows: int, recipe: str) -> dict[str, Any]:
    return {
        "data_path": str(Path(path).resolve()),
        "data_sha256": data_sha256,
        "rows": rows,
        "recipe": recipe,
        "code_version": code_version(),
        "code_revision": code_revision(),
        "created_by": actor(),
        "created_at": now_iso(),
    }


def fingerprint(data_sha256: str, recipe: str) -> str:
    """The same data, the same recipe, the same code: the same model (training is deterministic)."""
    key = {"data_sha256": data_sha256, "recipe": recipe, "code_version": code_version()}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
