"""tools/system-deps.sh, on a search path where nothing is installed: what it would install, or the exact
command it asks a non-root user to run. --dry-run throughout: the test never installs anything."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "tools" / "system-deps.sh"
TEST_PACKAGES = "nginx-light redis-server prometheus wrk chromium python3.11 python3.11-venv"
SWARM_PACKAGES = "docker.io debootstrap"


def run(*args: str, search_path: Path, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """The script fed on stdin (so a user without read access to the checkout can run it)."""
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
    env = {**os.environ, "SYSTEM_DEPS_PATH": str(search_path), "PYTHON": "python3.11"}
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
        "nginx-light redis-server prometheus wrk chromium docker.io debootstrap python3.11 python3.11-venv\n"
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


def test_an_unknown_group_is_a_usage_error(tmp_path: Path) -> None:
    done = run("gpu", search_path=tmp_path)
    assert done.returncode == 2 and "unknown group 'gpu'" in done.stderr
