"""What the disk layer hands back about the outputs it keeps: where an attempt writes its
``/out`` (:class:`Staging`) and a committed output as a store keeps it
(:class:`StoredOutput`). Plain values, shared by the local outputs, the node agents and the
run loop's ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Staging:
    """Where one attempt writes its ``/out`` before it is committed."""

    node: str
    path: Path


@dataclass(frozen=True)
class StoredOutput:
    """A committed output, as the output store keeps it."""

    digest: str
    node: str
    location: str  # where it is on that node (recorded in the state store)
    size: int
    files: int
    changes: tuple[str, ...] = ()  # what sealing dropped or changed, for the step's log
