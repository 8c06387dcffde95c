"""Tiny local images for tests and examples: no container registry needed.

``dockyard/busybox`` is made from the host's static busybox (Debian's
``busybox-static``): a tar of the binary plus one symlink per applet, imported
into the engine. Running ``python -m dockyard.testing.images`` builds it.
``dockyard/sqlite`` adds the host's ``sqlite3`` (Debian's ``sqlite3``) with the shared
libraries ``ldd`` names: a real database engine for the service tests.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker

from dockyard.images.busybox import find_static_busybox

BUSYBOX_IMAGE = "dockyard/busybox:latest"
SQLITE_IMAGE = "dockyard/sqlite:latest"
BASE_DIRECTORIES = ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "tmp", "etc", "root")


def shared_libraries(binary: Path) -> list[Path]:
    """The libraries a dynamically linked program loads (from ``ldd``)."""
    listing = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in listing.splitlines():
        words = line.split()
        path = words[2] if "=>" in words and len(words) > 2 else words[0] if words else ""
        if path.startswith("/"):
            found.append(Path(path))
    return found


def busybox_tar(binary: Path, extra: Sequence[Path] = ()) -> bytes:
    applets = subprocess.run(
        [str(binary), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in BASE_DIRECTORIES:
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(binary), arcname="bin/busybox")
        for applet in applets:
            if applet == "bin/busybox":
                continue
            link = tarfile.TarInfo(applet)
            link.type = tarfile.SYMTYPE
            link.linkname = "/bin/busybox"
            tar.addfile(link)
        for name, text in (
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        added = set(BASE_DIRECTORIES)
        for path in extra:
            parts = path.parts[1:]
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in added:
                    info = tarfile.TarInfo(parent)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
                    added.add(parent)
            tar.add(os.path.realpath(path), arcname="/".join(parts))
    return buffer.getvalue()


def ensure_image(
    ref: str, programs: Sequence[Path] = (), client: docker.APIClient | None = None
) -> str:
    """Import busybox plus ``programs`` (and their libraries) as ``ref`` unless present."""
    api: Any = client or docker.APIClient(version="auto")
    try:
        return str(api.inspect_image(ref)["Id"])
    except docker.errors.ImageNotFound:
        pass
    extra = [p for program in programs for p in (program, *shared_libraries(program))]
    repository, _, tag = ref.rpartition(":")
    api.import_image_from_data(
        busybox_tar(find_static_busybox(), extra),
        repository=repository,
        tag=tag,
        changes=['CMD ["sh"]'],
    )
    return str(api.inspect_image(ref)["Id"])


def ensure_busybox_image(client: docker.APIClient | None = None, ref: str = BUSYBOX_IMAGE) -> str:
    return ensure_image(ref, (), client)


def ensure_sqlite_image(client: docker.APIClient | None = None) -> str:
    program = shutil.which("sqlite3")
    if program is None:
        raise RuntimeError("no sqlite3 on this host: install Debian's sqlite3")
    return ensure_image(SQLITE_IMAGE, (Path(program),), client)


if __name__ == "__main__":
    print(ensure_busybox_image(ref=sys.argv[1] if len(sys.argv) > 1 else BUSYBOX_IMAGE))
