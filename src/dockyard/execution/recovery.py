"""What an earlier run of this pipeline left behind when its process died: its record,
still "running", and its containers, some still running, some finished and never
committed. The record is closed as interrupted; the containers are offered by cache key
to the planner, which adopts those whose work is still wanted; the rest are removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from dockyard.errors import DockyardError
from dockyard.execution.journal import RunJournal
from dockyard.planning.actions import Orphan
from dockyard.runtime.base import LABEL_ATTEMPT, LABEL_KEY, LABEL_RUN, ContainerInfo, Runtime
from dockyard.state.store import Store


class Recovery:
    def __init__(
        self, runtime: Runtime, store: Store, journal: RunJournal, labels: Mapping[str, str]
    ):
        self.runtime = runtime
        self.store = store
        self.journal = journal
        self.labels = dict(labels)  # the pipeline's and the project's
        self.found: list[ContainerInfo] = []

    def close_dead_runs(self, run_id: str) -> None:
        for old in self.store.unfinished_runs():
            if old.id != run_id:
                self.journal.close_dead(
                    old.id, f"dockyard stopped without finishing; recovered by run {run_id}"
                )

    def orphans(self, run_id: str) -> dict[str, list[Orphan]]:
        """The containers of other runs of this pipeline that ran, by their cache key."""
        self.found = [
            c for c in self.runtime.list(self.labels) if c.labels.get(LABEL_RUN) != run_id
        ]
        by_key: dict[str, list[Orphan]] = {}
        for container in self.found:
            attempt = container.labels.get(LABEL_ATTEMPT, "")
            # Only a step's attempt that ran can be adopted: one that never started has
            # nothing to wait for, and a service (kept, or left by a dead run) is no step.
            if container.started and attempt.isdigit() and LABEL_KEY in container.labels:
                orphan = Orphan(
                    container.id,
                    container.labels[LABEL_RUN],
                    int(attempt),
                    container.running,
                    container.node,
                )
                by_key.setdefault(container.labels[LABEL_KEY], []).append(orphan)
        return by_key

    def sweep(self, run_id: str, adopted: set[str]) -> None:
        """Remove what was not adopted: steps no longer needed, earlier runs' services, and
        the networks of earlier runs."""
        for container in self.found:
            if container.id not in adopted:
                with contextlib.suppress(DockyardError):  # (the end of the run tries again)
                    self.runtime.remove(container.id)
        self.found = []
        for network in self.runtime.networks(self.labels):
            if run_id not in network:
                with contextlib.suppress(DockyardError):  # still used by an adopted step
                    self.runtime.remove_network(network)
