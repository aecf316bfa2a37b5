"""Deploy and remove the Docker Swarm stack (`make swarm-up` / `make swarm-down`), through the docker CLI.

    python -m tools.swarm up [--file swarm-stack.yml] [--stack propensity] [--init]   # deploy, wait healthy
    python -m tools.swarm status [--stack propensity]
    python -m tools.swarm down [--stack propensity]                                     # remove, wait gone

`up` never turns this machine into a swarm manager unless asked (`--init`, i.e. `make swarm-up
SWARM_INIT=1`). Swarm configs and secrets are immutable, so `up` names each one after a hash of its file
(the stack files read CONFIG_DIGEST_<KEY> / SECRET_DIGEST_<KEY>): a changed file is deployed under a new
name, which rolls the services that mount it, and an unchanged one is left alone. A service is converged
when as many of its tasks run as it asks for: Swarm counts a task with a healthcheck as running only once
it is healthy, and nothing is mid-update.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import yaml

from service.errors import PropensityError

STACK_LABEL = "com.docker.stack.namespace"
_REPLICAS = re.compile(r"^(\d+)/(\d+)")


class SwarmError(PropensityError):
    status = 500
    kind = "swarm"
    title = "Docker Swarm error"


def docker(*args: str, env: Mapping[str, str] | None = None, timeout: float = 120, check: bool = True) -> str:
    """Run the docker CLI; stdout, or SwarmError with docker's own message."""
    try:
        done = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except FileNotFoundError:
        raise SwarmError("docker not found: install docker.io (deploy/docker/ensure-dockerd.sh)") from None
    except subprocess.TimeoutExpired:
        raise SwarmError(f"`docker {' '.join(args)}` did not finish within {timeout:g}s") from None
    if check and done.returncode != 0:
        raise SwarmError(f"`docker {' '.join(args)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


# --- the swarm ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SwarmState:
    node_state: str  # inactive, pending, active, error, locked
    manager: bool

    @property
    def is_manager(self) -> bool:
        return self.node_state == "active" and self.manager


def swarm_state() -> SwarmState:
    out = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}").split()
    return SwarmState(out[0], out[1:] == ["true"])


def init_single_node() -> None:
    """A one-node swarm that listens on loopback only."""
    docker("swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", "127.0.0.1:2377")


def require_manager(*, init: bool) -> bool:
    """Make sure this node is a swarm manager; True if this call created the swarm."""
    state = swarm_state()
    if state.is_manager:
        return False
    if state.node_state == "active":
        raise SwarmError("this node is a swarm worker: deploy from a manager node")
    if not init:
        raise SwarmError(
            f"this node is not a swarm manager (swarm: {state.node_state}). Run `docker swarm init` "
            "yourself, or ask for a one-node swarm on loopback with `make swarm-up SWARM_INIT=1`"
        )
    init_single_node()
    return True


# --- deploy ---------------------------------------------------------------------------------------------
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose-file interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}..."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        value, op, arg = env.get(name), match["op"], match["arg"]
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op is not None and op.endswith("-"):
            return arg if missing else str(value)
        if op is not None and op.endswith("?") and missing:
            raise SwarmError(f"{name} is required: {arg}" if arg else f"{name} is required")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def digest_env(stack_file: Path, env: Mapping[str, str]) -> dict[str, str]:
    """CONFIG_DIGEST_<KEY> / SECRET_DIGEST_<KEY>: 12 hex digits of each config or secret file's sha256."""
    data = yaml.safe_load(stack_file.read_text()) or {}
    out = {}
    for section, prefix in (("configs", "CONFIG_DIGEST_"), ("secrets", "SECRET_DIGEST_")):
        for key, spec in (data.get(section) or {}).items():
            if isinstance(spec, dict) and spec.get("file"):
                path = Path(interpolate(str(spec["file"]), env))
                if not path.is_absolute():
                    path = stack_file.parent / path
                try:
                    content = path.read_bytes()
                except OSError as exc:
                    raise SwarmError(f"{section}.{key}: cannot read {path}: {exc.strerror}") from None
                out[prefix + key.upper()] = hashlib.sha256(content).hexdigest()[:12]
    return out


