"""The Docker scaler's failure paths with the real docker SDK (read-only; scaling itself is exercised by the
Swarm suite, tests/swarm), and the in-memory service."""

from __future__ import annotations

import gc
import uuid
import warnings
from collections.abc import Iterator

import pytest

from service.autoscaler.scaler import DockerScaler, MemoryScaler, Replicas, ScalerError
from tests.conftest import free_port


def test_an_unreachable_engine_is_a_scaler_error() -> None:
    scaler = DockerScaler("propensity_api", base_url=f"tcp://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ScalerError, match="docker engine"):
        scaler.replicas()
    with pytest.raises(ScalerError, match="docker engine"):
        scaler.scale(3)


@pytest.fixture
def docker_socket_collected() -> Iterator[None]:
    """docker-py leaves its unix socket open when no engine listens there (its UnixHTTPConnection.connect
    does not close the socket when connect() fails). Collect it when the test ends, its ResourceWarning
    ignored, so that the leak is neither an error here nor blamed on whichever test runs the next GC."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.usefixtures("docker_socket_collected")
def test_a_missing_service_is_a_scaler_error() -> None:
    """This machine's engine: no such service (or no swarm, or no engine), never another exception."""
    scaler = DockerScaler(f"propensity-test-{uuid.uuid4().hex[:8]}_api", timeout=5)
    with pytest.raises(ScalerError):
        scaler.replicas()


def test_memory_scaler_records_and_follows() -> None:
    scaler = MemoryScaler(2)
    scaler.scale(4)
    scaler.scale(3)
    assert scaler.calls == [4, 3]
    assert scaler.replicas() == Replicas(3, 3)
