"""What happens during a run, as typed events: the store records them and the progress
display, status and report render them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Event:
    """What happened: run-started, image, recovered, cached, started, adopted, succeeded,
    retrying, failed, blocked, engine, run-ended."""

    kind: str
    at: float
    instance: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Reporter(Protocol):
    def __call__(self, event: Event) -> None: ...


def ignore(event: Event) -> None:
    pass
