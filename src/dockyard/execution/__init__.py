"""Running a pipeline: the loop and its collaborators (see docs/architecture.md)."""

from dockyard.execution.ports import Ports
from dockyard.execution.run import Abandon, Executor, RunOptions, new_run_id

__all__ = ["Abandon", "Executor", "Ports", "RunOptions", "new_run_id"]
