"""A version as a serving worker loads it: scorer.json as data, a signature when signing is on, never a
pickle (a pickle that would create a file when loaded is placed in the version: the file never appears)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.errors import ArtifactIntegrityError
from service.model.artifact import load_artifact
from service.model.artifact_files import CHECKSUMS_FILE, METADATA_FILE, MODEL_FILE, read_checksums
from service.model.registry import Registry, files_of
from service.model.scorer_spec import SCORER_FILE
from service.model.signing import SIGNATURE_FILE, generate_keys
from service.serving.scorer import CompiledModel
from service.settings import Settings
from tests.conftest import app_client


class CreatesAFile:
    """Unpickling this creates `path` (Path.touch): what a malicious pickle could do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.path,))


def copy_registry(source: Registry, root: Path, **keys: Path) -> Registry:
    shutil.copytree(source.dir, root / source.name)
    return Registry(root, source.name, **keys)


def rehash(directory: Path) -> None:
    """Rewrite the metadata's file sums and SHA256SUMS to the files as they are: what someone who can
    write the registry could do."""
    meta = json.loads((directory / METADATA_FILE).read_text())
    names = [n for n in meta["files"] if (directory / n).exists()]
    meta["files"] = files_of(directory, tuple(names))
    (directory / METADATA_FILE).write_text(json.dumps(meta))
    listed = [n for n in read_checksums(directory) if (directory / n).exists()]
    sums = files_of(directory, tuple(listed))
    (directory / CHECKSUMS_FILE).write_text("".join(f"{sums[n]['sha256']}  {n}\n" for n in listed))


@pytest.fixture
def bombed(approved_registry: Registry, tmp_path: Path) -> tuple[Registry, Path]:
    registry = copy_registry(approved_registry, tmp_path / "registry")
    marker = tmp_path / "the-pickle-ran"
    version = registry.path("production")
    (version / MODEL_FILE).write_bytes(pickle.dumps(CreatesAFile(marker)))
    rehash(version)
    return registry, marker


def test_a_serving_load_never_unpickles_the_version(bombed: tuple[Registry, Path]) -> None:
    registry, marker = bombed
    artifact = registry.load_serving("production")
    compiled = CompiledModel.from_artifact(artifact)
    assert compiled.self_check(artifact.metadata["golden_rows"]) <= 1e-9
    assert not marker.exists()
    with pytest.raises(ArtifactIntegrityError):  # the training side does unpickle: the bomb is real
        load_artifact(registry.path("production"))
    assert marker.exists()


def test_the_app_serves_from_the_data_artifact_and_never_runs_the_pickle(
    bombed: tuple[Registry, Path], reference_rows: list[dict[str, object]], reference_phat: list[float]
) -> None:
    registry, marker = bombed
    with app_client(registry) as client:
        answer = client.post("/predict", json=reference_rows[:3])
    assert answer.status_code == 200, answer.text
    assert [r["phat"] for r in answer.json()] == pytest.approx(reference_phat[:3], abs=1e-9)
    assert answer.headers["x-model-version"].startswith("v1")
    assert not marker.exists()


def test_a_version_without_scorer_json_is_refused_until_upgraded(
    approved_registry: Registry, tmp_path: Path
) -> None:
    registry = copy_registry(approved_registry, tmp_path)
    version = registry.path("production")
    (version / SCORER_FILE).unlink()
    meta = json.loads((version / METADATA_FILE).read_text())
    del meta["files"][SCORER_FILE]
    (version / METADATA_FILE).write_text(json.dumps(meta))
    sums = read_checksums(version)
    del sums[SCORER_FILE]
    (version / CHECKSUMS_FILE).write_text("")
    rehash(version)  # an old version: its sums list the three files it had
    (version / CHECKSUMS_FILE).write_text(
        "".join(f"{files_of(version, (n,))[n]['sha256']}  {n}\n" for n in sums)
    )
    with pytest.raises(ArtifactIntegrityError, match="propensity registry upgrade v1"):
        registry.load_serving("production")
    assert registry.upgrade("production") is True
    assert registry.upgrade("production") is False  # once is enough
    artifact = registry.load_serving("production")
    assert CompiledModel.from_artifact(artifact).self_check(artifact.metadata["golden_rows"]) <= 1e-9
    assert registry.verify("production").version == "v1"  # sums and metadata agree again


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return generate_keys(tmp_path / "keys")


def test_a_key_pair_keeps_its_private_half_private(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    with pytest.raises(ArtifactIntegrityError, match="already holds"):
        generate_keys(private.parent)


def test_signing_on_refuses_unsigned_tampered_and_foreign_versions(
    approved_registry: Registry, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    private, public = keys
    registry = copy_registry(approved_registry, tmp_path / "r", signing_key=private, verify_key=public)
    with pytest.raises(ArtifactIntegrityError, match="not signed"):
        registry.load_serving("production")
    registry.sign("production")
    assert registry.load_serving("production").signed_by

    version = registry.path("production")
    scorer = json.loads((version / SCORER_FILE).read_text())
    scorer["cutoff"] = 0.5  # a change whose sums are rewritten to match: only the signature tells
    (version / SCORER_FILE).write_text(json.dumps(scorer))
    rehash(version)
    with pytest.raises(ArtifactIntegrityError, match="does not match SHA256SUMS"):
        registry.load_serving("production")

    other_private, _ = generate_keys(tmp_path / "other")
    Registry(registry.root, registry.name, signing_key=other_private).sign("production")
    with pytest.raises(ArtifactIntegrityError, match="signed by key"):
        registry.load_serving("production")


def test_a_signing_publisher_and_a_verifying_worker(
    approved_registry: Registry, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    from service.model.notebook_import import import_notebook

    private, public = keys
    registry = Registry(tmp_path / "signed", signing_key=private, verify_key=public)
    version = import_notebook(registry)
    assert (registry.path(version) / SIGNATURE_FILE).is_file()
    assert registry.load_serving(version).signed_by
    unsigned = copy_registry(approved_registry, tmp_path / "unsigned")
    settings = Settings(artifacts_dir=unsigned.root, reload_interval_seconds=0, verify_key_file=public)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        answer = client.post("/predict", json=[{"x0": 1.0}])
    assert ready.status_code == 503 and "integrity" in ready.text
    assert answer.status_code == 503 and answer.headers["content-type"] == "application/problem+json"
