"""Venvs of their own for the tools that cannot share the project's (openapi-python-client, kserve,
MLServer and the MLflow server pin other versions of the project's dependencies): kept in
.venv-tools/<name> between runs, built from a pip-freeze lock file the first time and again only when that
file changes."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / ".venv-tools"


def tools_venv(name: str, lock: Path) -> Path:
    """The python of .venv-tools/<name>, built from `lock` when missing or older than it (one builder at a
    time, across pytest processes; PyPI through pip)."""
    venv = TOOLS / name
    stamp = venv / ".lock-sha256"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    TOOLS.mkdir(exist_ok=True)
    with (TOOLS / ".build-lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == want):
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check", "-r", str(lock)],
                check=True,
                timeout=900,
            )
            stamp.write_text(want)
    return venv / "bin/python"
