"""``dockyard node ls``: the pool as dockyard sees it — each node's capacity and state, what
dockyard's containers (steps and services of every pipeline) hold on it now, and on a
cluster whether its node agent answers. ``dockyard node setup``: deploy or update what a
backend needs on its nodes (the Swarm's node agents and volume plugin) without a run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import click
from rich.markup import escape
from rich.table import Table

from dockyard.backends.choice import choose
from dockyard.cli.app import backend_option, cli, err, out
from dockyard.runtime.base import LABEL_CPUS, LABEL_MEMORY, LABEL_PIPELINE, ContainerInfo, Node
from dockyard.terminal import printable
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
    """List the nodes: capacity, what dockyard uses of it, state, containers, and on a
    cluster whether each node's agent answers."""
    chosen = choose(backend)
    runtime = chosen.runtime()
    try:
        uses = pool_use(runtime.nodes(), runtime.list({}))
        agents = dict(chosen.agents(runtime)) if chosen.agents else None
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
                **({"agent": agents.get(u.node.id, "no answer")} if agents is not None else {}),
            }
            for u in uses
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None, header_style="bold")
    columns = ["node", "id", "state", "cpus", "memory", "cpus used", "memory used", "running"]
    for column in columns + (["agent"] if agents is not None else []):
        table.add_column(column, no_wrap=column != "agent")
    for u in uses:
        row = [
            u.node.name,
            u.node.id[:12],
            u.node.state,
            f"{u.node.capacity.cpus:g}",
            format_memory(u.node.capacity.memory),
            f"{u.cpus:g}",
            format_memory(u.memory),
            str(len(u.instances)),
        ]
        if agents is not None:
            row.append(escape(printable(agents.get(u.node.id, "no answer"))))
        table.add_row(*row)
    out.print(table)


@node.command("setup")
@backend_option
def node_setup(backend: str | None) -> None:
    """Deploy or update what the backend needs on its nodes, without a run: on a Swarm,
    dockyard's node agent and volume plugin on every node (then ``docker run
    --volume-driver dockyard`` works on each). Waits until every agent answers."""
    chosen = choose(backend)
    if chosen.setup is None:
        out.print(f"the {chosen.name} backend needs nothing set up on its nodes")
        return
    runtime = chosen.runtime()
    try:
        chosen.setup(runtime, lambda line: err.print(escape(printable(line))))
        nodes = runtime.nodes()
        agents = dict(chosen.agents(runtime)) if chosen.agents else {}
    finally:
        runtime.close()
    for n in nodes:
        said = printable(f"{n.name}: agent {agents.get(n.id, 'no answer')}")
        out.print(escape(said))
