"""Resolve the images a run needs: local ones, pulled ones, and ones made from ``images:``.

An ``images:`` entry is made from a Dockerfile context (``build``) or from Debian packages
(``debian``, see :mod:`dockyard.images.debian`). Every image dockyard makes carries the digest of
what it was made from in the ``dockyard.context`` label, so an unchanged source is never
built twice and a changed one always is.

A step may use an entry as ``image: {ref: NAME}``, or name the entry's ``tag`` as an
ordinary image reference (``image: dockyard/bwa:0.7.17``): then the entry says how to make
that image when this engine does not have it (as Compose's ``build:`` beside ``image:``),
and an image of that name that dockyard did not make, say one pulled from a registry, is
used as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from dockyard.disk.sealing import tree_digest
from dockyard.errors import ImageError
from dockyard.home import data_root
from dockyard.images import debian, debian_build
from dockyard.runtime.base import LABEL_PIPELINE, Runtime
from dockyard.spec.loader import PipelineFile
from dockyard.spec.model import ImageBuild, ImageSpec
from dockyard.spec.paths import STATE_DIR_NAME

LABEL_CONTEXT = "dockyard.context"  # "<kind>:<digest>" of what the image was made from
LABEL_PACKAGES = "dockyard.packages"  # "bwa=0.7.17-7+b2 ...": a Debian recipe's packages
# Images made at once. A build spends its time in one dpkg process, the mirror and the
# engine's import: two side by side take under half the time of one after the other on
# 2 cores (benchmarks/debian_images.py).
BUILD_WORKERS = 2

Note = Callable[[str], None]


def _quiet(message: str) -> None:
    del message


def image_key(image: ImageSpec) -> str:
    return f"ref:{image.ref}" if image.ref is not None else str(image.name)


def recipe_for_tag(pf: PipelineFile, ref: str) -> str | None:
    """The ``images:`` entry whose ``tag`` is ``ref``, if any."""
    for name, spec in pf.pipeline.images.items():
        if spec.tag == ref:
            return name
    return None


def resolve_images(
    pf: PipelineFile, images: Iterable[ImageSpec], runtime: Runtime, note: Note = _quiet
) -> dict[str, str]:
    """Map each image (by :func:`image_key`) to the engine's image id, making or pulling."""
    wanted = {image_key(image): image for image in images}
    recipes: dict[str, tuple[str, bool]] = {}  # key -> (images: entry, accept_foreign)
    for key, image in wanted.items():
        if image.ref is not None:
            recipes[key] = (image.ref, False)
        elif (entry := recipe_for_tag(pf, str(image.name))) is not None:
            recipes[key] = (entry, True)
    made = make_images(pf, list(dict.fromkeys(recipes.values())), runtime, note)
    resolved = {key: made[entry] for key, (entry, _) in recipes.items()}
    for key, image in wanted.items():
        if key not in resolved:
            resolved[key] = _local_or_pulled(pf, str(image.name), runtime, note)
    return resolved


def packages_of(images: Mapping[str, str], runtime: Runtime) -> dict[str, str]:
    """For each resolved image made from Debian packages, its recipe's package versions."""
    found = {key: runtime.image_labels(image).get(LABEL_PACKAGES) for key, image in images.items()}
    return {key: packages for key, packages in sorted(found.items()) if packages}


def _local_or_pulled(pf: PipelineFile, ref: str, runtime: Runtime, note: Note) -> str:
    found = runtime.image_id(ref)
    if found is not None:
        return found
    note(f"pulling {ref}")
    try:
        return runtime.pull(ref)
    except ImageError as exc:
        raise ImageError(
            f"{exc.message}. Build or load it first, or give it an images: entry "
            "(see README: no container registry is needed)",
            pipeline=pf.pipeline.name,
        ) from exc


def make_images(
    pf: PipelineFile,
    entries: Sequence[tuple[str, bool]],
    runtime: Runtime,
    note: Note = _quiet,
    *,
    force: bool = False,
) -> dict[str, str]:
    """:func:`make_image` for each ``(entry, accept_foreign)``, up to BUILD_WORKERS at once.

    Entries with the same source are done one after the other in one worker, so that the
    first makes the image and the others only tag it.
    """
    groups: dict[str, list[tuple[str, bool]]] = {}
    for name, foreign in entries:
        groups.setdefault(source_of(pf, pf.pipeline.images[name]), []).append((name, foreign))

    def make(source: str, group: list[tuple[str, bool]]) -> dict[str, str]:
        return {
            name: _make_named(pf, name, source, runtime, note, foreign, force)
            for name, foreign in group
        }

    made: dict[str, str] = {}
    debian_build.allow_builds()
    pool = ThreadPoolExecutor(BUILD_WORKERS, thread_name_prefix="dockyard-image")
    try:
        for done in as_completed([pool.submit(make, *group) for group in groups.items()]):
            made.update(done.result())
    except BaseException:  # an interrupt, or one build failed: the others stop too
        pool.shutdown(wait=False, cancel_futures=True)
        debian_build.stop_builds()
        raise
    finally:
        pool.shutdown(wait=True)  # each build removes its scratch folder as it ends
    return made


