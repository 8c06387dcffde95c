"""Whether each node's agent answers this machine (``dockyard node ls``, ``node setup``):
a signed health call to every node at once, with a short timeout."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dockyard.agent.client import AgentClient, AgentError
from dockyard.backends.swarm.agents import (
    MANAGER_SERVICE,
    SERVICE,
    AgentSettings,
    is_named,
    key_file,
    read_cluster_key,
    task_error,
)
from dockyard.errors import RuntimeFailure

if TYPE_CHECKING:
    from dockyard.backends.swarm.runtime import SwarmRuntime
    from dockyard.runtime.base import Node

HEALTH_TIMEOUT = 5.0  # seconds for one agent to answer


def agent_health(
    runtime: SwarmRuntime, settings: AgentSettings | None = None, timeout: float = HEALTH_TIMEOUT
) -> dict[str, str]:
    """Each node's agent as this machine reaches it, by node id: ``ok``, or why not (not
    deployed, no key on this machine, its node down, or what its signed call met)."""
    settings = settings or AgentSettings.from_environment()
    api: Any = runtime.api
    nodes = runtime.nodes()
    with runtime._translated("reading dockyard's node agents"):
        deployed = all(
            any(is_named(s, name) for s in api.services(filters={"name": name}))
            for name in (SERVICE, MANAGER_SERVICE)
        )
    if not deployed:
        return {n.id: "not deployed (dockyard node setup)" for n in nodes}
    try:
        key = read_cluster_key(runtime)
    except RuntimeFailure:
        return {n.id: f"no key on this machine ({key_file(runtime)})" for n in nodes}

    def ask(node: Node) -> str:
        if not node.ready:
            return f"its node is {node.state}"
        address = f"{node.address}:{settings.port}"
        try:
            answer = AgentClient(address, key, node.id, timeout=timeout).health()
        except AgentError as exc:
            return task_error(runtime, node.id) or str(exc)[:120]
        if answer.get("node") != node.id:
            return f"an agent of another node answers at {address}"
        return "ok"

    with ThreadPoolExecutor(max_workers=min(len(nodes), 16) or 1) as asking:
        return dict(zip((n.id for n in nodes), asking.map(ask, nodes), strict=True))


__all__ = ["HEALTH_TIMEOUT", "agent_health"]
