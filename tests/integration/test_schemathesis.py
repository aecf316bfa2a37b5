"""schemathesis against a live gunicorn: every check (`--checks all`), bounded examples, a fixed seed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.model.registry import Registry
from tests.servers import Server, start_server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 30  # per operation and phase: a few hundred requests in all
SEED = 20261201


@pytest.fixture(scope="module")
def server(approved_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("schemathesis")
    shutil.copytree(approved_registry.root, root / "artifacts")
    with start_server(root / "artifacts", root) as srv:
        yield srv


def test_schemathesis_finds_no_failure(server: Server, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            server.url + "/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--continue-on-failure",
            "--request-timeout",
            "30",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-8000:]
    assert "Operations:       20 selected / 20 total" in out, out[-3000:]  # every operation of the document
    tested = re.search(r"(\d+) generated, (\d+) passed", out)
    assert tested is not None, out[-3000:]
    assert int(tested.group(1)) == int(tested.group(2)) > 100
    assert server.process.poll() is None  # no request took a worker or the master down
