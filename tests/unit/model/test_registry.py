"""The registry: atomic versions, aliases with history, integrity checks before unpickling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.errors import ArtifactError, ArtifactIntegrityError, ArtifactNotFound, SelfCheckFailed
from service.model.notebook_import import approved_metadata, approved_model, approved_summary, import_notebook
from service.model.registry import Registry


@pytest.fixture
def registry(tmp_path: Path, approved_artifact_dir: Path) -> Registry:
    """A fresh registry holding a copy of the approved artifact as v1 (production)."""
    reg = Registry(tmp_path, "propensity")
    reg.dir.mkdir(parents=True)
    shutil.copytree(approved_artifact_dir, reg.dir / "v1")
    meta = json.loads((reg.dir / "v1" / "metadata.json").read_text())
    assert meta["version"] == "v1"
    reg.set_alias("production", "v1")
    return reg


def _copy_as(registry: Registry, version: str) -> None:
    shutil.copytree(registry.dir / "v1", registry.dir / version)


def test_promote_and_rollback_keep_history(registry: Registry) -> None:
    _copy_as(registry, "v2")
    _copy_as(registry, "v3")
    registry.set_alias("production", "v2")
    registry.set_alias("production", "v3")
    assert registry.resolve("production") == "v3"
    assert registry.aliases()["production"]["history"] == ["v2", "v1"]
    assert registry.rollback("production")["version"] == "v2"
    assert registry.rollback("production")["version"] == "v1"
    with pytest.raises(ArtifactNotFound, match="no previous version"):
        registry.rollback("production")


def test_list_and_resolve(registry: Registry) -> None:
    registry.set_alias("staging", "v1")
    [info] = registry.list()
    assert info.version == "v1" and info.aliases == ("production", "staging") and info.source == "notebook"
    with pytest.raises(ArtifactNotFound, match="no version or alias 'v9'"):
        registry.resolve("v9")


def test_tampered_model_is_refused_before_unpickling(registry: Registry) -> None:
    path = registry.dir / "v1" / "model.joblib"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ArtifactIntegrityError, match=r"model.joblib sha256 .* does not match"):
        registry.load("v1")


def test_tampered_metadata_is_refused(registry: Registry) -> None:
    path = registry.dir / "v1" / "metadata.json"
    meta = json.loads(path.read_text())
    meta["cutoff"]["value"] = 0.5
    path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactIntegrityError, match=r"metadata\.json sha256"):
        registry.verify("v1")


@pytest.mark.parametrize("name", ["model.joblib", "summary.txt", "metadata.json", "SHA256SUMS"])
def test_incomplete_artifact_is_refused(registry: Registry, name: str) -> None:
    (registry.dir / "v1" / name).unlink()
    with pytest.raises(ArtifactIntegrityError, match=r"missing|incomplete"):
        registry.load("v1")


def test_promote_refuses_a_tampered_version(registry: Registry) -> None:
    _copy_as(registry, "v2")
    (registry.dir / "v2" / "summary.txt").write_text("changed")
    with pytest.raises(ArtifactIntegrityError):
        registry.set_alias("production", "v2")
    assert registry.resolve("production") == "v1"


def test_golden_rows_failure_refuses_the_model(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "propensity")
    model = approved_model()
    model.coefficients = model.coefficients * 1.01  # a model that no longer matches its golden rows
    with pytest.raises(SelfCheckFailed):
        registry.publish(model, approved_metadata(approved_model()), approved_summary())
    assert registry.versions() == []
    assert [p.name for p in registry.dir.iterdir() if not p.name.startswith(".lock")] == []


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "propensity")

    def boom(path: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        registry.publish(approved_model(), {"golden_rows": {}}, "x", check=boom)
    assert list(p.name for p in registry.dir.iterdir()) == [".lock"]


def test_versions_are_sequential(tmp_path: Path) -> None:
    registry = Registry(tmp_path, "propensity")
    assert import_notebook(registry) == "v1"
    assert import_notebook(registry) == "v2"
    assert registry.resolve("production") == "v1"  # a later import does not move production


@pytest.mark.parametrize(
    "name", ["..", ".", "a/b", "../propensity", "/etc", ".hidden", "", "a" * 65, "name\n"]
)
def test_a_name_that_is_not_one_directory_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtifactError, match="bad model name"):
        Registry(tmp_path / "root", name)


@pytest.mark.parametrize("name", ["propensity", "churn-2", "model_v1.2", "A"])
def test_plain_names_are_names(tmp_path: Path, name: str) -> None:
    assert Registry(tmp_path, name).dir == tmp_path / name
