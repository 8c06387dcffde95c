"""dockyard: an orchestrator for containerized data pipelines with stateful steps.

The names below load when first used, so that importing one part of dockyard (the node
agent ships ``dockyard.agent`` and the node-disk layer alone) loads nothing else.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from dockyard.errors import DockyardError
    from dockyard.execution import Executor, RunOptions
    from dockyard.spec import PipelineFile, load_pipeline

_LAZY = {
    "DockyardError": "dockyard.errors",
    "Executor": "dockyard.execution",
    "RunOptions": "dockyard.execution",
    "PipelineFile": "dockyard.spec",
    "load_pipeline": "dockyard.spec",
}

__all__ = [
    "DockyardError",
    "Executor",
    "PipelineFile",
    "RunOptions",
    "__version__",
    "load_pipeline",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dockyard' has no attribute {name!r}")
    return getattr(import_module(module), name)
