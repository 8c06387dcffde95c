"""From an instance to the container that runs one attempt of it.

What a container gets: an empty ``/out`` (a staging folder from the workspace), the
upstream outputs it reads (bound read-only from the output store, where they are on the
node it runs on), its inputs (resolved again now, so that a link planted since validation
cannot widen them), its volumes, for a streamed chain the FIFOs and the helper that wires
them, its cgroup parent (accounting, and one CPU quota per chain), labels that let a later
run find and adopt it, and its limits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dockyard.disk.kept import Staging
from dockyard.disk.node_disk import safe_name
from dockyard.errors import DockyardError, PlanError
from dockyard.execution import cgroups
from dockyard.execution.attempts import FromHere, Order
from dockyard.execution.ports import NodeUnavailable, OutputStore, Workspace
from dockyard.execution.resolution import Known
from dockyard.execution.run_volumes import RunVolumes
from dockyard.execution.services import Services
from dockyard.execution.stream import HELPER, STREAM_DIR, helper_binary, redirect, wrap
from dockyard.images.resolve import image_key
from dockyard.planning.actions import Adopt, Start
from dockyard.planning.graph import Graph, Instance, InstanceId
from dockyard.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_CPUS,
    LABEL_INSTANCE,
    LABEL_KEY,
    LABEL_MEMORY,
    LABEL_PIPELINE,
    LABEL_PROJECT,
    LABEL_RUN,
    NO_NETWORK,
    Bind,
    ContainerSpec,
    Runtime,
)


@dataclass(frozen=True)
class RunIdentity:
    pipeline: str
    project: str  # which .dockyard folder (pipelines may share a name)
    run_id: str
    own_cgroups: bool  # may dockyard make cgroups for the engine's containers?

    def labels(self) -> dict[str, str]:
        return {LABEL_PIPELINE: self.pipeline, LABEL_PROJECT: self.project, LABEL_RUN: self.run_id}


@dataclass(frozen=True)
class Launch:
    order: Order | None  # None: the attempt ends before it has a container
    staging: Staging
    log: Path
    failure: DockyardError | None = None  # why it ends so (a node's: the attempt is lost)


class Launcher:
    def __init__(
        self,
        run: RunIdentity,
        graph: Graph,
        images: Mapping[str, str],
        known: Known,
        ports: tuple[Workspace, OutputStore],
        volumes: RunVolumes,
        services: Services,
        runtime: Runtime,
        input_path: Callable[[str], str],
    ):
        self.run = run
        self.graph = graph
        self.images = images
        self.known = known
        self.workspace, self.outputs = ports
        self.volumes = volumes
        self.services = services
        self.runtime = runtime
        self.input_path = input_path
        self.commands: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self.cpu_pools: dict[tuple[InstanceId, int], str | None] = {}
        self.adopted: set[str] = set()  # dead runs' containers this run watches

    def launch(self, action: Start) -> Launch:
        iid, attempt = action.instance, action.attempt
        instance = self.graph.instances[iid]
        node = action.node
        staging = self.workspace.staging(self.run.run_id, str(iid), attempt, node)
        log = self.workspace.log(self.run.run_id, str(iid), attempt)
        network = None if instance.network else NO_NETWORK
        if instance.services:
            failure = self.services.ensure(instance.services)
            if failure is not None:  # fail this attempt without a container
                return Launch(None, staging, log, DockyardError(failure))
            network = self.services.network
        try:
            binds, from_here = self._binds(instance, staging, node)
        except PlanError as exc:  # an input changed since it was checked
            return Launch(None, staging, log, DockyardError(exc.message))
        needs = tuple(self.known.outputs[mount.source] for mount in instance.upstream)
        image = self.images[image_key(instance.image)]
        entrypoint, command, pool = None, instance.command, None
        unit = self.graph.group(iid)
        if len(unit) > 1:
            pool = self._cpu_pool(unit, attempt)
            try:
                folder = self.workspace.streams(
                    self.run.run_id, str(unit[-1]), attempt, [str(m) for m in unit[:-1]], node
                )
            except NodeUnavailable as exc:  # (a node's agent that does not answer)
                return Launch(None, staging, log, exc)
            binds += (Bind(str(folder), STREAM_DIR, readonly=False),)
            from_here += (FromHere(helper_binary().resolve(), HELPER),)
            entrypoint = (HELPER,)
            command = wrap(
                self._argv(instance, image),
                reads=safe_name(str(instance.stdin)) if instance.stdin is not None else None,
                writes=safe_name(str(iid)) if iid != unit[-1] else None,
            )
        elif any(path is not None for path in instance.stdio):
            # Standard streams from and to files (a CWL tool's stdin/stdout/stderr)
            from_here += (FromHere(helper_binary().resolve(), HELPER),)
            entrypoint = (HELPER,)
            command = redirect(self._argv(instance, image), *instance.stdio)
        spec = ContainerSpec(
            image=image,
            command=command,
            entrypoint=entrypoint,
            network=network,
            cgroup_parent=self._accounting_parent(iid, attempt, pool),
            cpus=None if pool else instance.cpus,
            memory=action.memory,
            # Like Nextflow's task.attempt; not part of the cache key.
            env={**dict(instance.env), "DOCKYARD_ATTEMPT": str(attempt)},
            binds=binds,
            labels={
                **self.run.labels(),
                LABEL_INSTANCE: str(iid),
                LABEL_ATTEMPT: str(attempt),
                LABEL_KEY: self.known.keys[iid],
                LABEL_CPUS: f"{instance.cpus:g}",
                LABEL_MEMORY: str(action.memory),
            },
            name=self.container_name(str(iid), attempt),
            pids=instance.pids,
            cap_add=instance.cap_add,
            node=action.node,
            workdir=instance.workdir,
            reserved_cpus=action.reserved,
        )
        order = Order(
            iid,
            attempt,
            spec,
            None,
            instance.timeout,
            staging,
            log,
            needs=needs,
            from_here=from_here,
            volumes=self.volumes.mounts(instance),
            seeds=tuple(FromHere(Path(source), rel) for source, rel, _ in instance.seeds),
            success_codes=instance.success_codes,
        )
        return Launch(order, staging, log)

    def adopt(self, action: Adopt) -> Launch:
        """Watch a dead run's container; it writes where that run's attempt staged."""
        orphan, iid = action.orphan, action.instance
        staging = self.workspace.staging(orphan.run_id, str(iid), orphan.attempt, orphan.node)
        log = self.workspace.log(self.run.run_id, str(iid), 1)
        timeout = self.graph.instances[iid].timeout
        order = Order(
            iid, 1, None, orphan.container_id, timeout, staging, log, exited=not orphan.running
        )
        self.adopted.add(orphan.container_id)
        return Launch(order, staging, log)

    def container_name(self, instance: str, attempt: int) -> str:
        return f"dockyard-{self.run.pipeline}-{self.run.run_id}-{safe_name(instance)}-{attempt}"

    def _binds(
        self, instance: Instance, staging: Staging, node: str
    ) -> tuple[tuple[Bind, ...], tuple[FromHere, ...]]:
        """The container's binds on its node (``/out``, the outputs it reads), and those
        of this machine's files (its inputs), which the worker has provided on the node."""
        binds = [Bind(str(staging.path), instance.out, readonly=False)]
        for mount in instance.upstream:
            source = self.outputs.bind(self.known.outputs[mount.source], node)
            binds.append(Bind(source, mount.target))
        inputs = tuple(
            FromHere(Path(self.input_path(rel)), f"/in/{name}") for name, rel in instance.inputs
        )
        files = tuple(FromHere(Path(path), target) for path, target, _ in instance.files)
        return tuple(binds), inputs + files

    def _cpu_pool(self, unit: tuple[InstanceId, ...], attempt: int) -> str | None:
        """One CPU quota for a whole streamed chain, where the engine's cgroups are ours."""
        key = (unit[-1], attempt)
        if key not in self.cpu_pools:
            cpus = sum(self.graph.instances[m].cpus for m in unit)
            name = f"{self._prefix()}-{safe_name(str(unit[-1]))}-{attempt}"
            self.cpu_pools[key] = cgroups.create_pool(name, cpus) if self.run.own_cgroups else None
        return self.cpu_pools[key]

    def _accounting_parent(self, iid: InstanceId, attempt: int, pool: str | None) -> str | None:
        if not self.run.own_cgroups:
            return None
        if pool is not None:
            return cgroups.attempt_parent(safe_name(str(iid)), pool)
        return cgroups.attempt_parent(f"{self._prefix()}-{safe_name(str(iid))}-{attempt}")

    def _prefix(self) -> str:
        return f"{self.run.project}-{self.run.run_id}"

    def _argv(self, instance: Instance, image: str) -> tuple[str, ...]:
        """What the container would run: the image's ENTRYPOINT, then the command or CMD."""
        if image not in self.commands:
            self.commands[image] = self.runtime.image_command(image)
        entrypoint, cmd = self.commands[image]
        argv = entrypoint + (instance.command if instance.command is not None else cmd)
        if not argv:
            raise PlanError(
                f"{instance.id} has no command and its image none either", step=instance.step
            )
        return argv
