"""Every test in this folder starts real processes (gunicorn, redis-server, nginx, prometheus): the folder
is the tier, so the `integration` marker comes from here, not from each module."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.model.notebook_import import import_notebook
from service.model.registry import Registry

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """v1 = production and v2 (the approved model published again: the same bits, another version), built
    once; tests that break or promote take a copy (`registry`)."""
    registry = Registry(tmp_path_factory.mktemp("two-versions"), "propensity")
    import_notebook(registry)
    import_notebook(registry, promote_if_empty=False)
    return registry


@pytest.fixture
def registry(tmp_path: Path, two_versions: Registry) -> Registry:
    """A copy of `two_versions` of this test's own, to corrupt or promote in."""
    shutil.copytree(two_versions.dir, tmp_path / "artifacts" / "propensity")
    return Registry(tmp_path / "artifacts", "propensity")


@pytest.fixture(scope="session")
def retrained(approved_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """v1 = production (the approved model) and v2 = staging, retrained on a synthetic month: another model
    (coefficients, cutoff), built once; a test that moves aliases takes a copy (`staged_copy`)."""
    from service.model.synthetic import write_synthetic_csv
    from service.model.training import train_csv

    root = tmp_path_factory.mktemp("retrained")
    shutil.copytree(approved_registry.root, root / "artifacts")
    registry = Registry(root / "artifacts", approved_registry.name)
    write_synthetic_csv(root / "month.csv", 6_000, seed=31)
    version, _ = train_csv(root / "month.csv", registry)
    registry.set_alias("staging", version)
    return registry


def staged_copy(retrained: Registry, root: Path) -> Registry:
    shutil.copytree(retrained.root, root / "artifacts")
    return Registry(root / "artifacts", retrained.name)
