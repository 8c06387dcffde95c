"""The ports through which a run reaches bytes: committed outputs, named volumes, and the
folders an attempt works in. Each says on which node a thing lives and hands out what to
bind into a container *on a given node*, so that a cluster backend can add
implementations (an agent per node that fetches outputs by digest, volumes that move)
without a change to the loop. The local implementations are today's behaviour on one
machine; fakes live in :mod:`dockyard.testing`; one contract suite per port runs on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol, runtime_checkable

from dockyard.disk.kept import Staging, StoredOutput
from dockyard.disk.sealing import Sealed
from dockyard.errors import RuntimeFailure

if TYPE_CHECKING:  # (not imported: a node agent's image has none of these)
    from dockyard.disk.volumes import Snapshot, VolumeInfo
    from dockyard.runtime.base import Bind
    from dockyard.state.hashing import InputHasher


class NodeUnavailable(RuntimeFailure):
    """The node chosen for an attempt could not take it (its store did not answer, or
    could not keep what it made): the attempt is lost, not failed."""


class OutputsLost(NodeUnavailable):
    """Committed outputs an attempt reads are kept on no node that is up: they must be made
    again (see :meth:`dockyard.planning.planner.Planner.outputs_lost`)."""

    def __init__(self, digests: Sequence[str], message: str):
        super().__init__(message)
        self.digests = tuple(digests)


class OutputStore(Protocol):
    """Committed outputs: immutable, content-addressed, found again by digest."""

    def seal(self, staging: Staging) -> Sealed:
        """Make ``staging`` plain, read-only data and hash it (on its node, beside the loop:
        an attempt's worker calls this). OSError when it is gone. A store may keep the tree
        under its digest already (the agents do, so that committing waits on no node): the
        content is what the digest says, and only a commit records it as an output."""

    def commit(self, staging: Staging, sealed: Sealed) -> StoredOutput:
        """Keep a sealed staging folder under its digest; an output with the same digest
        already kept is reused and ``staging`` discarded."""

    def discard(self, staging: Staging) -> None:
        """Delete a staging folder that will not be committed."""

    def exists(self, digest: str) -> bool: ...

    def locate(self, digest: str) -> Path:
        """Where a committed output can be read on this machine."""

    def bind(self, digest: str, node: str) -> str:
        """The host path to bind, read-only, into a container on ``node``, where the output
        is once :meth:`bring` has brought it there (it fetches nothing itself)."""

    def bring(self, digests: Sequence[str], node: str) -> None:
        """Make the committed outputs ``digests`` present on ``node``, fetched (and checked)
        from wherever they are kept: an attempt's worker calls this before its container is
        created. :class:`OutputsLost` when one is kept on no node that is up."""


class Workspace(Protocol):
    """The folders a run works in: attempts' staging folders, stream pipes, logs."""

    def staging(self, run_id: str, instance: str, attempt: int, node: str) -> Staging:
        """Where an attempt's ``/out`` is (a dead run's attempt's, too); nothing is made."""

    def make(self, staging: Staging) -> None:
        """Make the staging folder, empty (any user may write it; its parents are
        private): an attempt's worker calls this before the container is created."""

    def streams(
        self, run_id: str, unit: str, attempt: int, producers: Sequence[str], node: str
    ) -> Path:
        """A folder on ``node`` with one FIFO per producer of a streamed chain, for its
        members (the host path to bind there)."""

    def seed(self, staging: Staging, sources: Sequence[tuple[Path, str]]) -> None:
        """Copy this machine's files or folders into a staging folder that :meth:`make`
        made, each at its path relative to it (links are copied as links, never
        followed); before the container starts."""

    def provide(self, path: Path, node: str) -> str:
        """A file or folder of this machine (an input, the stream helper) as a host path to
        bind read-only on ``node``: the path itself where the node sees this machine's
        files, else a checked copy kept there by content. An attempt's worker calls this."""

    def log(self, run_id: str, instance: str, attempt: int) -> Path:
        """Where an attempt's logs are kept."""

    def clear(self) -> None:
        """Delete every run's work folders (the caller holds the pipeline's run lock)."""


class VolumeBackend(Protocol):
    """Named volumes: state that outlives runs, with snapshots. What only some backends
    offer is in an interface of its own: :class:`VolumeHistory` (one machine: rollback,
    send, receive), :class:`PlacedVolumes` (a cluster: where each is, moves)."""

    def ensure(self, name: str, seed: Path | None = None) -> None:
        """Create the volume on first use, copying ``seed`` in once."""

    def hold(
        self, name: str, *, exclusive: bool, wait: bool = False
    ) -> AbstractContextManager[None]:
        """Hold the volume for a run: shared by readers, exclusive for a writer; refused
        (:class:`~dockyard.disk.volumes.VolumeInUse`) unless ``wait``."""

    def exists(self, name: str) -> bool: ...

    def all(self) -> list[VolumeInfo]: ...

    def inspect(self, name: str) -> VolumeInfo: ...

    def snapshots(self, name: str) -> list[Snapshot]: ...

    def snapshot(self, name: str, tag: str | None = None) -> Snapshot:
        """Freeze the live volume (the caller holds it exclusively)."""

    def remove(self, name: str) -> None: ...

    def digest(self, name: str, hasher: InputHasher, *, settled: bool = False) -> str:
        """What the volume holds now, for cache keys (its content's digest, or the id of
        the snapshot that is its content); ``settled``: once a writer that just ended has
        left it (a cluster's volume is published a moment after its last unmount)."""

    def settle(self, name: str) -> None:
        """Wait until what a writer that just ended left in the volume is its content (a
        cluster's volume is published a moment after its last unmount; bounded): the
        worker of a writer's attempt calls this before the attempt is reported."""

    def mount(
        self, name: str, target: str, readonly: bool, node: str, version: str | None = None
    ) -> Bind:
        """The volume as a container on ``node`` mounts it at ``target``, made ready there
        (copied to the node when it lives elsewhere): an attempt's worker calls this before
        its container is created. ``version``: a read-only mount's :meth:`digest` when its
        reader's key was made, so that it reads that (where versions are kept)."""


@runtime_checkable
class VolumeHistory(Protocol):
    """Volumes whose snapshots dockyard keeps where it can reach them all (one machine):
    rolled back, and sent and received as streams. A cluster's volumes are snapshotted and
    moved by its node agents instead, and offer none of this."""

    def rollback(self, name: str, ref: str) -> int:
        """Make the live volume what snapshot ``ref`` (id or tag) holds; bytes copied back."""

    def send(
        self, name: str, out: BinaryIO, base: str | None = None, target: str | None = None
    ) -> tuple[int, int]:
        """Write a snapshot (or the increment between two) as a stream; (records, bytes)."""

    def receive(self, name: str, inp: BinaryIO) -> Snapshot:
        """Apply a stream, all of it or nothing."""


@dataclass(frozen=True)
class Placement:
    """Where a cluster's volume is, under its lease."""

    volume: str
    node: str  # the node that holds it, or held it last ("" for none yet)
    mounted: bool  # a container on that node has it mounted now
    epoch: int  # raised by every take of the lease
    snapshot: str  # its published snapshot ("" for an empty volume)
    published: float  # when it was published
    replicas: tuple[str, ...]  # the other nodes that keep the published snapshot
    lag: float  # seconds the published snapshot has waited for its replicas (0: none)


@runtime_checkable
class PlacedVolumes(Protocol):
    """Volumes that live on one node of a cluster at a time and follow their users."""

    def placements(self) -> list[Placement]: ...

    def placement(self, name: str) -> Placement: ...

    def move(self, name: str, node: str) -> Placement:
        """Put the volume on ``node`` ahead of its next user there (refused while it is
        mounted elsewhere)."""

    def node(self, given: str) -> str:
        """The id of the node that is up that ``given`` names (an id, its first
        characters, or a host name)."""

    def node_names(self) -> dict[str, str]:
        """Node ids: their host names (for people)."""


class FolderVolumes(VolumeBackend, Protocol):
    """Volumes that are folders of this machine (one machine, and the fakes)."""

    def live(self, name: str) -> Path:
        """The volume's live folder."""


__all__ = [
    "FolderVolumes",
    "NodeUnavailable",
    "OutputStore",
    "OutputsLost",
    "PlacedVolumes",
    "Placement",
    "Staging",
    "StoredOutput",
    "VolumeBackend",
    "VolumeHistory",
    "Workspace",
]


@dataclass(frozen=True)
class Ports:
    """Where a run's bytes live: a backend's outputs, work folders and named volumes."""

    outputs: OutputStore
    workspace: Workspace
    volumes: VolumeBackend
