"""What dockyard keeps of a CWL document, without loading it (no cwltool here): the run's
name, where its state folder is, the images it may make."""

from __future__ import annotations

import re
from pathlib import Path

from dockyard.spec.loader import PipelineFile
from dockyard.spec.model import Defaults, ImageBuild, Pipeline

SUFFIX = ".cwl"


def is_cwl(path: str | Path) -> bool:
    return str(path).split("#", 1)[0].endswith(SUFFIX)


def cwl_pipeline_file(
    workflow: str | Path | None,
    recipes: dict[str, ImageBuild] | None = None,
    state: Path | None = None,
) -> PipelineFile:
    """The pipeline file of a CWL document's runs: named after the file, with its state
    folder beside it (``.dockyard``, as a pipeline file's) unless ``state`` says."""
    path = Path(str(workflow or "workflow.cwl").split("#", 1)[0]).absolute()
    name = re.sub(r"[^a-z0-9_-]+", "-", path.stem.lower()).strip("-_")[:40] or "cwl"
    pipeline = Pipeline.model_construct(
        version=1,
        name=name,
        defaults=Defaults(),
        images=dict(recipes or {}),
        volumes={},
        services={},
        steps={},
    )
    return PipelineFile(path, pipeline, {}, state)
