"""Resolve the images a run needs: local ones, pulled ones, and ones built from ``images:``."""

from __future__ import annotations

from collections.abc import Iterable

from dockyard.errors import ImageError
from dockyard.outputs import tree_digest
from dockyard.runtime.base import LABEL_PIPELINE, Runtime
from dockyard.spec.loader import PipelineFile
from dockyard.spec.model import ImageSpec

LABEL_CONTEXT = "dockyard.context"


def image_key(image: ImageSpec) -> str:
    return f"ref:{image.ref}" if image.ref is not None else str(image.name)


def resolve_images(
    pf: PipelineFile, images: Iterable[ImageSpec], runtime: Runtime, log: list[str] | None = None
) -> dict[str, str]:
    """Map each image (by :func:`image_key`) to the engine's image id, building or pulling."""
    resolved: dict[str, str] = {}
    for image in images:
        key = image_key(image)
        if key in resolved:
            continue
        if image.ref is not None:
            resolved[key] = _build(pf, image.ref, runtime, log)
        else:
            assert image.name is not None
            found = runtime.image_id(image.name)
            if found is None:
                if log is not None:
                    log.append(f"pulling {image.name}")
                try:
                    found = runtime.pull(image.name)
                except ImageError as exc:
                    raise ImageError(
                        f"{exc.message}. Build or load it first (see README: tests and examples "
                        "build their images locally)",
                        pipeline=pf.pipeline.name,
                    ) from exc
            resolved[key] = found
    return resolved


def _build(pf: PipelineFile, name: str, runtime: Runtime, log: list[str] | None) -> str:
    spec = pf.pipeline.images[name]
    context = (pf.root / spec.build).resolve()
    digest = tree_digest(context)[0]  # names, exec bits and contents of the context
    tag = spec.tag or f"dockyard/{pf.pipeline.name}-{name}:{digest[:12]}"
    existing = runtime.image_id(tag)
    if existing is not None and runtime.image_labels(tag).get(LABEL_CONTEXT) == digest:
        return existing
    if log is not None:
        log.append(f"building image {name} from {spec.build} as {tag}")
    return runtime.build(context, tag, {LABEL_CONTEXT: digest, LABEL_PIPELINE: pf.pipeline.name})
