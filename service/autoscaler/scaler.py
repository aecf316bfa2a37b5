"""Reading and setting the api service's replica count: the Docker Engine API, or an in-memory stand-in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Replicas:
    spec: int  # what the service asks Swarm to run
    running: int | None = None  # tasks running now (None = unknown)


class ScalerError(Exception):
    """The service could not be read or updated."""


class Scaler(Protocol):
    def replicas(self) -> Replicas: ...

    def scale(self, replicas: int) -> None: ...


@dataclass
class MemoryScaler:
    """A service that exists only in memory, for `static_replicas` simulations and the loop's tests.

    Every scale() call is recorded; `running` follows `spec` at once.
    """

    spec: int
    calls: list[int] = field(default_factory=list)

    def replicas(self) -> Replicas:
        return Replicas(self.spec, self.spec)

    def scale(self, replicas: int) -> None:
        self.calls.append(replicas)
        self.spec = replicas


class DockerScaler:
    """A replicated Swarm service, through the docker SDK (the Engine must be a swarm manager).

    The service is looked up afresh for every call, so `scale()` sends the current spec version: if someone
    else changed the service in between, the Engine refuses the update ("update out of sequence") and the
    next decision retries with fresh data. Only the replica count changes; the rest of the spec is kept.
    """

    def __init__(self, service: str, *, base_url: str | None = None, timeout: float = 10.0) -> None:
        self.service = service
        self.base_url = base_url
        self.timeout = timeout
        self._client: Any = None

    def _get(self) -> Any:
        import docker
        from docker.errors import DockerException, NotFound

        try:
            if self._client is None:
                self._client = (
                    docker.DockerClient(base_url=self.base_url, timeout=int(self.timeout))
                    if self.base_url
                    else docker.from_env(timeout=int(self.timeout))
                )
            return self._client.services.get(self.service)
        except NotFound as exc:
            raise ScalerError(f"no service {self.service!r} (is the stack deployed?)") from exc
        except (DockerException, OSError) as exc:
            self._client = None
            raise ScalerError(f"docker engine: {exc}") from exc

    def replicas(self) -> Replicas:
        from docker.errors import DockerException

        svc = self._get()
        mode = svc.attrs["Spec"]["Mode"]
        if "Replicated" not in mode:
            raise ScalerError(f"service {self.service!r} is not replicated ({', '.join(mode)})")
        spec = int(mode["Replicated"].get("Replicas", 0))
        try:
            tasks = svc.tasks(filters={"desired-state": "running"})
        except (DockerException, OSError) as exc:
            raise ScalerError(f"docker engine: {exc}") from exc
        running = sum(1 for t in tasks if t.get("Status", {}).get("State") == "running")
        return Replicas(spec, running)

    def scale(self, replicas: int) -> None:
        from docker.errors import DockerException

        svc = self._get()
        try:
            svc.scale(replicas)
        except (DockerException, OSError) as exc:
            raise ScalerError(f"scaling {self.service!r} to {replicas}: {exc}") from exc