def source_of(pf: PipelineFile, spec: ImageBuild) -> str:
    """``kind:digest`` of what ``spec`` is made from (the value of ``dockyard.context``)."""
    if spec.debian is not None:
        return f"debian:{debian.recipe_of(spec.debian).digest}"
    assert spec.build is not None
    context = (pf.root / spec.build).resolve()
    # A context that holds the pipeline's state folder (build: .) must not change with it.
    skip = (STATE_DIR_NAME,) if context == pf.root.resolve() else ()
    return f"context:{tree_digest(context, skip=skip)[0]}"


def tag_of(pf: PipelineFile, name: str, source: str) -> str:
    spec = pf.pipeline.images[name]
    return spec.tag or f"dockyard/{pf.pipeline.name}-{name}:{source.split(':', 1)[1][:12]}"


def make_image(
    pf: PipelineFile,
    name: str,
    runtime: Runtime,
    note: Note = _quiet,
    *,
    accept_foreign: bool = False,
    force: bool = False,
) -> str:
    """The id of ``images.NAME``, made only when no image of the same source exists.

    ``accept_foreign``: an image of the tag that dockyard did not make (no label) is used
    as it is. ``force``: make it again even when it exists.
    """
    return _make_named(pf, name, None, runtime, note, accept_foreign, force)


def _make_named(
    pf: PipelineFile,
    name: str,
    source: str | None,
    runtime: Runtime,
    note: Note,
    accept_foreign: bool,
    force: bool,
) -> str:
    """:func:`make_image`, with the ``source`` when the caller knows it (a context is hashed
    once); errors name the entry."""
    try:
        source = source or source_of(pf, pf.pipeline.images[name])
        return _make(pf, name, source, runtime, note, accept_foreign, force)
    except ImageError as exc:
        raise ImageError(f"images.{name}: {exc.message}", pipeline=pf.pipeline.name) from exc


def _make(
    pf: PipelineFile,
    name: str,
    source: str,
    runtime: Runtime,
    note: Note,
    accept_foreign: bool,
    force: bool,
) -> str:
    spec = pf.pipeline.images[name]
    tag = tag_of(pf, name, source)
    existing = runtime.image_id(tag)
    replaced = existing if existing and LABEL_CONTEXT in runtime.image_labels(tag) else None
    if not force:
        if existing is not None:
            made_from = runtime.image_labels(tag).get(LABEL_CONTEXT)
            if made_from == source or (made_from is None and accept_foreign):
                return existing
        same = runtime.find_image({LABEL_CONTEXT: source})
        if same is not None:  # made before under another name
            runtime.tag_image(same, tag)
            return same
    began = time.monotonic()
    if spec.debian is not None:
        image = _make_debian(spec, tag, source, runtime, lambda m: note(f"image {name}: {m}"))
    else:
        assert spec.build is not None
        note(f"image {name}: building {spec.build} as {tag}")
        image = runtime.build(
            (pf.root / spec.build).resolve(),
            tag,
            {LABEL_CONTEXT: source, LABEL_PIPELINE: pf.pipeline.name},
        )
    note(f"image {name}: made {tag} in {time.monotonic() - began:.0f} s")
    if replaced is not None and replaced != image:
        # What dockyard made before under this name is now nameless: removed, unless a
        # container or another name still uses it.
        runtime.remove_image(replaced)
    return image


def _make_debian(spec: ImageBuild, tag: str, source: str, runtime: Runtime, note: Note) -> str:
    assert spec.debian is not None
    recipe = debian.recipe_of(spec.debian)
    mirror = debian.debian_mirror(recipe.suite)
    root = data_root()
    cache = root / "cache" / "debian"
    with debian_build.Workdir(root / "build") as work:
        made = debian_build.bootstrap_tarball(recipe, mirror, work, cache, note)
        packages = " ".join(f"{name}={version}" for name, version in made.packages.items())
        labels = {LABEL_CONTEXT: source, LABEL_PACKAGES: packages}
        return runtime.import_image(made.tarball, tag, labels, debian_build.IMAGE_ENV, ["bash"])
