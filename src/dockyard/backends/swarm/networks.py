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
from dockyard.errors import DockyardError
from dockyard.runtime.base import LABEL_PIPELINE, LABEL_PROJECT, LABEL_RUN

NETWORK_REMOVE_TRIES = 10
NETWORK_LABELS = (LABEL_PROJECT, LABEL_PIPELINE, LABEL_RUN)


class SwarmNetworks(DockerImages):
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
