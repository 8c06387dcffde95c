"""The agents' calls for volumes: leases (served by the agents on manager nodes, which
reach Swarm's store), and snapshots between nodes (served by every agent).

``leases/*``   take, give back, release, add a holder, read, make, remove, hand over
``volumes/*``  which snapshots a node keeps; send one (a stream, :mod:`.frames`); pull one
               from another node (replication, pre-copy); drop a removed volume; list

Every call is signed with the cluster key like the others (:mod:`dockyard.agent.auth`). A
node names itself in the lease calls: the key is the cluster's, so an agent that has it is
trusted to say which node it is (as Swarm trusts a node with its join token).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from dockyard.agent import layout
from dockyard.agent import leases as rules
from dockyard.agent.client import AgentClient, AgentError
from dockyard.agent.leases import Lease, LeaseError, LeaseStore
from dockyard.errors import AgentFailure

if TYPE_CHECKING:
    from dockyard.agent.node_store import NodeStore
    from dockyard.agent.node_volumes import NodeVolumes


class Unavailable(AgentFailure):
    """No agent could answer for the leases (no manager's agent answers)."""


@dataclass(frozen=True)
class LocalLeases:
    """:class:`~dockyard.agent.leases.LeaseAccess` on a manager's agent: the lease rules
    applied to Swarm's store, for ``node`` (the manager itself, or, through the routes,
    the node that asks: :meth:`as_node`)."""

    store: LeaseStore
    port: int  # the agents' port (the same on every node)
    node: str
    clock: Callable[[], float]

    def as_node(self, node: str) -> LocalLeases:
        return dataclasses.replace(self, node=node)

    def nodes(self) -> dict[str, str]:
        return {node: f"{address}:{self.port}" for node, address in self.store.nodes().items()}

    def _change(self, volume: str, rule: Callable[[Lease], Lease]) -> Lease:
        return rules.change(self.store, volume, rule)

    def take(self, volume: str) -> tuple[Lease, dict[str, str]]:
        def rule(lease: Lease) -> Lease:
            gone = lease.held and lease.owner != self.node and self.store.gone(lease.owner)
            return rules.taken(lease, self.node, gone)

        return self._change(volume, rule), self.nodes()

    def give_back(self, volume: str, epoch: int) -> Lease:
        return self._change(volume, lambda lease: rules.given_back(lease, self.node, epoch))

    def releasing(self, volume: str, epoch: int) -> Lease:
        return self._change(volume, lambda lease: rules.releasing(lease, self.node, epoch))

    def release(self, volume: str, epoch: int, snapshot: str) -> Lease:
        now = self.clock()
        return self._change(
            volume, lambda lease: rules.released(lease, self.node, epoch, snapshot, now)
        )

    def holder(self, volume: str, snapshot: str, node: str) -> Lease:
        return self._change(volume, lambda lease: rules.with_holder(lease, snapshot, node))

    def seeded(self, volume: str, snapshot: str) -> Lease:
        now = self.clock()
        return self._change(volume, lambda lease: rules.seeded(lease, self.node, snapshot, now))

    def hand(self, volume: str, node: str) -> Lease:
        return self._change(volume, lambda lease: rules.handed(lease, node))

    def unhold(self, volume: str) -> Lease:
        return self._change(volume, lambda lease: rules.without_holder(lease, self.node))

    def get(self, volume: str) -> tuple[Lease | None, dict[str, str]]:
        return self.store.get(volume), self.nodes()

    def all(self) -> list[Lease]:
        return self.store.all()

    def create(self, volume: str) -> Lease:
        return self.store.get(volume) or self.store.create(volume)

    def remove(self, volume: str) -> None:
        self.store.remove(volume)


REFUSALS: dict[str, type[LeaseError]] = {
    "Fenced": rules.Fenced,
    "Held": rules.Held,
    "Releasing": rules.Releasing,
    "NoSuchVolume": rules.NoSuchVolume,
}


@dataclass
class RemoteLeases:
    """:class:`~dockyard.agent.leases.LeaseAccess` on any other node (and on the machine
    that runs dockyard): through the agent of a manager, each in turn until one answers;
    that agent applies the rules as :class:`LocalLeases`."""

    managers: dict[str, str]  # node id: agent address
    key: bytes
    node: str

    def _call(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        problems = []
        for manager, address in self.managers.items():
            try:
                return AgentClient(address, self.key, manager, timeout=30.0).call(
                    "POST", f"leases/{route}", body
                )
            except AgentError as exc:
                if exc.status == 409:  # the rules refused: said as it is, of its kind
                    kind = REFUSALS.get(exc.kind or "", LeaseError)
                    raise kind(str(exc).split(": ", 1)[-1]) from None
                problems.append(f"{manager[:12]}: {exc}")
        raise Unavailable(
            "no manager's agent answers for the volume leases: " + "; ".join(problems)
        )

    def take(self, volume: str) -> tuple[Lease, dict[str, str]]:
        answer = self._call("take", {"volume": volume, "node": self.node})
        return Lease.from_json(answer["lease"]), dict(answer["nodes"])

    def give_back(self, volume: str, epoch: int) -> Lease:
        body = {"volume": volume, "node": self.node, "epoch": epoch}
        return Lease.from_json(self._call("give_back", body)["lease"])

    def releasing(self, volume: str, epoch: int) -> Lease:
        body = {"volume": volume, "node": self.node, "epoch": epoch}
        return Lease.from_json(self._call("releasing", body)["lease"])

    def release(self, volume: str, epoch: int, snapshot: str) -> Lease:
        body = {"volume": volume, "node": self.node, "epoch": epoch, "snapshot": snapshot}
        return Lease.from_json(self._call("release", body)["lease"])

    def holder(self, volume: str, snapshot: str, node: str) -> Lease:
        body = {"volume": volume, "snapshot": snapshot, "node": node}
        return Lease.from_json(self._call("holder", body)["lease"])

    def seeded(self, volume: str, snapshot: str) -> Lease:
        body = {"volume": volume, "node": self.node, "snapshot": snapshot}
        return Lease.from_json(self._call("seeded", body)["lease"])

    def hand(self, volume: str, node: str) -> Lease:
        return Lease.from_json(self._call("hand", {"volume": volume, "node": node})["lease"])

    def unhold(self, volume: str) -> Lease:
        return Lease.from_json(self._call("unhold", {"volume": volume, "node": self.node})["lease"])

    def get(self, volume: str) -> tuple[Lease | None, dict[str, str]]:
        answer = self._call("get", {"volume": volume})
        found = answer["lease"]
        return (Lease.from_json(found) if found else None), dict(answer["nodes"])

    def all(self) -> list[Lease]:
        return [Lease.from_json(f) for f in self._call("all", {})["leases"]]

    def create(self, volume: str) -> Lease:
        return Lease.from_json(self._call("create", {"volume": volume})["lease"])

    def remove(self, volume: str) -> None:
        self._call("remove", {"volume": volume})


@dataclass
class AgentPeers:
    """:class:`~dockyard.agent.node_volumes.Peers` through the other nodes' agents."""

    key: bytes

    @contextlib.contextmanager
    def open_send(
        self, node: str, address: str, volume: str, snapshot: str, have: list[str]
    ) -> Iterator[BinaryIO]:
        body = {"volume": volume, "snapshot": snapshot, "have": have}
        with AgentClient(address, self.key, node).stream("volumes/send", body) as inp:
            yield inp  # type: ignore[misc]  # (read as a file: read and readline)

    def pull(
        self, node: str, address: str, volume: str, snapshot: str, sources: dict[str, str]
    ) -> None:
        body = {"volume": volume, "snapshot": snapshot, "sources": sources}
        AgentClient(address, self.key, node).call("POST", "volumes/pull", body)


# -- the routes -------------------------------------------------------------------------------


class Refusal(AgentFailure):
    def __init__(self, status: int, message: str, kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind  # (a lease rule's refusal: its class, for the caller to raise again)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise Refusal(400, f"{name}: a non-empty string")
    return value


def _number(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Refusal(400, f"{name}: a whole number")
    return value


def _service(store: NodeStore) -> LocalLeases:
    if store.leases is None:
        raise Refusal(503, "this node's agent keeps no leases (the node is not a manager)")
    return store.leases


def _asker(leases: LocalLeases, body: dict[str, Any]) -> LocalLeases:
    """The leases for the node that asks: it names itself (see the top), always."""
    return leases.as_node(_text(body, "node"))


def _volumes(store: NodeStore) -> NodeVolumes:
    if store.volumes is None:
        raise Refusal(503, "this agent keeps no volumes")
    return store.volumes


def _lease_call(call: Callable[[LocalLeases, dict[str, Any]], Lease | None]) -> Any:
    def route(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
        leases = _service(store)
        try:
            lease = call(leases, body)
        except LeaseError as exc:
            raise Refusal(409, str(exc), type(exc).__name__) from None
        return {"lease": lease.to_json() if lease else None, "nodes": leases.nodes()}

    return route


def _sources(body: dict[str, Any]) -> dict[str, str]:
    sources = body.get("sources")
    if not isinstance(sources, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sources.items()
    ):
        raise Refusal(400, "sources: node ids and their agents' addresses")
    return sources


def _pull(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    volume, snapshot = _text(body, "volume"), _text(body, "snapshot")
    snap = _volumes(store).pull(volume, snapshot, _sources(body))
    return {"snapshot": snap.uuid}


def _read(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    volume, snapshot = _text(body, "volume"), _text(body, "snapshot")
    return {"path": str(_volumes(store).read(volume, snapshot, _sources(body)))}


def _seed(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    """A new volume's first content: a tree this node keeps (sent as an input)."""
    digest = layout.check_digest(body.get("digest"))
    tree = store.outputs() / digest
    if not tree.is_dir():
        raise Refusal(404, f"no tree {digest[:12]} on this node")
    snap = _volumes(store).seed(_text(body, "volume"), tree)
    return {"snapshot": snap.uuid}


def _have(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    volumes = _volumes(store)
    name = _text(body, "volume")
    snaps = [dataclasses.asdict(s) for s in volumes.have(name)]
    return {"have": snaps, "mounted": volumes.mounted(name)}


def _drop(store: NodeStore, body: dict[str, Any]) -> dict[str, Any]:
    _volumes(store).drop(_text(body, "volume"))
    return {}


def send_stream(store: NodeStore, body: dict[str, Any]) -> Callable[[BinaryIO], object]:
    """The writer of ``volumes/send`` (checked before the answer starts)."""
    have = body.get("have")
    if not isinstance(have, list) or not all(isinstance(h, str) for h in have):
        raise Refusal(400, "have: a list of snapshot uuids")
    return _volumes(store).sender(_text(body, "volume"), _text(body, "snapshot"), have)


ROUTES: dict[tuple[str, str], Callable[[NodeStore, dict[str, Any]], dict[str, Any]]] = {
    ("POST", "leases/take"): _lease_call(lambda s, b: _asker(s, b).take(_text(b, "volume"))[0]),
    ("POST", "leases/give_back"): _lease_call(
        lambda s, b: _asker(s, b).give_back(_text(b, "volume"), _number(b, "epoch"))
    ),
    ("POST", "leases/releasing"): _lease_call(
        lambda s, b: _asker(s, b).releasing(_text(b, "volume"), _number(b, "epoch"))
    ),
    ("POST", "leases/release"): _lease_call(
        lambda s, b: _asker(s, b).release(
            _text(b, "volume"), _number(b, "epoch"), str(b.get("snapshot") or "")
        )
    ),
    ("POST", "leases/holder"): _lease_call(
        lambda s, b: s.holder(_text(b, "volume"), _text(b, "snapshot"), _text(b, "node"))
    ),
    ("POST", "leases/seeded"): _lease_call(
        lambda s, b: _asker(s, b).seeded(_text(b, "volume"), _text(b, "snapshot"))
    ),
    ("POST", "leases/unhold"): _lease_call(lambda s, b: _asker(s, b).unhold(_text(b, "volume"))),
    ("POST", "leases/hand"): _lease_call(lambda s, b: s.hand(_text(b, "volume"), _text(b, "node"))),
    ("POST", "leases/get"): _lease_call(lambda s, b: s.get(_text(b, "volume"))[0]),
    ("POST", "leases/create"): _lease_call(lambda s, b: s.create(_text(b, "volume"))),
    ("POST", "leases/remove"): _lease_call(lambda s, b: s.remove(_text(b, "volume"))),
    ("POST", "leases/all"): lambda store, body: {
        "leases": [lease.to_json() for lease in _service(store).all()]
    },
    ("POST", "volumes/have"): _have,
    ("POST", "volumes/pull"): _pull,
    ("POST", "volumes/read"): _read,
    ("POST", "volumes/seed"): _seed,
    ("POST", "volumes/drop"): _drop,
}

__all__ = [
    "ROUTES",
    "AgentPeers",
    "LocalLeases",
    "Refusal",
    "RemoteLeases",
    "Unavailable",
    "send_stream",
]
