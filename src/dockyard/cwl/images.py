"""The image of each CWL tool, without a registry: a ``DockerRequirement`` (``dockerPull``,
``dockerImageId``, ``dockerFile``) is resolved like a pipeline step's image — an image the
engine has, one an ``images:`` entry says how to make (a user's images file), one built
from the tool's Dockerfile, or one pulled; a tool without one runs in a default image
made offline from Debian packages."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from dockyard.errors import ImageError, SpecError
from dockyard.home import data_root
from dockyard.images.resolve import Note, resolve_images
from dockyard.runtime.base import Runtime
from dockyard.spec.loader import PipelineFile, validation_issues
from dockyard.spec.locate import Locator
from dockyard.spec.model import DebianImage, ImageBuild, ImageSpec
from dockyard.spec.reading import load_yaml, read_pipeline_text

DEFAULT_IMAGE = "dockyard/cwl-default:1"
# What a tool that names no image finds: bash, coreutils and the other tools of a Debian
# minimal base, and `rev` (bsdextrautils), which CWL's own examples use.
DEFAULT_RECIPE = ImageBuild(
    debian=DebianImage(include=["bash", "coreutils", "bsdextrautils"]), tag=DEFAULT_IMAGE
)


class UnsupportedImage(ImageError):
    """A DockerRequirement dockyard cannot act on (a CWL runner's "unsupported")."""


class ImagesFile(BaseModel):
    """A file of ``images:`` entries in dockyard's format: how to make a named image."""

    model_config = ConfigDict(extra="forbid")
    images: dict[str, ImageBuild]


def read_images_file(path: Path) -> dict[str, ImageBuild]:
    """The entries of an images file; each is found by its ``tag`` (its name, if it has
    none), and a ``build`` folder is relative to the file."""
    shown = str(path)
    data = load_yaml(read_pipeline_text(path.absolute(), shown), shown)
    try:
        entries = ImagesFile.model_validate(data).images
    except ValidationError as exc:
        issues = validation_issues(exc, Locator(data), shown)
        raise SpecError(issues, what="the images file") from None
    found = {}
    for name, entry in entries.items():
        update: dict[str, Any] = {"tag": entry.tag or name}
        if entry.build is not None:
            update["build"] = str((path.absolute().parent / entry.build).resolve())
        found[name] = entry.model_copy(update=update)
    return found


class ToolImages:
    """Resolves the images of tools as they come; each once per run."""

    def __init__(self, pf: PipelineFile, runtime: Runtime, note: Note):
        self.pf = pf
        self.runtime = runtime
        self.note = note
        self.resolved: dict[str, str] = {}  # image key -> the engine's id
        self._lock = threading.Lock()

    def key_for(self, requirement: dict[str, Any] | None) -> str:
        """The image key of a tool with this DockerRequirement (None: the default image),
        resolved (found, made or pulled) before it returns."""
        if requirement is None:
            name = DEFAULT_IMAGE
        elif "dockerFile" in requirement:
            name = self._from_dockerfile(str(requirement["dockerFile"]), requirement)
        elif "dockerPull" in requirement or "dockerImageId" in requirement:
            name = str(requirement.get("dockerPull") or requirement["dockerImageId"])
        else:
            raise UnsupportedImage(
                "this DockerRequirement names no image dockyard can find or make "
                "(dockerLoad is not supported: load the image into the engine and name it "
                "with dockerPull)"
            )
        with self._lock:
            if name not in self.resolved:
                self.resolved.update(
                    resolve_images(
                        self.pf, [ImageSpec.model_validate(name)], self.runtime, self.note
                    )
                )
        return name

    def _from_dockerfile(self, dockerfile: str, requirement: dict[str, Any]) -> str:
        digest = hashlib.sha256(dockerfile.encode()).hexdigest()
        context = data_root() / "cwl" / "dockerfiles" / digest[:32]
        context.mkdir(parents=True, exist_ok=True)
        (context / "Dockerfile").write_text(dockerfile)
        tag = str(requirement.get("dockerImageId") or f"dockyard/cwl-dockerfile:{digest[:12]}")
        with self._lock:
            self.pf.pipeline.images.setdefault(
                f"dockerfile-{digest[:12]}", ImageBuild(build=str(context), tag=tag)
            )
        return tag
