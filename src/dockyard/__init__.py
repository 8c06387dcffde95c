"""dockyard: an orchestrator for containerized data pipelines with stateful steps."""

__version__ = "0.1.0"

from dockyard.engine import Executor, RunOptions  # noqa: E402
from dockyard.errors import DockyardError  # noqa: E402
from dockyard.spec import PipelineFile, load_pipeline  # noqa: E402

__all__ = ["DockyardError", "Executor", "PipelineFile", "RunOptions", "__version__",
           "load_pipeline"]
