"""tools/system-deps.sh, on a search path where nothing is installed: what it would install, or the exact
command it asks a non-root user to run. --dry-run throughout: the test never installs anything.

PostgreSQL's commands are looked for in <SYSTEM_DEPS_PGLIB>/<major>/bin too (Debian's layout: they are
not on PATH); the tests point it at an empty dir unless they make a fake install there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "tools" / "system-deps.sh"
TEST_PACKAGES = "nginx-light redis-server prometheus wrk chromium postgresql python3.11 python3.11-venv"
SWARM_PACKAGES = "docker.io debootstrap"


def run(
    *args: str, search_path: Path, as_nobody: bool = False, pglib: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The script fed on stdin (so a user without read access to the checkout can run it)."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
    env = {
        **os.environ,
        "SYSTEM_DEPS_PATH": str(search_path),
        "SYSTEM_DEPS_PGLIB": str(pglib or search_path / "no-postgresql"),
        "PYTHON": "python3.11",
    }
    with SCRIPT.open() as script:
        return subprocess.run(
            [*prefix, "bash", "-s", "--", "--dry-run", *args],
            stdin=script,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get path is taken as root")
def test_as_root_it_installs_what_is_missing(tmp_path: Path) -> None:
    done = run("test", "swarm", search_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "would install (policy-rc.d in place): apt-get install -y -qq --no-install-recommends "
        "nginx-light redis-server prometheus wrk chromium postgresql docker.io debootstrap python3.11 "
        "python3.11-venv\n"
    )


def test_a_user_is_given_the_exact_command(tmp_path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to run as a user")
    done = run("test", search_path=tmp_path, as_nobody=os.geteuid() == 0)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"system-deps: missing Debian packages: {TEST_PACKAGES}. Install them with:",
        f"  sudo apt-get update && sudo apt-get install -y --no-install-recommends {TEST_PACKAGES}",
    ]


def test_the_swarm_group_is_docker_and_debootstrap_only(tmp_path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to run as a user")
    done = run("swarm", search_path=tmp_path, as_nobody=os.geteuid() == 0)
    assert done.returncode == 1
    assert done.stderr.splitlines()[1].endswith(f"--no-install-recommends {SWARM_PACKAGES}")


@pytest.mark.skipif(os.geteuid() != 0, reason="the apt-get path is taken as root")
def test_postgresql_counts_as_present_from_debians_versioned_bin_dir(tmp_path: Path) -> None:
    """initdb, pg_ctl and postgres in <pglib>/<major>/bin (none on PATH): postgresql is not missing; one of
    them absent, it is."""
    bin_dir = tmp_path / "pglib" / "15" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    done = run("test", search_path=tmp_path / "empty", pglib=tmp_path / "pglib")
    assert done.returncode == 0, done.stderr
    assert "postgresql" not in done.stdout.split() and "chromium" in done.stdout.split()
    (bin_dir / "pg_ctl").unlink()
    done = run("test", search_path=tmp_path / "empty", pglib=tmp_path / "pglib")
    assert "postgresql" in done.stdout.split()


def test_an_unknown_group_is_a_usage_error(tmp_path: Path) -> None:
    done = run("gpu", search_path=tmp_path)
    assert done.returncode == 2 and "unknown group 'gpu'" in done.stderr
