"""Tiny local images for tests and examples: no container registry needed.

``dockyard/busybox`` is made from the host's static busybox (Debian's
``busybox-static``): a tar of the binary plus one symlink per applet, imported
into the engine. Running ``python -m dockyard.testing.images`` builds it.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import docker

from dockyard.busybox import find_static_busybox

BUSYBOX_IMAGE = "dockyard/busybox:latest"


def busybox_tar(binary: Path) -> bytes:
    applets = subprocess.run(
        [str(binary), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "tmp", "etc", "root"):
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
    return buffer.getvalue()


def ensure_busybox_image(client: docker.APIClient | None = None, ref: str = BUSYBOX_IMAGE) -> str:
    """Import the busybox image unless it is already present; return its id."""
    api: Any = client or docker.APIClient(version="auto")
    try:
        return str(api.inspect_image(ref)["Id"])
    except docker.errors.ImageNotFound:
        pass
    repository, _, tag = ref.rpartition(":")
    api.import_image_from_data(
        busybox_tar(find_static_busybox()), repository=repository, tag=tag, changes=['CMD ["sh"]']
    )
    return str(api.inspect_image(ref)["Id"])


if __name__ == "__main__":
    print(ensure_busybox_image(ref=sys.argv[1] if len(sys.argv) > 1 else BUSYBOX_IMAGE))
