"""Named volumes on a Swarm, as dockyard (on the machine that submits) sees them: kept by
the node agents (:mod:`dockyard.agent.node_volumes`), their leases in Swarm's store
(:mod:`dockyard.agent.leases`), reached through the agents.

- A step or service that **writes** a volume mounts it through the agents' volume plugin
  (``volume-driver=dockyard``): the mount on its node takes the lease. Before its container
  is created, the worker has the node *pre-copy* the volume's published snapshot (only
  what the node lacks), so that the mount itself copies at most the increment left by a
  writer that ended since.
- A step that only **reads** a volume binds, read-only, the volume's published snapshot on
  its node (fetched there first): it needs no lease, so readers run on any node at once,
  beside a writer, and see one consistent snapshot.
- What a volume holds, for cache keys, is the uuid of its published snapshot (every last
  unmount publishes one).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.leases import Lease, LeaseError
from dockyard.agent.volume_routes import RemoteLeases, Unavailable
from dockyard.backends.swarm.ports import AgentPool
from dockyard.disk.volumes import Snapshot, VolumeInfo, VolumeStore, check_name
from dockyard.errors import InvalidInput, RuntimeFailure, UnknownReference
from dockyard.execution.ports import NodeUnavailable, Placement
from dockyard.runtime.base import Bind
from dockyard.state.hashing import InputHasher

DRIVER = "dockyard"
SNAPSHOT = "snapshot:"  # a digest that names the published snapshot
PUBLISH_WAIT = 30.0  # seconds for a writer's last unmount to publish its snapshot


class SwarmVolumes:
    def __init__(
        self,
        pool: AgentPool,
        managers: Callable[[], dict[str, str]],
        provide: Callable[[Path, str], str] | None = None,
        local: VolumeStore | None = None,
        replicas: int = 1,
        names: Callable[[], dict[str, str]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], float] = time.time,
    ):
        self.clock, self.sleep, self.wall = clock, sleep, wall  # (waits, naps, published times)
        self.names = names or (lambda: {})  # node ids: their host names (for people)
        self.pool = pool
        self.managers = managers  # the manager nodes' agents (they keep the leases), by id
        self.provide = provide  # a file or folder of this machine, kept on a node
        self.local = local or VolumeStore()  # (only its run locks)
        self.replicas = replicas

    # -- leases -------------------------------------------------------------------------------

    def leases(self) -> RemoteLeases:
        managers = self.managers()
        if not managers:
            raise RuntimeFailure(
                "no manager node of the swarm is up: the volume leases are kept there"
            )
        return RemoteLeases(managers, self.pool.key, node="")

    def _lease(self, name: str) -> Lease:
        return self._lease_and_nodes(name)[0]

    def _lease_and_nodes(self, name: str) -> tuple[Lease, dict[str, str]]:
        """The volume's lease, and the agents of the nodes that are up (drained or paused
        ones too: they keep what they kept), by node id."""
        try:
            lease, nodes = self.leases().get(check_name(name))
        except (Unavailable, LeaseError) as exc:
            raise RuntimeFailure(f"volume {name!r}: {exc}") from None
        if lease is None:
            raise UnknownReference(f"no volume {name!r} on the swarm")
        return lease, nodes

    # -- the port -----------------------------------------------------------------------------

    def ensure(self, name: str, seed: Path | None = None) -> None:
        try:
            lease = self.leases().create(check_name(name))
        except (Unavailable, LeaseError) as exc:
            raise RuntimeFailure(f"volume {name!r}: {exc}") from None
        if seed is None or lease.epoch or lease.snapshot or lease.held:
            return
        if self.provide is None:
            raise InvalidInput(f"volume {name!r}: a seed needs the run's work folders")
        node = sorted(self.pool.addresses())[0]
        kept = self.provide(seed, node)  # (checked by digest on the node)
        self._call(node, "volumes/seed", {"volume": name, "digest": Path(kept).name})

    def hold(self, name: str, *, exclusive: bool, wait: bool = False) -> Any:
        # (runs from this machine; on the nodes, each mount holds its lease)
        return self.local.lock(check_name(name), exclusive=exclusive, wait=wait)

    def exists(self, name: str) -> bool:
        try:
            self._lease(name)
        except UnknownReference:
            return False
        return True

    def all(self) -> list[VolumeInfo]:
        return [self._info(placed) for placed in self.placements()]

    def inspect(self, name: str) -> VolumeInfo:
        return self._info(self.placement(name))

    def snapshots(self, name: str) -> list[Snapshot]:
        lease, nodes = self._lease_and_nodes(name)
        for node in (lease.owner, *lease.holders):
            if node in nodes:
                answer = self._call(node, "volumes/have", {"volume": name}, nodes[node])
                return [Snapshot(**fields) for fields in answer["have"]]
        return []

    def snapshot(self, name: str, tag: str | None = None) -> Snapshot:
        """The published snapshot: on a swarm, every last unmount takes one."""
        if tag is not None:
            raise InvalidInput("snapshot tags are not kept on the swarm (yet): leave out --tag")
        lease = self._published(name)
        found = [s for s in self.snapshots(name) if s.uuid == lease.snapshot]
        return found[0] if found else Snapshot(0, None, lease.published, 0, 0, 0, lease.snapshot)

    def remove(self, name: str) -> None:
        lease, nodes = self._lease_and_nodes(name)
        if lease.held:
            raise InvalidInput(
                f"volume {name!r} is mounted on node {lease.owner[:12]}: stop what uses it first"
            )
        self.leases().remove(name)
        for node in nodes:
            with contextlib.suppress(RuntimeFailure):
                self._call(node, "volumes/drop", {"volume": name}, nodes[node])

    def digest(self, name: str, hasher: InputHasher, *, settled: bool = False) -> str:
        """The published snapshot's uuid: what a reader binds (while a writer holds the
        volume too). ``settled``: once the writer that just ended has published; a volume
        still held then (a service, or another writer beside it) is a key that matches
        nothing later."""
        lease = self._published(name) if settled else self._lease(name)
        if settled and lease.held:
            return f"held:{lease.owner}:{lease.epoch}"
        return f"{SNAPSHOT}{lease.snapshot or 'empty'}"

    def settle(self, name: str) -> None:
        self._published(name)

    def mount(
        self, name: str, target: str, readonly: bool, node: str, version: str | None = None
    ) -> Bind:
        if readonly:
            lease, nodes = self._lease_and_nodes(name)
            wanted = lease.snapshot
            if version is not None and version.startswith(SNAPSHOT):  # what its key holds
                wanted = version.removeprefix(SNAPSHOT).replace("empty", "")
            if not wanted:  # never written: an empty folder
                return Bind(self._empty(node), target, readonly=True)
            sources = self._holders(lease, node, nodes)
            if wanted != lease.snapshot:  # (an older one: any node may keep it still)
                sources |= {n: a for n, a in nodes.items() if n != node}
            body = {"volume": name, "snapshot": wanted, "sources": sources}
            return Bind(self._call(node, "volumes/read", body)["path"], target, readonly=True)
        lease, nodes = self._free_for(name, node)
        if lease.snapshot:
            self._pre_copy(name, lease, node, nodes)
        return Bind(name, target, readonly=False, driver=DRIVER)

    # -- the swarm's own ----------------------------------------------------------------------

    def placements(self) -> list[Placement]:
        try:
            leases = self.leases().all()
        except (Unavailable, LeaseError) as exc:
            raise RuntimeFailure(f"the volumes' leases: {exc}") from None
        return [self._placement(lease) for lease in leases]

    def placement(self, name: str) -> Placement:
        return self._placement(self._lease(name))

    def node_names(self) -> dict[str, str]:
        return self.names()

    def node(self, given: str) -> str:
        """The id of the node that is up that ``given`` names (its id, an id's first
        characters, or its host name)."""
        up = self.pool.addresses()
        names = self.names()
        found = [n for n in up if n == given or names.get(n) == given]
        found = found or [n for n in up if len(given) >= 4 and n.startswith(given)]
        if len(found) != 1:
            raise InvalidInput(
                f"{given!r} names {'no' if not found else 'more than one'} node that is up "
                "(see `dockyard node ls --backend swarm`)"
            )
        return found[0]

    def move(self, name: str, node: str) -> Placement:
        """Put the volume on ``node`` ahead of its next user there: pre-copy its published
        snapshot, then hand its lease over (refused while it is mounted elsewhere)."""
        lease, nodes = self._lease_and_nodes(name)
        if lease.held and lease.owner != node:
            raise InvalidInput(
                f"volume {name!r} is mounted on node {lease.owner[:12]}: it moves once unmounted"
            )
        if lease.snapshot:
            self._pre_copy(name, lease, node, nodes)
        try:
            if lease.snapshot:
                self.leases().holder(name, lease.snapshot, node)
            return self._placement(self.leases().hand(name, node))
        except (Unavailable, LeaseError) as exc:
            raise RuntimeFailure(f"volume {name!r}: {exc}") from None

    # -- inside -------------------------------------------------------------------------------

    def _free_for(self, name: str, node: str) -> tuple[Lease, dict[str, str]]:
        """The lease once no other node that is up holds it (a writer that ended elsewhere
        publishes a moment after its container ends), and the nodes that are up; after
        :data:`PUBLISH_WAIT`, as it is (the mount then says who holds it)."""
        deadline = self.clock() + PUBLISH_WAIT
        lease, nodes = self._lease_and_nodes(name)
        while lease.held and lease.owner != node and lease.owner in nodes:
            if self.clock() > deadline:
                break
            self.sleep(0.2)
            lease, nodes = self._lease_and_nodes(name)
        return lease, nodes

    def _published(self, name: str) -> Lease:
        """The lease once a writer that ended has published (waits a little for that)."""
        deadline = self.clock() + PUBLISH_WAIT
        lease = self._lease(name)
        while lease.held and self.clock() < deadline:
            self.sleep(0.2)
            lease = self._lease(name)
        return lease

    def _placement(self, lease: Lease) -> Placement:
        replicas = tuple(h for h in lease.holders if h != lease.owner)
        waiting = lease.snapshot and len(replicas) < self.replicas and not lease.held
        lag = max(0.0, self.wall() - lease.published) if waiting else 0.0
        return Placement(
            lease.volume,
            lease.owner,
            lease.held,
            lease.epoch,
            lease.snapshot,
            lease.published,
            replicas,
            lag,
        )

    def _info(self, placed: Placement) -> VolumeInfo:
        snaps = self.snapshots(placed.volume) if placed.snapshot else []
        published = next((s for s in snaps if s.uuid == placed.snapshot), None)
        return VolumeInfo(
            placed.volume,
            f"node {placed.node[:12]}" if placed.node else "(no node yet)",
            placed.published,
            published.files if published else 0,
            published.bytes if published else 0,
            len(snaps),
        )

    def _pre_copy(self, name: str, lease: Lease, node: str, nodes: dict[str, str]) -> None:
        """Have ``node`` keep the published snapshot (what it lacks of it), so that a mount
        there copies at most what a writer leaves before it."""
        sources = self._holders(lease, node, nodes)
        body = {"volume": name, "snapshot": lease.snapshot, "sources": sources}
        self._call(node, "volumes/pull", body)

    @staticmethod
    def _holders(lease: Lease, node: str, nodes: dict[str, str]) -> dict[str, str]:
        """The nodes up (but ``node``) that keep the published snapshot: their agents."""
        return {h: nodes[h] for h in lease.holders if h in nodes and h != node}

    def _empty(self, node: str) -> str:
        if self.provide is None:
            raise InvalidInput("an empty volume read on the swarm needs the run's work folders")
        with _empty_folder() as empty:
            return self.provide(empty, node)

    def _call(
        self, node: str, route: str, body: dict[str, Any], address: str | None = None
    ) -> dict[str, Any]:
        """A call to ``node``'s agent (at ``address``, or where the pool says it is)."""
        client = AgentClient(address, self.pool.key, node) if address else self.pool.client(node)
        try:
            return client.call("POST", route, body)
        except AgentError as exc:
            if exc.status is None:  # (no answer: the node is away)
                raise NodeUnavailable(f"node {node[:12]}: {exc}") from None
            raise RuntimeFailure(f"node {node[:12]}: {exc}") from None


@contextlib.contextmanager
def _empty_folder() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dockyard-empty-") as folder:
        yield Path(folder)


__all__ = ["DRIVER", "SwarmVolumes"]
