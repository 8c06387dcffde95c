"""Which images get made, reused or taken as they are (the engine is the fake one).

debootstrap itself is replaced by a function that packs a tiny root file system: what is
checked here is the decision to build; tests/integration/test_genomics_docker.py builds
real Debian images on the real engine.
"""

from __future__ import annotations

import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dockyard.errors import ImageError
from dockyard.images import debian, debian_build
from dockyard.images.resolve import (
    LABEL_CONTEXT,
    make_image,
    make_images,
    packages_of,
    resolve_images,
    source_of,
)
from dockyard.spec import load_pipeline
from dockyard.spec.model import ImageSpec
from dockyard.testing.fake import FakeRuntime
from tests.conftest import WritePipeline

PIPELINE = """\
version: 1
name: imgs
images:
  bwa:
    debian: {include: [bwa]}
    tag: demo/bwa:1
  tools:
    debian: {include: [samtools]}
steps:
  align: {image: "demo/bwa:1", command: "true"}
  sort: {image: {ref: tools}, command: "true"}
"""


@pytest.fixture
def bootstraps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[debian.Recipe]:
    """Record each bootstrap and pack a one-file root instead of running debootstrap."""
    made: list[debian.Recipe] = []

    def fake_bootstrap(
        recipe: debian.Recipe,
        mirror: str,
        workdir: Path,
        cache_dir: Path,
        note: Callable[[str], None] | None = None,
    ) -> debian_build.Bootstrapped:
        made.append(recipe)
        (workdir / "hostname").write_text(" ".join(recipe.include))
        tarball = workdir / "rootfs.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(workdir / "hostname", arcname="etc/hostname")
        return debian_build.Bootstrapped(tarball, {name: "1.0-1" for name in recipe.include})

    monkeypatch.setenv("DOCKYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(debian.MIRROR_ENV, "http://mirror.example/debian")
    monkeypatch.setattr(debian_build, "bootstrap_tarball", fake_bootstrap)
    monkeypatch.setattr(debian, "host_suite", lambda *_: "bookworm")
    return made


WANTED = [ImageSpec.model_validate("demo/bwa:1"), ImageSpec(ref="tools")]


def test_recipes_are_made_once_then_reused(
    write_pipeline: WritePipeline, bootstraps: list[debian.Recipe]
) -> None:
    pf = load_pipeline(write_pipeline(PIPELINE))
    runtime = FakeRuntime()
    first = resolve_images(pf, WANTED, runtime)
    assert sorted(r.include for r in bootstraps) == [("bwa",), ("samtools",)]
    assert sorted(runtime.imported)[0] == "demo/bwa:1"
    assert sorted(runtime.imported)[1].startswith("dockyard/imgs-tools:")
    again = resolve_images(pf, WANTED, runtime)
    assert again == first and len(bootstraps) == 2
    assert runtime.image_labels("demo/bwa:1")[LABEL_CONTEXT].startswith("debian:")
    assert packages_of(first, runtime) == {"demo/bwa:1": "bwa=1.0-1", "ref:tools": "samtools=1.0-1"}


def test_an_image_of_the_tag_that_dockyard_did_not_make_is_used_as_it_is(
    write_pipeline: WritePipeline, bootstraps: list[debian.Recipe]
) -> None:
    pf = load_pipeline(write_pipeline(PIPELINE))
    runtime = FakeRuntime()
    published = runtime.add_image("demo/bwa:1")  # pulled from a registry, say
    resolved = resolve_images(pf, [ImageSpec.model_validate("demo/bwa:1")], runtime)
    assert resolved == {"demo/bwa:1": published} and bootstraps == []


def test_an_image_made_from_another_recipe_is_made_again(
    write_pipeline: WritePipeline, bootstraps: list[debian.Recipe]
) -> None:
    pf = load_pipeline(write_pipeline(PIPELINE))
    runtime = FakeRuntime()
    old = runtime.add_image("demo/bwa:1", labels={LABEL_CONTEXT: "debian:an-older-recipe"})
    resolved = resolve_images(pf, [ImageSpec.model_validate("demo/bwa:1")], runtime)
    assert resolved["demo/bwa:1"] != old and [r.include for r in bootstraps] == [("bwa",)]
    assert old not in runtime.labels  # the image it replaced, nameless now, is gone


def test_the_same_recipe_under_another_name_is_tagged_not_rebuilt(
    write_pipeline: WritePipeline, bootstraps: list[debian.Recipe]
) -> None:
    pf = load_pipeline(write_pipeline(PIPELINE))
    runtime = FakeRuntime()
    made = runtime.add_image(
        "elsewhere/bwa:7", labels={LABEL_CONTEXT: source_of(pf, pf.pipeline.images["bwa"])}
    )
    assert make_image(pf, "bwa", runtime) == made
    assert runtime.image_id("demo/bwa:1") == made and bootstraps == []
    assert make_image(pf, "bwa", runtime, force=True) != made  # unless asked to
    assert len(bootstraps) == 1


def test_an_image_without_recipe_or_registry_is_refused_with_advice(
    write_pipeline: WritePipeline, bootstraps: list[debian.Recipe]
) -> None:
    pf = load_pipeline(write_pipeline(PIPELINE))
    with pytest.raises(ImageError, match=r"'demo/other:2'.*images: entry"):
        resolve_images(pf, [ImageSpec.model_validate("demo/other:2")], FakeRuntime())


def test_distinct_recipes_are_made_side_by_side_and_shared_ones_once(
    write_pipeline: WritePipeline, bootstraps: list[debian.Recipe], monkeypatch: pytest.MonkeyPatch
) -> None:
    pf = load_pipeline(
        write_pipeline(
            """
            version: 1
            name: side
            images:
              bwa: {debian: {include: [bwa]}, tag: "demo/bwa:1"}
              aligner: {debian: {include: [bwa]}, tag: "demo/aligner:1"}
              tools: {debian: {include: [samtools]}}
            steps:
              a: {image: "demo/bwa:1", command: "true"}
              b: {image: "demo/aligner:1", command: "true"}
              c: {image: {ref: tools}, command: "true"}
            """
        )
    )
    together = threading.Barrier(2, timeout=10)  # broken unless two builds overlap
    recorded = debian_build.bootstrap_tarball

    def overlapping(*args: Any, **kwargs: Any) -> debian_build.Bootstrapped:
        together.wait()
        return recorded(*args, **kwargs)

    monkeypatch.setattr(debian_build, "bootstrap_tarball", overlapping)
    runtime = FakeRuntime()
    made = make_images(pf, [("bwa", True), ("aligner", True), ("tools", False)], runtime)
    assert sorted(r.include for r in bootstraps) == [("bwa",), ("samtools",)]
    assert made["bwa"] == made["aligner"] == runtime.image_id("demo/aligner:1")


def test_a_build_context_that_holds_the_state_folder_does_not_change_with_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "dockyard.yaml").write_text(
        "version: 1\nname: ctx\nimages: {tool: {build: .}}\nsteps: {a: {command: 'true'}}\n"
    )
    pf = load_pipeline(tmp_path / "dockyard.yaml")
    before = source_of(pf, pf.pipeline.images["tool"])
    (pf.state_dir / "logs").mkdir(parents=True)
    (pf.state_dir / "logs" / "new.log").write_text("a run happened\n")
    assert source_of(pf, pf.pipeline.images["tool"]) == before
    (tmp_path / "Dockerfile").write_text("FROM scratch\nLABEL x=y\n")
    assert source_of(pf, pf.pipeline.images["tool"]) != before
