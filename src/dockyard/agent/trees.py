"""Trees on the wire: a committed tree (or an input) as a tree stream (:mod:`.tree_wire`),
and a strict reader that builds one from a stream it does not trust.

The writer walks through :mod:`dockyard.disk.safefs` (links are sent as links, never
followed) and sends only folders, regular files (their permission bits, and the chunks
that are not zeros: holes stay holes) and symbolic links, which is all a sealed tree
holds. The reader accepts only those, with plain names, creates everything through
descriptors that never follow a link, in a scratch folder, within the :class:`Bounds` the
tree's seal counted (a stream that would pass them is refused there and then), and keeps
the tree only if sealing it gives the digest it was sent under.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from dockyard.agent.tree_wire import PIECE, Readable, Reader, TreeError, Writable, Writer
from dockyard.disk import content_digest, keeping, safecopy, safefs, sealing
from dockyard.disk.content_digest import CHUNK
from dockyard.disk.keeping import Bounds, read_record
from dockyard.disk.tree_limits import LIMITS, Limits, OutputRefused

# What a stream may make a system call refuse: the stream's fault, not the node's.
_REFUSALS = (errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTDIR, errno.EFBIG, errno.EINVAL)


# -- sending ----------------------------------------------------------------------------------


def write_tree(root: Path, out: Writable) -> None:
    """Send the tree at ``root`` to ``out``."""
    with safefs.opened(root) as root_fd:
        w = Writer(out, os.fstat(root_fd).st_mode)
        depth = 0
        for folder in safefs.walk(root_fd):
            if folder.rel:  # (a walk comes back up only to go down into a folder)
                for _ in range(depth - len(folder.rel) + 1):
                    w.up()
                w.folder(folder.rel[-1], os.fstat(folder.fd).st_mode)
            depth = len(folder.rel)
            for entry in folder.entries:
                mode = entry.info.st_mode
                if stat.S_ISLNK(mode):
                    w.link(entry.name, os.readlink(entry.name, dir_fd=folder.fd))
                elif stat.S_ISREG(mode):
                    fd = safefs.open_file(folder.fd, entry.name)
                    try:
                        _write_file(w, entry.name, fd)
                    finally:
                        os.close(fd)
    w.end()


def write_lone_file(fd: int, out: Writable) -> None:
    """Send the open regular file ``fd`` as a tree that holds it alone
    (:data:`~dockyard.disk.sealing.LONE_FILE`)."""
    w = Writer(out, sealing.LONE_ROOT_MODE)  # (the file keeps its own bits)
    _write_file(w, sealing.LONE_FILE, fd)
    w.end()


def _write_file(w: Writer, name: str, fd: int) -> None:
    info = os.fstat(fd)
    w.file(name, info.st_mode, info.st_size)
    for offset, data in content_digest.pieces(fd, info.st_size):
        w.piece(offset, data)


# -- receiving --------------------------------------------------------------------------------


def receive_tree(
    inp: Readable, digest: str, store: Path, bounds: Bounds, limits: Limits = LIMITS
) -> Path:
    """Build the tree sent on ``inp`` and keep it in ``store`` as ``digest``; raise
    :class:`TreeError` (and keep nothing) if it is not a plain tree of that digest, or the
    moment it would pass ``bounds`` or ``limits`` (depth and paths; its entries are bounded
    by ``bounds``)."""
    store.mkdir(parents=True, exist_ok=True, mode=0o755)
    incoming = store / ".incoming"
    incoming.mkdir(exist_ok=True, mode=0o700)
    scratch = incoming / secrets.token_hex(8)
    scratch.mkdir(mode=0o700)
    limits = Limits(limits.depth, min(bounds.entries, limits.entries), limits.path)
    try:
        reader = Reader(inp)
        with safefs.opened(scratch) as root_fd:
            _Builder(root_fd, bounds, limits).build(reader)
        os.chmod(scratch, reader.root_mode | 0o700)
        try:
            sealed = sealing.seal_tree(scratch, limits, sealing.kept_mode)
        except OutputRefused as exc:
            raise TreeError(f"refused the tree: {exc.message}") from None
        if sealed.digest != digest:
            raise TreeError(f"the tree sent as {digest[:12]} is {sealed.digest[:12]}")
        return keeping.keep(scratch, sealed, store)
    finally:
        with contextlib.suppress(FileNotFoundError):
            sealing.discard(scratch)


class _Builder:
    """Applies records to a scratch folder, counting against the bounds as it goes."""

    def __init__(self, root_fd: int, bounds: Bounds, limits: Limits):
        self.folders = safefs.Folders(root_fd)  # (a step down or up is one system call)
        self.bounds, self.limits = bounds, limits
        self.size = self.data = self.files = self.entries = self.records = 0
        self.path = [0]  # the length of the current folder's path, with its '/', by depth
        self.file: tuple[int, int, int] | None = None  # (fd, size, where its data may go on)

    def build(self, reader: Reader) -> None:
        try:
            while (kind := reader.kind()) != b"E":
                if kind != b"P":
                    self._end_file()
                self.records += 1
                self._apply(kind, reader)
            self._end_file()
            if reader.number(8) != self.records or not reader.at_end():
                raise TreeError("the stream is corrupted (its end does not match it)")
        except FileExistsError as exc:
            raise TreeError(f"refused {exc.filename!r}: sent twice") from None
        except OSError as exc:
            if exc.errno not in _REFUSALS:
                raise
            raise TreeError(f"refused a member: {exc.strerror} ({exc.filename})") from None
        finally:
            self._end_file()
            self.folders.close()

    def _apply(self, kind: bytes, reader: Reader) -> None:
        if kind == b"P":
            self._piece(reader)
        elif kind == b"U":
            if len(self.path) == 1:
                raise TreeError("the stream goes up from the tree's root")
            self.folders.up()
            self.path.pop()
        elif kind == b"D":
            mode = reader.mode()
            name = self._entry(reader.name())
            if len(self.path) > self.limits.depth:
                raise TreeError(
                    f"refused the tree: it nests folders more than {self.limits.depth:,} deep"
                )
            # (made ours to fill; sealing leaves it its own bits less writing)
            safefs.make_dir(self.folders.current(), name, mode | 0o700)  # (exists: twice)
            self.folders.down(name)
            self.path.append(self.path[-1] + len(name.encode("utf-8", "surrogateescape")) + 1)
        elif kind == b"F":
            self._start_file(reader)
        elif kind == b"L":
            name = self._entry(reader.name())
            os.symlink(reader.target(), name, dir_fd=self.folders.current())
        else:
            raise TreeError(f"the stream is corrupted (a record of type {kind!r})")

    def _entry(self, name: str) -> str:
        """Count one more entry named ``name`` in the current folder."""
        self.entries += 1
        if self.entries > self.bounds.entries:
            raise TreeError(f"refused the tree: more than its {self.bounds.entries:,} entries")
        length = self.path[-1] + len(name.encode("utf-8", "surrogateescape"))
        if length > self.limits.path:
            raise TreeError(f"refused the tree: a path longer than {self.limits.path:,} bytes")
        return name

    def _start_file(self, reader: Reader) -> None:
        mode = reader.mode()
        name = self._entry(reader.name())
        size = reader.number(8)
        self.files += 1
        self.size += size
        if self.files > self.bounds.files or self.size > self.bounds.size:
            raise TreeError(f"refused {name!r}: the tree holds less than this stream says")
        fd = safefs.create_file(self.folders.current(), name)
        self.file = (fd, size, 0)
        os.ftruncate(fd, size)  # (no blocks: all a hole until its pieces are written)
        os.fchmod(fd, mode)

    def _piece(self, reader: Reader) -> None:
        offset, length = reader.number(8), reader.number(4)
        if self.file is None:
            raise TreeError("the stream is corrupted (data that is no file's)")
        fd, size, after = self.file
        self.data += length
        if not (0 < length <= PIECE and after <= offset and offset + length <= size):
            raise TreeError("the stream is corrupted (a piece out of its file's order)")
        if offset % CHUNK or (length % CHUNK and offset + length != size):
            # (a writer sends whole chunks: tiny pieces would cost a write a byte)
            raise TreeError("the stream is corrupted (a piece that is not whole chunks)")
        if self.data > self.bounds.data:
            raise TreeError("refused the tree: more data than it holds")
        safecopy.write_at(fd, reader.take(length, "a file's data"), offset)
        self.file = (fd, size, offset + length)

    def _end_file(self) -> None:
        if self.file is not None:
            os.close(self.file[0])
            self.file = None


__all__ = [
    "Bounds",
    "Readable",
    "TreeError",
    "Writable",
    "read_record",
    "receive_tree",
    "write_lone_file",
    "write_tree",
]
