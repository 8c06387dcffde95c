"""The volume leases kept in Swarm's own Raft store (:mod:`dockyard.agent.leases` has the
rules): one Swarm *config* per volume, named by a hash of the volume's name, whose labels
hold the lease, updated with the version index it was read at (a compare-and-swap)."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any

from dockyard.agent.engine import Engine, EngineError
from dockyard.agent.leases import Lease, LeaseError, NoSuchVolume

PREFIX = "dockyard-volume-"
LABEL = "dockyard.lease"


def config_name(volume: str) -> str:
    """The Swarm config that holds ``volume``'s lease: named by a hash of the volume's
    name (a config's name has at most 64 characters and ends in a letter or digit)."""
    return PREFIX + hashlib.sha256(volume.encode()).hexdigest()[:40]


class SwarmLeases:
    """Leases as Swarm configs (:func:`config_name`; labels updated with the version index:
    a compare-and-swap in the managers' Raft store)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def _find(self, volume: str) -> dict[str, Any] | None:
        name = config_name(volume)
        found = [c for c in self.engine.configs(name) if c["Spec"]["Name"] == name]
        return found[0] if found else None

    @staticmethod
    def _lease(config: dict[str, Any]) -> Lease | None:
        raw = (config["Spec"].get("Labels") or {}).get(LABEL)
        if raw is None:
            return None
        fields = json.loads(raw)
        fields["version"] = config["Version"]["Index"]
        return Lease.from_json(fields)

    def get(self, volume: str) -> Lease | None:
        config = self._find(volume)
        return self._lease(config) if config is not None else None

    def all(self) -> list[Lease]:
        found = (self._lease(c) for c in self.engine.configs(PREFIX))
        return sorted((lease for lease in found if lease is not None), key=lambda x: x.volume)

    def create(self, volume: str) -> Lease:
        lease = Lease(volume, incarnation=uuid.uuid4().hex)
        try:
            self.engine.call("POST", "/configs/create", self._spec(lease))
        except EngineError as exc:
            if exc.status != 409:  # (made by another node meanwhile: that one holds)
                raise
        found = self.get(volume)
        if found is None:
            raise LeaseError(f"volume {volume!r}: its lease record vanished as it was made")
        return found

    def swap(self, lease: Lease, new: Lease) -> Lease | None:
        config = self._find(lease.volume)
        if config is None:
            raise NoSuchVolume(f"no volume {lease.volume!r} on this swarm")
        try:
            self.engine.call(
                "POST",
                f"/configs/{config['ID']}/update",
                self._spec(new),
                params={"version": str(lease.version)},
            )
        except EngineError as exc:
            if exc.conflict:
                return None
            raise
        return self.get(lease.volume)

    def remove(self, volume: str) -> None:
        config = self._find(volume)
        if config is not None:
            self.engine.call("DELETE", f"/configs/{config['ID']}")

    def gone(self, node: str) -> bool:
        found = [n for n in self.engine.nodes() if n["ID"] == node]
        return not found or found[0]["Status"].get("State") == "down"

    def nodes(self) -> dict[str, str]:
        return {
            n["ID"]: node_address(n)
            for n in self.engine.nodes()
            if n["Status"].get("State") == "ready"
        }

    @staticmethod
    def _spec(lease: Lease) -> dict[str, Any]:
        fields = lease.to_json()
        fields.pop("version")
        return {
            "Name": config_name(lease.volume),
            "Data": base64.b64encode(lease.volume.encode()).decode(),
            "Labels": {LABEL: json.dumps(fields, sort_keys=True)},
        }


def node_address(node: Mapping[str, Any]) -> str:
    """A Swarm node's address, from the engine's description of it."""
    address = str(node["Status"].get("Addr") or "")
    if address in ("", "0.0.0.0"):  # (a manager may say so): its address as a manager
        address = str((node.get("ManagerStatus") or {}).get("Addr") or "").rpartition(":")[0]
    return address.strip("[]")


__all__ = ["LABEL", "PREFIX", "SwarmLeases", "config_name", "node_address"]