def deploy(
    stack_file: Path | Sequence[Path],
    stack: str,
    *,
    env: Mapping[str, str] | None = None,
    resolve_image: str = "always",
) -> dict[str, str]:
    """`docker stack deploy` with content-named configs and secrets; returns the environment it used.
    Several files merge in order, as the docker CLI merges them (e.g. swarm-stack.mlflow.yml over
    swarm-stack.yml)."""
    files = [stack_file] if isinstance(stack_file, Path) else list(stack_file)
    full = {**(env if env is not None else os.environ), "SWARM_STACK": stack}
    for file in files:
        full.update(digest_env(file, full))
    docker(
        "stack",
        "deploy",
        *[arg for file in files for arg in ("--compose-file", str(file))],
        "--resolve-image",
        resolve_image,
        "--prune",
        stack,
        env=full,
        timeout=300,
    )
    return full


# --- the docker socket proxy ----------------------------------------------------------------------------
DOCKER_PROXY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "swarm" / "docker-proxy.conf"
_STACK_FIELD = '{{index .Service.Labels "com.docker.stack.namespace"}}'
_LISTEN_FIELD = '{{env "DOCKER_PROXY_LISTEN"}}'
DOCKER_SOCKET = "/var/run/docker.sock"


def docker_proxy_conf(stack: str, listen: str, docker_socket: str = DOCKER_SOCKET) -> str:
    """deploy/swarm/docker-proxy.conf as Swarm's golang template driver renders it for a task of `stack`
    listening on `listen` (for nginx -t and the tests; a deploy leaves the rendering to Swarm)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", stack):
        raise SwarmError(f"stack name {stack!r}: letters, digits, _ and - only")
    text = DOCKER_PROXY_CONF.read_text()
    text = text.replace(_STACK_FIELD, stack).replace(_LISTEN_FIELD, listen)
    if "{{" in text:
        raise SwarmError(f"{DOCKER_PROXY_CONF} has a template field docker_proxy_conf() does not fill")
    if text.count(f"unix:{DOCKER_SOCKET}:") != 1:
        raise SwarmError(f"{DOCKER_PROXY_CONF} must proxy_pass to unix:{DOCKER_SOCKET} exactly once")
    return text.replace(f"unix:{DOCKER_SOCKET}:", f"unix:{docker_socket}:")


# --- state ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceState:
    name: str
    running: int
    desired: int
    update: str  # "" or the UpdateStatus.State: updating, completed, paused, rollback_started, ...

    @property
    def converged(self) -> bool:
        return self.running == self.desired and self.update not in {"updating", "rollback_started"}


def services(stack: str) -> list[ServiceState]:
    lines = docker(
        "service", "ls", "--filter", f"label={STACK_LABEL}={stack}", "--format", "{{.Name}}\t{{.Replicas}}"
    ).splitlines()
    out = []
    for line in lines:
        name, _, replicas = line.partition("\t")
        match = _REPLICAS.match(replicas.strip())
        if not match:
            raise SwarmError(f"unexpected replicas {replicas!r} for {name}")
        update = docker(
            "service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", name
        ).strip()
        out.append(ServiceState(name, int(match.group(1)), int(match.group(2)), update))
    return out


def wait_converged(
    stack: str, timeout: float = 300, *, log: Callable[[str], None] | None = None
) -> list[ServiceState]:
    """Until every service of the stack runs all the (healthy) tasks it asks for."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        states = services(stack)
        summary = ", ".join(
            f"{s.name} {s.running}/{s.desired}{' ' + s.update if s.update else ''}" for s in states
        )
        if log is not None and summary != last:
            log(summary)
            last = summary
        if states and all(s.converged for s in states):
            return states
        if time.monotonic() > deadline:
            raise SwarmError(f"stack {stack} not converged after {timeout:g}s: {summary or 'no services'}")
        time.sleep(1)


