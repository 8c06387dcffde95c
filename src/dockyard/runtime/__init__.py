"""Container engine adapters behind one narrow interface."""

from dockyard.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_INSTANCE,
    LABEL_KEY,
    LABEL_PIPELINE,
    LABEL_PROJECT,
    LABEL_RUN,
    Bind,
    ContainerInfo,
    ContainerSpec,
    ExitStatus,
    HostCapacity,
    Runtime,
)

__all__ = [
    "LABEL_ATTEMPT",
    "LABEL_INSTANCE",
    "LABEL_KEY",
    "LABEL_PIPELINE",
    "LABEL_PROJECT",
    "LABEL_RUN",
    "Bind",
    "ContainerInfo",
    "ContainerSpec",
    "ExitStatus",
    "HostCapacity",
    "Runtime",
]
