"""Finding the host's static busybox: the helper dockyard runs inside containers for
streaming, and the binary that the local test image is made of."""

from __future__ import annotations

import struct
from pathlib import Path

_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP)."""
    with path.open("rb") as fh:
        header = fh.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only
            return False
        phoff = struct.unpack_from("<Q", header, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    pt_interp = 3
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != pt_interp for i in range(phnum))


def find_static_busybox() -> Path:
    for candidate in _CANDIDATES:
        path = Path(candidate)
        if path.exists() and is_static_elf(path.resolve()):
            return path
    raise RuntimeError("no static busybox found: install Debian's busybox-static")
