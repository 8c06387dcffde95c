"""The pipeline file: typed models, loading with located errors, and checks."""

from dockyard.spec.loader import DEFAULT_FILE, PipelineFile, load_pipeline
from dockyard.spec.model import Pipeline, Resources, Retries, Step

__all__ = [
    "DEFAULT_FILE",
    "Pipeline",
    "PipelineFile",
    "Resources",
    "Retries",
    "Step",
    "load_pipeline",
]
