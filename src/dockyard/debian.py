"""Images made offline from Debian packages: ``debootstrap --variant=minbase`` + import.

No container registry is involved: debootstrap fetches ``.deb`` files from the Debian
mirror this machine's apt already uses, installs them into a folder, and that folder
becomes an image through the engine's import. A recipe is identified by its
:func:`recipe_digest` (suite, architecture, packages, and the way images are made), so
an unchanged recipe is never built twice; the mirror is not part of it, since every
mirror serves the same archive.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dockyard.errors import ImageError
from dockyard.spec.model import DebianImage

# Bump when what ends up in an image changes for the same recipe (trimming, ENV, ...).
BUILDER_VERSION = 2
MIRROR_ENV = "DOCKYARD_DEBIAN_MIRROR"
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
OS_RELEASE = Path("/etc/os-release")
# Like Debian's "slim" images: no manuals, no translations, no apt indexes (copyright
# files stay: they are the packages' licences).
TRIMMED = (
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/cache/apt",
    "var/lib/apt/lists",
)
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


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


# -- building ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrapped:
    tarball: Path  # the root file system, packed
    packages: dict[str, str]  # the recipe's packages -> the versions installed


def bootstrap_tarball(
    recipe: Recipe,
    mirror: str,
    workdir: Path,
    cache_dir: Path,
    note: Callable[[str], None] | None = None,
) -> Bootstrapped:
    """Install ``recipe`` into a folder under ``workdir`` and pack it as a tar file.

    ``cache_dir`` keeps downloaded packages for later builds. Each build works on its own
    copy (hard links), and gives what it fetched back only once it succeeded, so builds may
    run side by side and a failed download never poisons the pool.
    """
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise ImageError(
            "building Debian images needs debootstrap: apt-get install debootstrap "
            "(scripts/setup.sh installs it)"
        )
    if os.geteuid() != 0:
        raise ImageError("building Debian images runs debootstrap, which needs root")
    debs = workdir / "debs"
    _link_debs(cache_dir, debs)
    root = workdir / "rootfs"
    command = [
        debootstrap,
        "--variant=minbase",
        f"--arch={recipe.arch}",
        f"--include={','.join(recipe.include)}",
        f"--cache-dir={debs}",
        recipe.suite,
        str(root),
        mirror,
    ]
    if note is not None:
        note(f"debootstrap {recipe.describe()} from {mirror}")
    log = workdir / "debootstrap.log"
    with log.open("wb") as sink:
        returncode = _run_stoppable(command, sink)
    if returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-8:]
        raise ImageError(
            f"debootstrap of {recipe.describe()} from {mirror} failed "
            f"(exit {returncode}):\n  " + "\n  ".join(tail)
        )
    _link_debs(debs, cache_dir)
    packages = installed_versions(root, recipe.include)
    trim(root)
    tarball = workdir / "rootfs.tar"
    packed = subprocess.run(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."],
        capture_output=True,
        text=True,
        check=False,
    )
    if packed.returncode != 0:
        raise ImageError(f"packing the image's files failed: {packed.stderr.strip()}")
    return Bootstrapped(tarball, packages)


def installed_versions(root: Path, names: Iterable[str]) -> dict[str, str]:
    """The installed version of each of ``names``, from the root's dpkg status file."""
    wanted = set(names)
    found: dict[str, str] = {}
    status = root / "var/lib/dpkg/status"
    text = status.read_text(errors="replace") if status.is_file() else ""
    for paragraph in text.split("\n\n"):
        fields = dict(_control_fields(paragraph))
        name = fields.get("Package", "")
        if name in wanted and fields.get("Status", "").endswith(" installed"):
            found[name] = fields.get("Version", "")
    return dict(sorted(found.items()))


def _control_fields(paragraph: str) -> Iterator[tuple[str, str]]:
    for line in paragraph.splitlines():
        if line and not line[0].isspace():
            key, _, value = line.partition(":")
            yield key, value.strip()


_builds: set[subprocess.Popen[bytes]] = set()
_builds_lock = threading.Lock()


def _run_stoppable(command: list[str], sink: IO[bytes]) -> int:
    """Run ``command`` in a session of its own, so :func:`stop_builds` can end all of it
    (debootstrap's dpkg and chroot children included), and a terminal's Ctrl-C reaches
    dockyard first, which then stops it before removing its folder."""
    process = subprocess.Popen(
        command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
    )
    with _builds_lock:
        _builds.add(process)
    try:
        return process.wait()
    finally:
        with _builds_lock:
            _builds.discard(process)


def stop_builds() -> None:
    """End every running debootstrap with all of its children (on an interrupt)."""
    with _builds_lock:
        running = list(_builds)
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _link_debs(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    if not source.is_dir():
        return
    for deb in source.glob("*.deb"):
        if (target / deb.name).exists():
            continue
        try:
            os.link(deb, target / deb.name)
        except FileExistsError:
            continue  # another build gave it back meanwhile
        except OSError:  # another file system: a copy, made whole before it appears
            partial = target / f".{deb.name}.partial"
            shutil.copyfile(deb, partial)
            partial.replace(target / deb.name)


def trim(root: Path) -> None:
    for rel in TRIMMED:
        _empty_dir(root / rel)
    docs = root / "usr/share/doc"
    if docs.is_dir():
        for path in sorted(docs.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif path.name != "copyright":
                path.unlink()


def _empty_dir(path: Path) -> None:
    if not path.is_dir() or path.is_symlink():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@dataclass
class Workdir:
    """A scratch folder for one build, removed afterwards, never through a live mount.

    debootstrap mounts ``/proc`` and ``/sys`` inside the new root while it installs; if
    it dies in between they can stay mounted, and deleting through them must not happen.
    """

    parent: Path

    def __enter__(self) -> Path:
        self.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="image-", dir=self.parent))
        return self.path

    def __exit__(self, *exc: object) -> None:
        for mount in sorted(_mounts_under(self.path), reverse=True):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
        if _mounts_under(self.path):
            return  # leave it rather than delete through a mount
        shutil.rmtree(self.path, ignore_errors=True)


def _mounts_under(path: Path) -> list[Path]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    prefix = str(path.resolve()) + "/"
    points = (Path(line.split()[1].replace("\\040", " ")) for line in lines if line.split())
    return [p for p in points if str(p).startswith(prefix)]
