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


def task_filters(service: str) -> dict[str, str]:
    """GET /tasks filters: the service's tasks that should run. The socket proxy matches the query string the
    docker SDK makes of exactly this dict (keys in this order), so change both together."""
    return {"service": service, "desired-state": "running"}


class DockerScaler:
    """A replicated Swarm service, through the docker SDK (the Engine must be a swarm manager).

    The service is looked up afresh for every call, so `scale()` sends the current spec version: if someone
    else changed the service in between, the Engine refuses the update ("update out of sequence") and the
    next decision retries with fresh data. Only the replica count changes; the rest of the spec is kept.

    Every call names the service by its name, never by its id: in the stacks the Engine is reached through
    a socket proxy (deploy/swarm/docker-proxy.conf) that passes exactly these calls for this one service,
    by name: GET /version, GET /services/<name>, GET /tasks?filters=<task_filters(name)>,
    POST /services/<name>/update?version=N.
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
            tasks = self._client.api.tasks(filters=task_filters(self.service))
        except (DockerException, OSError) as exc:
            raise ScalerError(f"docker engine: {exc}") from exc
        running = sum(1 for t in tasks if t.get("Status", {}).get("State") == "running")
        return Replicas(spec, running)

    def scale(self, replicas: int) -> None:
        from docker.errors import DockerException
        from docker.types import ServiceMode

        svc = self._get()
        if "Replicated" not in svc.attrs["Spec"]["Mode"]:
            raise ScalerError(f"service {self.service!r} is not replicated")
        # The spec as the Engine stores it, only the replica count changed (what `docker service scale`
        # sends). Not svc.scale(): it posts back a spec read with insertDefaults, which differs from the
        # stored one, and Swarm then replaces every task (on the e2e stack: 10 s with no task listening).
        spec = svc.attrs["Spec"]
        try:
            self._client.api.update_service(
                self.service,  # by name: the proxy knows the name, not the id
                svc.version,
                task_template=spec["TaskTemplate"],
                name=spec["Name"],
                labels=spec.get("Labels"),
                mode=ServiceMode("replicated", replicas),
                update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"),
                endpoint_spec=spec.get("EndpointSpec"),
            )
        except (DockerException, OSError) as exc:
            raise ScalerError(f"scaling {self.service!r} to {replicas}: {exc}") from exc
