"""The model follower survives every registry read error and retries failed versions with backoff.

Real directory registries in tmp_path: aliases.json truncated mid-run, made unreadable (chmod 000), a
version's model.joblib corrupted and then restored. The thread-driven tests poll every few milliseconds
and wait with deadline loops; the schedule tests drive `poll()` with a clock they advance themselves, so
"within N polls" is a count, not a duration.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.api.app import create_app
from service.model.notebook_import import import_notebook
from service.model.registry import ALIASES_FILE, Registry, write_atomic
from service.serving.holder import ModelHolder, backoff_delay
from service.serving.metrics import Metrics
from service.settings import Settings

DEADLINE_SECONDS = 20.0
FAST: dict[str, Any] = {"reload_interval_seconds": 0.01, "reload_backoff_max_seconds": 0.04}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """v1 = production and v2 (the same approved model, published again), built once per module."""
    registry = Registry(tmp_path_factory.mktemp("holder-template"), "propensity")
    import_notebook(registry)
    import_notebook(registry, promote_if_empty=False)
    assert registry.versions() == ["v1", "v2"] and registry.resolve("production") == "v1"
    return registry


@pytest.fixture
def registry(tmp_path: Path, template: Registry) -> Registry:
    shutil.copytree(template.dir, tmp_path / "propensity")
    return Registry(tmp_path, "propensity")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_holder(
    registry: Registry, clock: Callable[[], float] | None = None, **overrides: Any
) -> tuple[ModelHolder, Metrics]:
    """A holder polling every 10 ms; on `clock` if given (then driven by `poll()`), else on real time."""
    settings = Settings(artifacts_dir=registry.root, **{**FAST, **overrides})
    metrics = Metrics(CollectorRegistry(), flush_interval=3600)
    if clock is None:
        return ModelHolder(settings, metrics, registry), metrics
    return ModelHolder(settings, metrics, registry, clock=clock), metrics


@contextlib.contextmanager
def following(holder: ModelHolder) -> Iterator[ModelHolder]:
    holder.start()
    try:
        yield holder
    finally:
        holder.stop()


def failed(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("propensity_model_swaps_total", {"result": "failed"}) or 0.0


def behind(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("propensity_model_behind_alias")


def wait_until(predicate: Callable[[], object]) -> bool:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def serving(holder: ModelHolder) -> str | None:
    return holder.current.version if holder.current else None


def truncate_aliases(registry: Registry) -> bytes:
    """What a non-atomic writer leaves mid-write: the first half of the file. Returns the full content."""
    path = registry.dir / ALIASES_FILE
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    return full


def corrupt(path: Path) -> bytes:
    original = path.read_bytes()
    path.write_bytes(original[:-64] + bytes(64))
    return original


def not_loaded_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.ERROR and "not loaded" in r.getMessage()]


# --- the backoff schedule ---------------------------------------------------------------------------------
def test_backoff_doubles_from_the_interval_up_to_the_cap() -> None:
    assert [backoff_delay(n, 2.0, 10.0) for n in range(1, 7)] == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff_delay(10_000, 2.0, 10.0) == 10.0  # no overflow after a long outage
    assert backoff_delay(1, 2.0, 0.5) == 2.0  # a cap below the interval: never faster than the polls


def test_a_corrupt_version_is_retried_with_backoff_and_served_once_restored(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 2: a failed version was never retried while aliases.json stayed the same."""
    clock = Clock()
    holder, metrics = make_holder(
        registry, clock, reload_interval_seconds=1.0, reload_backoff_max_seconds=8.0
    )
    holder.refresh()
    assert serving(holder) == "v1"
    registry.set_alias("production", "v2")
    model_file = registry.dir / "v2" / "model.joblib"
    original = corrupt(model_file)  # after the promotion, which verifies v2 first
    caplog.set_level(logging.DEBUG, logger="propensity.model")
    holder.poll()  # the alias moved: tried at once, refused
    assert (serving(holder), failed(metrics), behind(metrics)) == ("v1", 1.0, 1.0)
    assert holder.failure is not None and holder.failure.version == "v2"
    assert "model.joblib sha256" in holder.failure.detail
    delays = []
    for _ in range(50):  # one loop tick per second on the test's clock
        clock.now += 1.0
        before = holder.failure
        holder.poll()
        if holder.failure is not before:
            delays.append(holder.failure.retry_at - clock.now)
    # attempts at t = 1, 3, 7, 15, 23, 31, 39, 47: the delay doubles from the interval up to the cap
    assert delays == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0]
    assert failed(metrics) == 1 + len(delays) and serving(holder) == "v1"
    assert len(not_loaded_errors(caplog)) == 1  # logged once, not once per attempt
    model_file.write_bytes(original)  # the operator restores the file; no re-promotion
    polls = 0
    while serving(holder) != "v2" and polls < 100:
        clock.now += 1.0
        holder.poll()
        polls += 1
    assert serving(holder) == "v2" and polls <= 8  # within one capped backoff
    assert holder.failure is None and behind(metrics) == 0.0 and failed(metrics) == 1 + len(delays)


