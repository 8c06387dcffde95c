"""What Docker (or a peer) is told when a volume call cannot be done."""

from __future__ import annotations

from dockyard.errors import AgentFailure


class Refused(AgentFailure):
    """A volume call that cannot be done: the message says why."""


__all__ = ["Refused"]