def leftovers(stack: str) -> dict[str, list[str]]:
    """Whatever of the stack still exists: services, containers, networks, configs, secrets."""
    label = f"label={STACK_LABEL}={stack}"
    found = {
        "services": docker("service", "ls", "-q", "--filter", label).split(),
        "containers": docker("ps", "-aq", "--filter", label).split(),
        "networks": docker("network", "ls", "-q", "--filter", label).split(),
        "configs": docker("config", "ls", "-q", "--filter", label).split(),
        "secrets": docker("secret", "ls", "-q", "--filter", label).split(),
    }
    return {kind: ids for kind, ids in found.items() if ids}


def remove(stack: str, timeout: float = 120, orphan_grace: float = 15) -> None:
    """`docker stack rm`, then wait until none of its containers, networks, configs or secrets is left.

    Containers still labelled with the stack `orphan_grace` seconds after its last service went are
    orphans (an engine killed mid-run leaves its task containers behind, and no service will ever reap
    them): they are force-removed. Only containers carrying this stack's label are touched."""
    deadline = time.monotonic() + timeout
    if leftovers(stack):
        docker("stack", "rm", stack, check=False)
    services_gone_at: float | None = None
    while left := leftovers(stack):
        now = time.monotonic()
        if now > deadline:
            raise SwarmError(f"stack {stack} not gone after {timeout:g}s: {left}")
        if "services" in left:
            services_gone_at = None
        elif services_gone_at is None:
            services_gone_at = now
        elif "containers" in left and now - services_gone_at >= orphan_grace:
            docker("rm", "--force", *left["containers"], check=False)
        if "services" not in left and "containers" not in left:
            docker("stack", "rm", stack, check=False)  # networks/configs/secrets freed only now
        time.sleep(1)


# --- CLI: `python -m tools.swarm ...` (make swarm-up / swarm-status / swarm-down) --------------------------
cli = typer.Typer(help="The Docker Swarm stack: deploy, status, remove.", no_args_is_help=True)
StackName = Annotated[str, typer.Option(help="stack name (services are <stack>_api, <stack>_nginx, ...)")]


def _fail(exc: PropensityError) -> None:
    typer.echo(f"error: {exc.detail}", err=True)
    raise typer.Exit(1)


@cli.command("up")
def cli_up(
    file: Annotated[
        list[Path] | None,
        typer.Option(help="stack file; repeated: merged in order (default swarm-stack.yml)"),
    ] = None,
    stack: StackName = "propensity",
    init: Annotated[
        bool, typer.Option(help="make a one-node swarm on loopback if this node is none")
    ] = False,
    resolve_image: Annotated[
        str, typer.Option(help="always: pin image digests from the registry; never: local images only")
    ] = "always",
    wait: Annotated[bool, typer.Option(help="wait until every service runs all its healthy tasks")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 300,
) -> None:
    """Deploy (or update) the stack; with --wait, return once every task is healthy."""
    try:
        if require_manager(init=init):
            typer.echo("initialised a one-node swarm on 127.0.0.1 (`docker swarm leave --force` undoes it)")
        started = time.monotonic()
        files = file or [Path("swarm-stack.yml")]
        deploy(files, stack, resolve_image=resolve_image)
        typer.echo(f"deployed {' + '.join(map(str, files))} as stack {stack}")
        if wait:
            wait_converged(stack, timeout, log=lambda s: typer.echo(f"  {s}"))
            typer.echo(f"stack {stack} converged in {time.monotonic() - started:.0f}s")
    except PropensityError as exc:
        _fail(exc)


@cli.command("status")
def cli_status(stack: StackName = "propensity") -> None:
    """Every service of the stack: running/desired tasks and update state."""
    try:
        for s in services(stack):
            typer.echo(f"{s.name:<32} {s.running}/{s.desired}  {s.update or '-'}")
    except PropensityError as exc:
        _fail(exc)


@cli.command("down")
def cli_down(
    stack: StackName = "propensity",
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 120,
) -> None:
    """Remove the stack and wait until its containers, networks, configs and secrets are gone."""
    try:
        if not swarm_state().is_manager:
            typer.echo("not a swarm manager: no stack to remove")
            return
        remove(stack, timeout)
        typer.echo(f"stack {stack} removed")
    except PropensityError as exc:
        _fail(exc)


if __name__ == "__main__":
    cli()
