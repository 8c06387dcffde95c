"""Trees on the wire: a committed tree (or an input) as a tar stream, and a strict reader
that builds one from a stream it does not trust.

The writer walks through :mod:`dockyard.storage.safefs` (links are sent as links, never
followed) and sends only folders, regular files (with their executable bit) and symbolic
links, which is all a sealed tree holds. The reader accepts only those, with plain relative
names, creates everything through descriptors that never follow a link, in a scratch folder,
and keeps the tree only if sealing it gives the digest it was sent under.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tarfile
from pathlib import Path
from typing import IO, Protocol, cast

from dockyard.storage import outputs as sealing
from dockyard.storage import safefs

CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class TreeError(Exception):
    """A stream that is not a tree, or not the one it was sent as."""


def write_tree(root: Path, out: Writable) -> None:
    """Send the tree at ``root`` to ``out`` as a tar stream."""
    with (
        tarfile.open(fileobj=cast(IO[bytes], out), mode="w|", format=tarfile.PAX_FORMAT) as tar,
        safefs.opened(root) as root_fd,
    ):
        for folder in safefs.walk(root_fd):
            for entry in folder.entries:
                name, mode = folder.path(entry.name), entry.info.st_mode
                if stat.S_ISDIR(mode):
                    tar.addfile(_info(name, tarfile.DIRTYPE, 0o755))
                elif stat.S_ISLNK(mode):
                    info = _info(name, tarfile.SYMTYPE, 0o777)
                    info.linkname = os.readlink(entry.name, dir_fd=folder.fd)
                    tar.addfile(info)
                elif stat.S_ISREG(mode):
                    fd = safefs.open_file(folder.fd, entry.name)
                    with os.fdopen(fd, "rb") as fh:
                        info = _info(name, tarfile.REGTYPE, _file_mode(mode))
                        info.size = os.fstat(fd).st_size
                        tar.addfile(info, fh)


def write_lone_file(fd: int, out: Writable) -> None:
    """Send the open regular file ``fd`` as a tree that holds it alone
    (:data:`~dockyard.storage.outputs.LONE_FILE`)."""
    info = os.fstat(fd)
    with tarfile.open(fileobj=cast(IO[bytes], out), mode="w|", format=tarfile.PAX_FORMAT) as tar:
        member = _info(sealing.LONE_FILE, tarfile.REGTYPE, _file_mode(info.st_mode))
        member.size = info.st_size
        with os.fdopen(os.dup(fd), "rb") as fh:
            fh.seek(0)
            tar.addfile(member, fh)


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    return info


def _file_mode(mode: int) -> int:
    return 0o755 if mode & 0o111 else 0o644


def receive_tree(inp: Readable, digest: str, store: Path) -> Path:
    """Build the tree sent on ``inp`` and keep it in ``store`` as ``digest``; raise
    :class:`TreeError` (and keep nothing) if it is not a plain tree of that digest."""
    store.mkdir(parents=True, exist_ok=True, mode=0o755)
    incoming = store / ".incoming"
    incoming.mkdir(exist_ok=True, mode=0o700)
    scratch = incoming / secrets.token_hex(8)
    scratch.mkdir(mode=0o700)
    try:
        with safefs.opened(scratch) as root_fd:
            _extract(inp, root_fd)
        sealed = sealing.seal_tree(scratch)
        if sealed.digest != digest:
            raise TreeError(f"the tree sent as {digest[:12]} is {sealed.digest[:12]}")
        os.chmod(scratch, 0o555)
        return sealing.place(scratch, sealed, store)
    finally:
        with contextlib.suppress(FileNotFoundError):
            sealing.discard(scratch)


def _extract(inp: Readable, root_fd: int) -> None:
    try:
        with tarfile.open(fileobj=cast(IO[bytes], inp), mode="r|") as tar:
            for member in tar:
                parts = _parts(member.name)
                parent = _parent(root_fd, parts[:-1])
                try:
                    _make(tar, member, parent, parts[-1])
                finally:
                    os.close(parent)
    except tarfile.TarError as exc:
        raise TreeError(f"not a tree stream: {exc}") from None


def _parts(name: str) -> list[str]:
    parts = name.split("/")
    if not name or name.startswith("/") or "\0" in name:
        raise TreeError(f"refused a member named {name!r}")
    if any(part in ("", ".", "..") for part in parts):
        raise TreeError(f"refused a member named {name!r}")
    return parts


def _parent(root_fd: int, parts: list[str]) -> int:
    """The folder ``parts`` under the root, made as needed; never through a link."""
    fd = os.dup(root_fd)
    for part in parts:
        with contextlib.suppress(FileExistsError):
            safefs.make_dir(fd, part, 0o755)
        try:
            child = safefs.open_dir(fd, part)
        except OSError as exc:
            os.close(fd)
            raise TreeError(f"refused a member under {part!r}: {exc.strerror}") from None
        os.close(fd)
        fd = child
    return fd


def _make(tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int, name: str) -> None:
    try:
        if member.isdir():
            with contextlib.suppress(FileExistsError):
                safefs.make_dir(parent, name, 0o755)
        elif member.issym():
            os.symlink(member.linkname, name, dir_fd=parent)  # data: never followed here
        elif member.isreg():
            source = tar.extractfile(member)
            assert source is not None
            fd = safefs.create_file(parent, name)
            with os.fdopen(fd, "wb") as sink:
                while chunk := source.read(CHUNK):
                    sink.write(chunk)
                os.fchmod(fd, _file_mode(member.mode))
        else:
            raise TreeError(f"refused {member.name!r}: only folders, files and links are data")
    except FileExistsError:
        raise TreeError(f"refused {member.name!r}: sent twice") from None
