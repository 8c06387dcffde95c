"""dockyard: an orchestrator for containerized data pipelines with stateful steps."""

__version__ = "0.1.0"

from dockyard.errors import DockyardError
from dockyard.execution import Executor, RunOptions
from dockyard.spec import PipelineFile, load_pipeline

__all__ = [
    "DockyardError",
    "Executor",
    "PipelineFile",
    "RunOptions",
    "__version__",
    "load_pipeline",
]
