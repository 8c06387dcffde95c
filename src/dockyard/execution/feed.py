"""Work handed to a run while it goes on (a CWL workflow's tool invocations, see
:mod:`dockyard.cwl`), and what the run tells about each piece as it ends.

The run's loop takes what was handed over at each turn, plans it like any instance (cache,
packing, retries, placement) and reports each conclusion back. The run ends once nothing
runs and the feed is closed: whoever feeds it decides, from those conclusions, what comes
next. Conclusions are reported on the loop's thread; a feed hands work over from any
thread and wakes the loop by putting :data:`WAKE` on the run's result queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dockyard.planning.graph import Instance, InstanceId


@dataclass(frozen=True)
class Wake:
    """Put on the run's result queue: something was handed over (or the feed closed)."""


WAKE = Wake()


@dataclass(frozen=True)
class Ended:
    """How one piece of work ended: its committed output (a digest) and its exit status,
    or why it failed."""

    instance: InstanceId
    output: str | None  # the committed output's digest; None: it failed
    exit_code: int | None
    cached: bool = False
    message: str = ""


class Feed(Protocol):
    @property
    def images(self) -> dict[str, str]:
        """The engine's id of every image the instances handed over use (by image key):
        the feeder resolves an image (finds, pulls, makes it) before it hands over its
        user."""

    def take(self) -> list[Instance]:
        """What was handed over since the last call (each instance reads no other's
        output: the feeder waits for what it needs)."""

    def open(self) -> bool:
        """Whether more may come, or something handed over was not taken yet."""

    def ended(self, ended: Ended) -> None:
        """One piece of work is over (on the loop's thread)."""