def test_a_change_of_the_aliases_file_is_tried_at_once_whatever_the_backoff(registry: Registry) -> None:
    clock = Clock()
    holder, metrics = make_holder(
        registry, clock, reload_interval_seconds=1.0, reload_backoff_max_seconds=60.0
    )
    holder.refresh()
    registry.set_alias("production", "v2")
    corrupt(registry.dir / "v2" / "model.joblib")
    for _ in range(6):  # fail a few times: the next retry is now far off
        clock.now += 60.0
        holder.poll()
    assert failed(metrics) == 6.0 and holder.failure is not None
    assert holder.failure.retry_at - clock.now > 30
    registry.rollback("production")  # back to v1, the version this worker still serves
    clock.now += 1.0
    holder.poll()
    assert serving(holder) == "v1" and holder.failure is None and behind(metrics) == 0.0


# --- the follower thread ----------------------------------------------------------------------------------
def test_a_half_written_aliases_file_does_not_end_the_follower(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Defect 1: a truncated aliases.json raised out of refresh and ended the thread for good."""
    holder, metrics = make_holder(registry)
    caplog.set_level(logging.ERROR, logger="propensity.model")
    with following(holder):
        assert wait_until(lambda: serving(holder) == "v1")
        full = truncate_aliases(registry)
        assert wait_until(lambda: failed(metrics) >= 5), "the follower stopped retrying"
        assert holder.alive and serving(holder) == "v1" and behind(metrics) == 1.0
        assert holder.failure is not None and "not valid JSON" in holder.failure.detail
        assert len(not_loaded_errors(caplog)) == 1
        (registry.dir / ALIASES_FILE).write_bytes(full)  # the writer finishes
        registry.set_alias("production", "v2")
        assert wait_until(lambda: serving(holder) == "v2"), "the promotion after the fault was not followed"
        assert holder.alive and holder.failure is None and behind(metrics) == 0.0


def test_a_worker_starting_inside_the_window_loads_once_the_file_is_whole(registry: Registry) -> None:
    full = truncate_aliases(registry)
    holder, metrics = make_holder(registry)
    with following(holder):
        assert holder.first_attempt.wait(DEADLINE_SECONDS)
        assert wait_until(lambda: failed(metrics) >= 3)
        assert serving(holder) is None and holder.alive and holder.last_error
        (registry.dir / ALIASES_FILE).write_bytes(full)
        assert wait_until(lambda: serving(holder) == "v1")
        assert metrics.registry.get_sample_value("propensity_model_ready") == 1.0


def test_a_corrupt_production_at_start_is_served_once_restored(registry: Registry) -> None:
    """The issue's outage: corrupt model.joblib, restart, restore the file: served without re-promotion."""
    model_file = registry.dir / "v1" / "model.joblib"
    original = corrupt(model_file)
    holder, metrics = make_holder(registry)
    with following(holder):
        assert wait_until(lambda: failed(metrics) >= 3) and serving(holder) is None
        model_file.write_bytes(original)
        assert wait_until(lambda: serving(holder) == "v1")
        assert holder.alive and behind(metrics) == 0.0


@contextlib.contextmanager
def without_root_file_override() -> Iterator[None]:
    """Run the calling thread (and threads it starts meanwhile) without root's CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, so a chmod 000 file is unreadable as it is for the service's own user. Capabilities
    are per thread on Linux and a new thread inherits its creator's: the follower started inside keeps
    them off, the test's thread gets them back on exit. Nothing to do when not running as root."""
    if os.geteuid() != 0:
        yield
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3, this thread
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip("capget failed: cannot drop root's file permission override")
    saved = data[0].effective
    data[0].effective = saved & ~((1 << 1) | (1 << 2))  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip("capset failed: cannot drop root's file permission override")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0


def test_an_unreadable_aliases_file_does_not_end_the_follower(registry: Registry) -> None:
    """Defect 1, the PermissionError case: chmod 000 on aliases.json mid-run, then fixed and promoted."""
    holder, metrics = make_holder(registry)
    aliases = registry.dir / ALIASES_FILE
    with without_root_file_override():
        holder.start()
    try:
        assert wait_until(lambda: serving(holder) == "v1")
        aliases.chmod(0)
        assert wait_until(lambda: failed(metrics) >= 5), "the follower stopped retrying"
        assert holder.failure is not None and "Permission denied" in holder.failure.detail
        assert holder.alive and serving(holder) == "v1" and behind(metrics) == 1.0
        aliases.chmod(0o644)
        registry.set_alias("production", "v2")
        assert wait_until(lambda: serving(holder) == "v2")
        assert holder.alive and behind(metrics) == 0.0
    finally:
        aliases.chmod(0o644)
        holder.stop()


def point_production_at(registry: Registry, version: str) -> None:
    """Move the alias without set_alias's verification (which refuses a corrupt version), atomically."""
    aliases = registry.aliases()
    aliases["production"] = {"version": version, "history": [], "updated_at": "now"}
    write_atomic(registry.dir / ALIASES_FILE, json.dumps(aliases).encode())


def test_readiness_stays_200_and_says_the_worker_is_behind(registry: Registry) -> None:
    settings = Settings(artifacts_dir=registry.root, **FAST)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert wait_until(lambda: client.get("/health/ready").status_code == 200)
        assert "behind_alias" not in client.get("/health/ready").json()
        corrupt(registry.dir / "v2" / "model.joblib")
        point_production_at(registry, "v2")
        assert wait_until(lambda: client.get("/health/ready").json().get("behind_alias"))
        ready = client.get("/health/ready")
        assert ready.status_code == 200 and ready.headers["x-model-version"] == "v1"
        assert ready.json() | {"sha256": "-"} == {
            "status": "ready",
            "model": "propensity",
            "version": "v1",
            "sha256": "-",
            "behind_alias": True,
            "alias_version": "v2",
        }
        assert "propensity_model_behind_alias 1.0" in client.get("/metrics").text


def test_a_pinned_version_ignores_a_broken_aliases_file(registry: Registry) -> None:
    clock = Clock()
    holder, metrics = make_holder(registry, clock, model_version="v2")
    holder.refresh()
    assert serving(holder) == "v2"
    truncate_aliases(registry)
    for _ in range(5):
        clock.now += 1.0
        holder.poll()
    assert failed(metrics) == 0.0 and behind(metrics) == 0.0 and serving(holder) == "v2"


def test_registry_writes_are_readable_by_other_users(registry: Registry) -> None:
    """mkstemp/mkdtemp would leave aliases.json 0600 and version directories 0700: a serving user other than
    the promoting one could not read them (the PermissionError of the issue, made by the registry)."""
    registry.set_alias("production", "v2")
    version = import_notebook(registry, promote_if_empty=False)
    assert (registry.dir / ALIASES_FILE).stat().st_mode & 0o777 == 0o644
    assert (registry.dir / version).stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (registry.dir / version).iterdir()} == {0o644}
    assert not [p.name for p in registry.dir.iterdir() if p.name.startswith(".aliases")]
    assert json.loads((registry.dir / ALIASES_FILE).read_text())["production"]["version"] == "v2"


