"""A serving install: the package without its extras (what the Docker image installs), under real gunicorn.

The extras' top-level modules are made uninstalled for every process the test starts: a `sitecustomize`
on PYTHONPATH puts a finder first on `sys.meta_path` that answers each of them with ModuleNotFoundError,
as Python does for a package that is not there (a library's optional `import scipy` falls back as it
would). The image itself is checked by the Swarm suite (tests/swarm: the packages are absent).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from service.cli.errors import EXTRA_OF_MODULE
from service.model.registry import Registry
from service.serving.scorer import CompiledModel
from tests.servers import Server, start_server

PROPENSITY = str(Path(sys.executable).with_name("propensity"))
BLOCKER = """\
import sys
from importlib.abc import MetaPathFinder

ABSENT = {absent!r}


class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
"""


@pytest.fixture(scope="module")
def serving_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("serving-install")
    (site / "sitecustomize.py").write_text(BLOCKER.format(absent=sorted(EXTRA_OF_MODULE)))
    return {"PYTHONPATH": str(site)}


@pytest.fixture(scope="module")
def server(
    approved_registry: Registry, serving_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serving-install-served")
    shutil.copytree(approved_registry.root, root / "artifacts")
    with start_server(root / "artifacts", root, env=serving_env) as srv:
        yield srv


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROPENSITY, *args], env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_blocker_makes_the_extras_absent(serving_env: dict[str, str], tmp_path: Path) -> None:
    """The check can fail: with the blocker, importing any extra's module fails as a missing package."""
    for module in sorted(EXTRA_OF_MODULE):
        code = f"import {module}"
        done = subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, **serving_env}, capture_output=True, text=True
        )
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, module


def test_a_serving_install_serves_the_same_bits(
    server: Server, approved_registry: Registry, reference_rows: list[dict[str, Any]]
) -> None:
    model = CompiledModel.from_artifact(approved_registry.load_serving("production"))
    expected = [row["phat"] for row in model.records(model.score(reference_rows))]
    answer = httpx.post(
        server.url + "/predict",
        content=orjson.dumps(reference_rows),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200 and answer.headers["x-model-version"] == "v1"
    assert [row["phat"] for row in answer.json()] == expected
    bad = httpx.post(server.url + "/predict", json=[{**reference_rows[0], "x12": "a lot"}])
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"
    assert bad.json()["errors"][0]["field"] == "x12"


def test_serving_install_on_an_empty_registry_says_how_to_get_a_model(
    serving_env: dict[str, str], tmp_path: Path
) -> None:
    done = run(["serve", "--artifacts-dir", str(tmp_path / "empty")], serving_env, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "\nerror: the registry has no production model" in done.stderr
    assert "'train' extra" in done.stderr and "Traceback" not in done.stderr


def test_commands_that_need_an_extra_name_it(
    serving_env: dict[str, str], approved_registry: Registry, tmp_path: Path
) -> None:
    data = tmp_path / "train.csv"
    data.write_text("y,x0\n1,0.5\n")
    args = ["train", "--data", str(data), "--artifacts-dir", str(tmp_path / "r")]
    trained = run(args, serving_env, tmp_path)
    assert trained.returncode == 1 and "Traceback" not in trained.stderr
    assert "from the 'train' extra" in trained.stderr
    assert "pip install 'propensity-service[train]'" in trained.stderr

    listed = run(["registry", "list", "--artifacts-dir", str(approved_registry.root)], serving_env, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "v1" in listed.stdout and "production" in listed.stdout
