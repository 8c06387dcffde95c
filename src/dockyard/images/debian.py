"""Recipes of images made offline from Debian packages: the suite, the mirror, the digest.

No container registry is involved: the packages come from the Debian mirror this
machine's apt already uses, are installed into a folder (:mod:`dockyard.images.debian_build`),
and that folder becomes an image through the engine's import. A recipe is identified by its
:func:`recipe_digest` (suite, architecture, packages, and the way images are made), so
an unchanged recipe is never built twice; the mirror is not part of it, since every
mirror serves the same archive.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import ImageError
from dockyard.spec.model import DebianImage

# Bump when what ends up in an image changes for the same recipe (trimming, ENV, ...).
BUILDER_VERSION = 4
MIRROR_ENV = "DOCKYARD_DEBIAN_MIRROR"
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
OS_RELEASE = Path("/etc/os-release")


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


@dataclass(frozen=True)
class Recipe:
    """A :class:`DebianImage` with the machine's defaults filled in."""

    suite: str
    arch: str
    include: tuple[str, ...]

    @property
    def digest(self) -> str:
        return recipe_digest(self)

    def describe(self) -> str:
        return f"{self.suite}/{self.arch} minbase + {', '.join(self.include)}"


def recipe_digest(recipe: Recipe) -> str:
    body = {
        "builder": BUILDER_VERSION,
        "variant": "minbase",
        "suite": recipe.suite,
        "arch": recipe.arch,
        "include": sorted(set(recipe.include)),
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def recipe_of(image: DebianImage, os_release: Path = OS_RELEASE) -> Recipe:
    return Recipe(
        suite=image.suite or host_suite(os_release),
        arch=host_arch(),
        include=tuple(sorted(set(image.include))),
    )


def host_suite(os_release: Path = OS_RELEASE) -> str:
    """This machine's Debian release (``VERSION_CODENAME``), the default suite."""
    try:
        text = os_release.read_text()
    except OSError:
        text = ""
    fields = dict(_os_release_fields(text))
    codename = fields.get("VERSION_CODENAME", "")
    if fields.get("ID") != "debian" and "debian" not in fields.get("ID_LIKE", "").split():
        codename = ""
    if not codename:
        raise ImageError(
            f"this machine is not Debian ({os_release} names no Debian release): give the "
            f"image's debian.suite, and the mirror in {MIRROR_ENV}"
        )
    return codename


def _os_release_fields(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            yield key.strip(), value.strip().strip("\"'")


@functools.cache
def host_arch() -> str:
    dpkg = shutil.which("dpkg")
    if dpkg is not None:
        done = subprocess.run([dpkg, "--print-architecture"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


# -- the mirror -------------------------------------------------------------------------------


def apt_sources(
    sources_list: Path = APT_SOURCES, sources_dir: Path = APT_SOURCES_DIR
) -> list[AptSource]:
    """The ``deb`` entries of apt's configuration, one-line and deb822 formats, in order."""
    found: list[AptSource] = []
    files = [sources_list] if sources_list.is_file() else []
    if sources_dir.is_dir():
        files += sorted(p for p in sources_dir.iterdir() if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        parse = _parse_deb822 if path.suffix == ".sources" else _parse_one_line
        found.extend(parse(text))
    return found


def _parse_one_line(text: str) -> Iterator[AptSource]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        words = line.split()[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words.pop(0)
            words = words[1:]
        if len(words) >= 2:
            yield AptSource(words[0], (words[1],), tuple(words[2:]))


def _parse_deb822(text: str) -> Iterator[AptSource]:
    for paragraph in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for raw in paragraph.splitlines():
            if raw.startswith("#") or not raw.strip():
                continue
            if raw[0].isspace() and key:  # a continuation line
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        suites = tuple(fields.get("suites", "").split())
        components = tuple(fields.get("components", "").split())
        for uri in fields.get("uris", "").split():
            yield AptSource(uri, suites, components)


def debian_mirror(suite: str, sources: Iterable[AptSource] | None = None) -> str:
    """The mirror to bootstrap ``suite`` from: ``$DOCKYARD_DEBIAN_MIRROR``, else apt's own."""
    configured = os.environ.get(MIRROR_ENV)
    if configured:
        return configured
    entries = list(apt_sources() if sources is None else sources)
    for entry in entries:
        if suite in entry.suites and "main" in entry.components:
            return entry.uri
    raise ImageError(
        f"no Debian mirror for {suite!r} in apt's configuration ({APT_SOURCES}, "
        f"{APT_SOURCES_DIR}/): add one there, or name it in {MIRROR_ENV}"
    )
