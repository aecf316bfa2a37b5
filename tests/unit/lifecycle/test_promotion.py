"""Promotion: explicit, recorded, and explicit about the cutoff; a registry that refuses an identical
version, keeps lineage, and tells the story in its history."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.errors import ArtifactError
from service.lifecycle.promotion import CutoffNotAccepted, promote
from service.lifecycle.retrain import retrain
from service.model.registry import Registry
from service.model.synthetic import write_synthetic_csv
from service.model.training import train_csv
from service.serving.scorer import CompiledModel
from service.settings import Settings


@pytest.fixture
def registry(approved_registry: Registry, tmp_path: Path) -> Registry:
    shutil.copytree(approved_registry.root, tmp_path / "artifacts")
    return Registry(tmp_path / "artifacts", approved_registry.name)


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "month.csv"
    write_synthetic_csv(path, 6_000, seed=31)
    return path


def test_a_retrained_version_with_another_cutoff_needs_a_choice(registry: Registry, month: Path) -> None:
    version, result = train_csv(month, registry)
    own = result.model.cutoff
    assert version == "v2" and own != 0.712
    with pytest.raises(CutoffNotAccepted, match=r"--cutoff keep .* --cutoff take"):
        promote(registry, version, reason="new month")
    assert registry.resolve("production") == "v1"  # nothing moved

    kept = promote(registry, version, cutoff="keep", reason="new month, approved cutoff", by="ana")
    assert kept.version == "v3" != version and kept.cutoff == {
        "own": own, "before": 0.712, "choice": "keep", "served": 0.712,
    }  # fmt: skip
    meta = registry.metadata("v3")
    assert meta["cutoff"]["value"] == 0.712 and meta["derived_from"]["version"] == "v2"
    assert meta["coefficients"] == registry.metadata("v2")["coefficients"]
    served = registry.load_serving("production")  # what a worker loads: the golden rows hold at 0.712
    compiled = CompiledModel.from_artifact(served)
    assert compiled.cutoff == 0.712 and compiled.self_check(served.metadata["golden_rows"]) <= 1e-9

    taken = promote(registry, version, cutoff="take", reason="the model's own cutoff")
    assert taken.version == "v2" and registry.metadata("production")["cutoff"]["value"] == own
    events = [e for e in registry.history() if e["alias"] == "production"]
    assert [(e["version"], e["previous"], e.get("derived_from")) for e in events[-2:]] == [
        ("v3", "v1", "v2"), ("v2", "v3", None),
    ]  # fmt: skip
    assert events[-2]["by"] == "ana" and events[-2]["reason"] == "new month, approved cutoff"


def test_the_same_data_and_recipe_is_not_registered_twice(registry: Registry, month: Path) -> None:
    first, _ = train_csv(month, registry)
    second, result = train_csv(month, registry)
    assert first == second == "v2" and "reused" in result.extra
    assert registry.versions() == ["v1", "v2"]
    lineage = registry.metadata("v2")["lineage"]
    assert lineage["data_path"] == str(month.resolve()) and lineage["rows"] == 6_000
    assert len(lineage["data_sha256"]) == 64 and lineage["code_version"] and lineage["created_by"]


def test_retraining_stages_by_default_and_the_history_tells_it(registry: Registry, month: Path) -> None:
    settings = Settings(artifacts_dir=registry.root, retrain_min_rows=1_000, retrain_bootstrap=100)
    outcome = retrain(month, registry, settings)
    assert outcome.decision == "staged" and outcome.served is None
    assert registry.resolve("production") == "v1" and registry.resolve("staging") == outcome.version
    assert any("a person promotes it" in h for h in outcome.record["gate"]["held"])
    assert outcome.record["data"]["path"] == str(month.resolve())
    again = retrain(month, registry, settings)  # the same file: the same version is the challenger
    assert again.version == outcome.version and "reused" in again.record
    events = registry.history()
    assert [e["event"] for e in events] == ["promote", "promote", "retrain", "promote", "retrain"]
    staged = events[1]
    assert staged["alias"] == "staging" and staged["by"] == "retraining" and staged["gate"]["held"]
    assert events[2]["decision"] == "staged" and events[2]["version"] == outcome.version


def test_unknown_aliases_are_refused_and_production_is_never_deleted(registry: Registry) -> None:
    with pytest.raises(ArtifactError, match="no alias 'prodution'"):
        registry.set_alias("prodution", "v1")
    registry.set_alias("champion", "v1", create=True, reason="deliberate")
    assert registry.delete_alias("champion") == "v1" and "champion" not in registry.aliases()
    with pytest.raises(ArtifactError, match="promote another version"):
        registry.delete_alias("production")
