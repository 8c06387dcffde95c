"""``dockyard node ls``: the pool as dockyard sees it — each node's capacity and state, and
what dockyard's containers (steps and services of every pipeline) hold on it now."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import click
from rich.table import Table

from dockyard.backend import choose
from dockyard.cli.app import backend_option, cli, out
from dockyard.runtime.base import LABEL_CPUS, LABEL_MEMORY, LABEL_PIPELINE, ContainerInfo, Node
from dockyard.units import format_memory


@dataclass
class NodeUse:
    node: Node
    cpus: float = 0.0
    memory: int = 0
    instances: list[str] = field(default_factory=list)


def pool_use(nodes: list[Node], containers: list[ContainerInfo]) -> list[NodeUse]:
    """What the running containers hold on each node (by the resources they were given)."""
    uses = {node.id: NodeUse(node) for node in nodes}
    for container in containers:
        use = uses.get(container.node)
        if use is None or not container.running or LABEL_PIPELINE not in container.labels:
            continue
        use.cpus += float(container.labels.get(LABEL_CPUS) or 0)
        use.memory += int(container.labels.get(LABEL_MEMORY) or 0)
        use.instances.append(container.name)
    return list(uses.values())


@cli.group()
def node() -> None:
    """The machines dockyard runs on."""


@node.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@backend_option
def node_ls(as_json: bool, backend: str | None) -> None:
    """List the nodes: capacity, what dockyard uses of it, state, containers."""
    runtime = choose(backend).runtime()
    try:
        uses = pool_use(runtime.nodes(), runtime.list({}))
    finally:
        runtime.close()
    if as_json:
        rows = [
            {
                "id": u.node.id,
                "name": u.node.name,
                "state": u.node.state,
                "cpus": u.node.capacity.cpus,
                "memory": u.node.capacity.memory,
                "cpus_used": u.cpus,
                "memory_used": u.memory,
                "containers": sorted(u.instances),
            }
            for u in uses
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for column in ("node", "id", "state", "cpus", "memory", "cpus used", "memory used", "running"):
        table.add_column(column, no_wrap=True)
    for u in uses:
        table.add_row(
            u.node.name,
            u.node.id[:12],
            u.node.state,
            f"{u.node.capacity.cpus:g}",
            format_memory(u.node.capacity.memory),
            f"{u.cpus:g}",
            format_memory(u.memory),
            str(len(u.instances)),
        )
    out.print(table)
