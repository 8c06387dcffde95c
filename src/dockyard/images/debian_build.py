"""Making a root file system from Debian packages, offline from any container registry.

One ``debootstrap --variant=minbase`` per suite and architecture makes a base, kept as a
tar file under the data root; each image starts from a copy of it and installs its
recipe's packages with ``apt-get`` in a chroot (no recommends, services never started,
the base upgraded to the archive's current versions first), then is trimmed and packed.
debootstrap alone takes most of a minute; an install on the base takes seconds, so each
recipe after the first costs a fraction of a full bootstrap.

Every command runs in a session of its own so that :func:`stop_builds` can end it with
all of its children; scratch folders are removed afterwards, never through a mount.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from dockyard.images.debian import BUILDER_VERSION, Recipe

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
CHROOT_ENV = {**IMAGE_ENV, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
APT = (
    "apt-get",
    "-q",
    "-y",
    "-o",
    "APT::Install-Recommends=false",
    "-o",
    "Dpkg::Options::=--force-confold",
)
NO_SERVICES = "#!/bin/sh\n# dockyard: no service starts while an image is made\nexit 101\n"

Note = Callable[[str], None]


@dataclass(frozen=True)
class Bootstrapped:
    tarball: Path  # the root file system, packed
    packages: dict[str, str]  # the recipe's packages -> the versions installed


def bootstrap_tarball(
    recipe: Recipe, mirror: str, workdir: Path, cache_dir: Path, note: Note | None = None
) -> Bootstrapped:
    """Make ``recipe``'s root file system under ``workdir`` and pack it as a tar file.

    ``cache_dir`` keeps the base and the downloaded packages for later builds. Each build
    works on its own copy of the packages (hard links) and gives what it fetched back only
    once it succeeded, so builds may run side by side and a failed download never poisons
    the cache.
    """
    say = note or (lambda message: None)
    if os.geteuid() != 0:
        raise ImageError("building Debian images runs debootstrap and chroot, which need root")
    base = _base(recipe, mirror, cache_dir, workdir, say)
    root = workdir / "rootfs"
    root.mkdir()
    _check(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-xf", str(base)], workdir)
    archives = root / "var/cache/apt/archives"
    _link_debs(cache_dir / "debs", archives)
    say(f"apt-get install {' '.join(recipe.include)}")
    _install(root, recipe.include, workdir)
    _link_debs(archives, cache_dir / "debs")
    packages = installed_versions(root, recipe.include)
    missing = sorted(set(recipe.include) - set(packages))
    if missing:
        raise ImageError(f"apt-get did not install {', '.join(missing)}")
    trim(root)
    tarball = workdir / "rootfs.tar"
    _pack(root, tarball, workdir)
    return Bootstrapped(tarball, packages)


def _base(recipe: Recipe, mirror: str, cache_dir: Path, workdir: Path, say: Note) -> Path:
    """The packed minbase of the recipe's suite and architecture, made once (under a lock,
    so that builds side by side wait for one another instead of making it twice)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = cache_dir / f"base-{recipe.suite}-{recipe.arch}-v{BUILDER_VERSION}.tar"
    with (cache_dir / f"{base.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if base.is_file():
            return base
        debootstrap = shutil.which("debootstrap") or (
            "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
        )
        if debootstrap is None:
            raise ImageError(
                "building Debian images needs debootstrap: apt-get install debootstrap "
                "(scripts/setup.sh installs it)"
            )
        say(f"debootstrap {recipe.suite}/{recipe.arch} minbase from {mirror} (once)")
        root = workdir / "base"
        debs = workdir / "base-debs"
        _link_debs(cache_dir / "debs", debs)
        command = [
            debootstrap,
            "--variant=minbase",
            f"--arch={recipe.arch}",
            f"--cache-dir={debs}",
            recipe.suite,
            str(root),
            mirror,
        ]
        returncode, tail = _run(command, workdir / "debootstrap.log")
        if returncode != 0:
            raise ImageError(
                f"debootstrap of {recipe.suite}/{recipe.arch} from {mirror} failed "
                f"(exit {returncode}):\n  " + "\n  ".join(tail)
            )
        _link_debs(debs, cache_dir / "debs")
        partial = base.with_suffix(".partial")
        _pack(root, partial, workdir)
        partial.replace(base)  # whole or not at all
        shutil.rmtree(root, ignore_errors=True)
        return base


def _install(root: Path, packages: Iterable[str], workdir: Path) -> None:
    """``apt-get install`` in a chroot of ``root``: /proc mounted, the host's resolver,
    and a policy that starts no service; all three undone afterwards."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text(NO_SERVICES)
    policy.chmod(0o755)
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    try:
        shutil.copyfile("/etc/resolv.conf", resolv)
    except OSError:  # no resolver configured here: apt will say what it cannot reach
        resolv.write_text("")
    proc = root / "proc"
    _check(["mount", "-t", "proc", "proc", str(proc)], workdir)
    try:
        env = ["env", "-i", *(f"{k}={v}" for k, v in CHROOT_ENV.items())]
        for args in (["update"], ["upgrade"], ["install", *packages]):
            returncode, tail = _run(["chroot", str(root), *env, *APT, *args], workdir / "apt.log")
            if returncode != 0:
                raise ImageError(
                    f"apt-get {args[0]} failed (exit {returncode}):\n  " + "\n  ".join(tail)
                )
    finally:
        subprocess.run(["umount", "-l", str(proc)], capture_output=True, check=False)
        policy.unlink()
        resolv.unlink()
        resolv.write_text("")  # the engine mounts its own over it


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


# -- commands that can be stopped -------------------------------------------------------------

_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()
_stopping = threading.Event()


def allow_builds() -> None:
    """Let commands start again (a new batch of builds begins)."""
    _stopping.clear()


def stop_builds() -> None:
    """End every running build command with all of its children; start no more."""
    _stopping.set()
    with _running_lock:
        running = list(_running)
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _run(command: list[str], log: Path) -> tuple[int, list[str]]:
    """Run ``command`` in a session of its own, appending to ``log``; its exit status and
    the log's last lines. A terminal's Ctrl-C reaches dockyard, which stops it."""
    with log.open("ab") as sink:
        returncode = _run_stoppable(command, sink)
    return returncode, log.read_text(errors="replace").strip().splitlines()[-8:]


def _run_stoppable(command: list[str], sink: IO[bytes]) -> int:
    with _running_lock:
        if _stopping.is_set():
            raise ImageError("stopped")
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        _running.add(process)
    try:
        return process.wait()
    finally:
        with _running_lock:
            _running.discard(process)


def _pack(root: Path, tarball: Path, workdir: Path) -> None:
    _check(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tarball), "."], workdir
    )


def _check(command: list[str], workdir: Path) -> None:
    returncode, tail = _run(command, workdir / "commands.log")
    if returncode != 0:
        raise ImageError(f"{command[0]} failed (exit {returncode}):\n  " + "\n  ".join(tail))


# -- files ------------------------------------------------------------------------------------


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

    debootstrap mounts ``/proc`` and ``/sys`` inside the new root while it installs, and so
    does the chroot install; if a build dies in between they can stay mounted, and deleting
    through them must not happen.
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
