"""The README's walkthrough, run as written: `make serve`, then every other `$ ` command of its console
blocks in one bash session, as a reader types them into a second terminal.

What differs from a reader's machine, and why: the service listens on a free port (every `1313` of the
commands and their output is replaced by it), the registry is a fresh temporary one
(`PROPENSITY_ARTIFACTS_DIR` for the server; the walkthrough's own `export` points the commands at
`$PWD/artifacts`, the same directory, because they run in a temporary working directory whose `.venv`
links to the checkout's), and output is unbuffered so the server's log keeps the order a terminal shows.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.model.schema import example_rows, notebook_reference
from tests.conftest import free_port
from tests.docs.console import Step, console_steps, unmatched

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
README_PORT = "1313"
SERVE = "make serve"
START_TIMEOUT = 180.0  # an empty registry: the approved model is imported before gunicorn starts
SESSION_TIMEOUT = 600.0
MARK = "@@readme-step"
# A reader's shell has none of these: an outer make's (`make test` runs this test), and the Makefile's own
# variables, which `make serve` would take as given on its command line.
NOT_INHERITED = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PORT", "WORKERS", "PROMETHEUS_MULTIPROC_DIR"}
RAW_COLUMNS_USED = 10  # x5, x12, x31, x44, x53, x56, x58, x62, x81, x91


@contextmanager
def serving(command: str, env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`make serve` in its own process group, until it answers ready; the whole group is stopped after.

    `-o` keeps make from rebuilding the virtualenv this test runs in when pyproject.toml is newer than it:
    building the venv is `make test`'s part, the walkthrough's is what runs in it."""
    program, *targets = shlex.split(command)
    assert program == "make", command
    argv = [program, "-o", ".venv/bin/propensity", *targets]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_ready(process, port, log)
        yield process
    finally:
        stop_group(process)


def wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, f"make serve exited {process.returncode}:\n{log.read_text()}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"make serve was not ready in {START_TIMEOUT} s:\n{log.read_text()}")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group this test started (make, propensity serve, gunicorn and its workers)."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_session(steps: list[Step], cwd: Path, env: dict[str, str]) -> list[tuple[int, str]]:
    """Run the commands one after the other in one bash session; each one's exit code and output."""
    script = "".join(
        f"printf '\\n{MARK} {i}\\n'\n{step.command}\nprintf '\\n{MARK} {i} exit %d\\n' $?\n"
        for i, step in enumerate(steps)
    )
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=SESSION_TIMEOUT,
        check=False,
    )
    results = []
    for i in range(len(steps)):
        start = done.stdout.find(f"\n{MARK} {i}\n")
        end = done.stdout.find(f"\n{MARK} {i} exit ")
        assert start >= 0 and end > start, f"step {i} did not finish:\n{done.stdout[-4000:]}"
        code = int(done.stdout[end:].split("\n", 2)[1].rsplit(" ", 1)[1])
        results.append((code, done.stdout[start + len(f"\n{MARK} {i}\n") : end].strip("\n")))
    return results


def payload(command: str) -> Any:
    """The JSON a curl command sends (its -d argument)."""
    words = shlex.split(command)
    return json.loads(words[words.index("-d") + 1])


def same_value(sent: Any, expected: Any) -> bool:
    if isinstance(expected, str) or expected is None:
        return bool(sent == expected)
    try:
        return bool(float(sent) == expected)
    except (TypeError, ValueError):
        return False


def is_reference_row(row: dict[str, Any], reference: dict[str, Any]) -> bool:
    """True when the row sends the 10 raw columns the model uses, each as the reference row's value (as a
    number or as a string of it)."""
    return len(row) == RAW_COLUMNS_USED and all(same_value(v, reference[c]) for c, v in row.items())


def reference_rows_scored(steps: list[Step], results: list[tuple[int, str]]) -> list[float]:
    """The phat the service answered for each row of the walkthrough that is the notebook's first row."""
    reference = example_rows()["rows"][0]
    phats = []
    for step, (_, output) in zip(steps, results, strict=True):
        if "/predict" not in step.command:
            continue
        sent, answered = payload(step.command), json.loads(output)
        if isinstance(answered, dict) and "status" in answered:  # a problem+json answer scores nothing
            continue
        if isinstance(sent, dict):
            sent, answered = [sent], [answered]
        for row, result in zip(sent, answered, strict=True):
            if is_reference_row(row, reference):
                phats.append(result["phat"])
    return phats


def output_of(steps: list[Step], results: list[tuple[int, str]], fragment: str) -> str:
    """The output of the first walkthrough command that contains `fragment`."""
    found = [out for step, (_, out) in zip(steps, results, strict=True) if fragment in step.command]
    assert found, f"no walkthrough command contains {fragment!r}"
    return found[0]


def problems_answered(steps: list[Step], results: list[tuple[int, str]]) -> list[dict[str, Any]]:
    answers = [
        json.loads(out) for step, (_, out) in zip(steps, results, strict=True) if "/predict" in step.command
    ]
    return [a for a in answers if isinstance(a, dict) and "status" in a]


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    steps = [step.replaced(README_PORT, str(port)) for step in console_steps(README.read_text())]
    assert steps and steps[0].command == SERVE, "the walkthrough starts with make serve"
    serve, commands = steps[0], steps[1:]

    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(REPO / ".venv")
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith("PROPENSITY_") and k not in NOT_INHERITED
    }
    env = {
        **inherited,
        "PROPENSITY_ARTIFACTS_DIR": str(work / "artifacts"),
        "PROPENSITY_PORT": str(port),
        "PROPENSITY_HOST": "127.0.0.1",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "serve.log"
    with serving(serve.command, env, port, log):
        results = run_session(commands, work, env)
    served = log.read_text()

    assert unmatched(serve.expected, served) == [], served
    for step, (code, output) in zip(commands, results, strict=True):
        assert code == 0, f"$ {step.command}\nexit {code}\n{output}"
        assert unmatched(step.expected, output) == [], f"$ {step.command}\n{output}"

    approved = example_rows()["expected"][0]["phat"]
    assert reference_rows_scored(commands, results) == [approved, approved]  # as numbers, then as strings
    trained = output_of(commands, results, "propensity train")
    assert "registered propensity/v2" in trained
    selected = set(trained.rsplit("features ", 1)[1].split(", "))
    notebook = set(notebook_reference()["selected_features_in_selection_order"])
    assert len(selected) == 25 and len(selected & notebook) == 24, trained  # "24 of the notebook's 25"
    promote = 'propensity registry promote v2 --cutoff take --reason "trained on the new month"'
    assert "production -> v2" in output_of(commands, results, promote)
    ready = output_of(commands, results, "/health/ready")
    assert json.loads(ready)["version"] == "v2", ready
    assert served.count("serving propensity/v2") == served.count("replacing v1") == 2, served  # each worker
    report = work / "drift.html"
    assert report.read_text().lstrip().lower().startswith("<!doctype html"), "drift.html is not an HTML page"
    [problem] = problems_answered(commands, results)
    assert problem["status"] == 422 and problem["bad_rows"] == [1, 2], problem