# --- what a client is told while nothing is served ------------------------------------------------------
def test_a_refused_version_is_told_apart_from_one_still_loading(registry: Registry) -> None:
    holder, _ = make_holder(registry, Clock())
    loading = holder.unavailable()
    assert (loading.kind, loading.extra) == ("not-ready", {"retry_after": 1})
    assert "still loading" in loading.detail

    original = corrupt(registry.dir / "v1" / "model.joblib")
    holder.refresh()
    assert holder.failure is not None and "sha256" in holder.failure.detail  # the log's words
    refused = holder.unavailable()
    assert (refused.status, refused.kind, refused.extra) == (503, "model-refused", {"version": "v1"})
    assert "integrity" in refused.detail and "operator" in refused.detail
    assert str(registry.root) not in refused.detail and "sha256 " not in refused.detail

    (registry.dir / "v1" / "model.joblib").write_bytes(original)
    holder.refresh()
    assert serving(holder) == "v1" and holder.failure is None


def test_an_unreadable_registry_is_loading_not_refused(registry: Registry) -> None:
    holder, _ = make_holder(registry, Clock())
    truncate_aliases(registry)
    holder.refresh()
    assert holder.failure is not None and holder.failure.refused is None
    error = holder.unavailable()
    assert error.kind == "not-ready" and error.extra == {"retry_after": 1}
    assert str(registry.root) not in error.detail and "aliases" not in error.detail
