"""`dockyard node ls`: what dockyard's running containers hold on each node."""

from __future__ import annotations

from dockyard.cli.node import pool_use
from dockyard.runtime.base import (
    LABEL_CPUS,
    LABEL_MEMORY,
    LABEL_PIPELINE,
    ContainerInfo,
    HostCapacity,
    Node,
)

NODES = [
    Node("n1", "one", HostCapacity(2, 4096)),
    Node("n2", "two", HostCapacity(2, 4096), state="down"),
]


def container(name: str, node: str, state: str = "running", **labels: str) -> ContainerInfo:
    return ContainerInfo(name, name, {LABEL_PIPELINE: "p", **labels}, state, node)


def test_running_containers_of_dockyard_count_on_their_node() -> None:
    uses = pool_use(
        NODES,
        [
            container("a", "n1", **{LABEL_CPUS: "0.5", LABEL_MEMORY: "100"}),
            container("b", "n1", **{LABEL_CPUS: "1", LABEL_MEMORY: "200"}),
            container("c", "n2", **{LABEL_CPUS: "1", LABEL_MEMORY: "300"}),
            container("ended", "n1", state="exited", **{LABEL_CPUS: "1", LABEL_MEMORY: "1"}),
            ContainerInfo("other", "other", {}, "running", "n1"),  # not dockyard's
            container("elsewhere", "n9", **{LABEL_CPUS: "1", LABEL_MEMORY: "1"}),
        ],
    )
    by_node = {u.node.id: (u.cpus, u.memory, sorted(u.instances)) for u in uses}
    assert by_node == {"n1": (1.5, 300, ["a", "b"]), "n2": (1.0, 300, ["c"])}
