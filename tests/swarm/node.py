"""The Swarm suites leave the node as they found it: a one-node swarm a suite made is left again."""

from __future__ import annotations

from collections.abc import Callable

from tools import swarm


def network_exists(name: str) -> bool:
    return bool(swarm.docker("network", "ls", "-q", "--filter", f"name=^{name}$").split())


def leave_swarm_made_here(made_gwbridge: bool, log: Callable[[str], None]) -> bool:
    """Leave the swarm this suite created (and the docker_gwbridge network that came with it), unless
    someone deployed onto it meanwhile; True if left."""
    others = swarm.docker("service", "ls", "-q").split()
    if others:  # theirs now, leave it be
        log(f"not leaving the swarm: {len(others)} other service(s) run on it")
        return False
    swarm.docker("swarm", "leave", "--force")
    if made_gwbridge:
        swarm.docker("network", "rm", "docker_gwbridge", check=False)
    return True
