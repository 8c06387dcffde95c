"""The networks of the Swarm adapter: attachable overlays for a run's services, the run's
overlay for its steps with ``network: true``, and the internal overlay for its steps
without network on nodes whose engine has a default bridge (see
:meth:`~dockyard.backends.swarm.runtime.SwarmRuntime._network_for`)."""

from __future__ import annotations

import builtins
import contextlib
import threading
import time
from collections.abc import Mapping

import docker.errors

from dockyard.backends.docker_images import DockerImages
from dockyard.backends.swarm.images import NodeEngines
from dockyard.errors import DockyardError
from dockyard.runtime.base import (
    LABEL_PIPELINE,
    LABEL_PROJECT,
    LABEL_RUN,
    NO_NETWORK,
    ContainerSpec,
)

NETWORK_REMOVE_TRIES = 10
NETWORK_LABELS = (LABEL_PROJECT, LABEL_PIPELINE, LABEL_RUN)


class SwarmNetworks(DockerImages):
    node_engines: NodeEngines  # (set by the runtime: the nodes' own engines)

    def _init_networks(self) -> None:
        self._network_lock = threading.Lock()
        self._run_networks: set[str] = set()  # made for the run's steps (removed at the end)

    def remove_run_networks(self) -> None:
        """Remove the run networks made here (their services are gone by now; their last
        tasks may still be leaving them for a moment)."""
        for name in sorted(self._run_networks):
            for turn in range(NETWORK_REMOVE_TRIES):
                try:
                    self.remove_network(name)
                    break
                except DockyardError:
                    if turn + 1 < NETWORK_REMOVE_TRIES:
                        time.sleep(0.5)

    def _network_for(self, spec: ContainerSpec) -> str | None:
        """Where a task goes. With ``network: true``, the run's overlay (egress through
        the node; a task attached to no network would get its engine's default network,
        which may be none). Without, on a node whose engine has no default bridge, no
        network: its loopback alone, and no overlay to join (most of a task's cost);
        elsewhere the engine would give it that bridge, with egress, so it joins an
        internal overlay of its run instead, which reaches nothing outside the run's
        isolated steps. A node whose engine is not known is taken to have a bridge."""
        if spec.network is None:
            return self._run_network(spec.labels)
        if spec.network != NO_NETWORK:
            return spec.network
        if spec.node is not None and not self._has_bridge(spec.node):
            return NO_NETWORK
        return self._isolated_network(spec.labels)

    def _has_bridge(self, node: str) -> bool:
        """Whether ``node``'s engine has a default bridge network, asked at each start (an
        engine restarted with another configuration during a run is seen); an engine not
        given in DOCKYARD_SWARM_ENGINES, or not answering, is taken to have one."""
        engine = self.node_engines.engine_of(node)
        if engine is None:
            return True
        try:
            with engine._translated(f"reading the networks of node {node[:12]}"):
                found = engine.api.networks(names=["bridge"])
        except DockyardError:
            return True
        return any(n.get("Name") == "bridge" and n.get("Driver") == "bridge" for n in found)

    def _run_network(self, labels: Mapping[str, str]) -> str:
        """The run's overlay for its steps with ``network: true``, with egress through the
        node (as the default bridge gives on one engine)."""
        return self._made_network("dockyard-net", labels, internal=False)

    def _isolated_network(self, labels: Mapping[str, str]) -> str:
        """The run's internal overlay for its steps without network: no gateway, no
        published port; it reaches nothing outside the run's isolated steps."""
        return self._made_network("dockyard-isolated", labels, internal=True)

    def _made_network(self, prefix: str, labels: Mapping[str, str], *, internal: bool) -> str:
        """An overlay of the run, made on first use. It carries the run's labels, so that
        a later run removes it (with the other networks of earlier runs) if this one
        could not."""
        run = labels.get(LABEL_RUN, "")
        name = f"{prefix}-{run}" if run else prefix
        with self._network_lock:
            if name not in self._run_networks:
                kept = {k: v for k, v in labels.items() if k in NETWORK_LABELS}
                with self._translated(f"creating network {name}"):
                    try:
                        self.api.create_network(  # (steps are services: none attaches)
                            name, driver="overlay", attachable=False, internal=internal, labels=kept
                        )
                    except docker.errors.APIError as exc:
                        if exc.status_code != 409:  # made by another runtime of the run
                            raise
                self._run_networks.add(name)
        return name

    def create_network(self, name: str, labels: Mapping[str, str]) -> str:
        with self._translated(f"creating network {name}"):
            self.api.create_network(name, driver="overlay", attachable=True, labels=dict(labels))
        return name

    def remove_network(self, name: str) -> None:
        with (
            self._translated(f"removing network {name}"),
            contextlib.suppress(docker.errors.NotFound),
        ):
            self.api.remove_network(name)

    def networks(self, labels: Mapping[str, str]) -> builtins.list[str]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with self._translated("listing networks"):
            return [str(n["Name"]) for n in self.api.networks(filters=filters)]
