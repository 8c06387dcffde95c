"""Trees on the wire: a committed tree (or an input) as a tree stream (:mod:`.tree_wire`),
and a strict reader that builds one from a stream it does not trust.

The writer walks through :mod:`dockyard.disk.safefs` (links are sent as links, never
followed) and sends only folders, regular files (their permission bits, and the chunks
that are not zeros: holes stay holes) and symbolic links, which is all a sealed tree
holds. The reader accepts only those, with plain names, creates everything through
descriptors that never follow a link, in a scratch folder, within the :class:`Bounds` the
tree's seal counted (a stream that would pass them is refused there and then), and keeps
the tree only if it has the digest it was sent under. That digest is computed as the tree
is built, in the same pass (each piece hashed as it is written, each entry's line noted
and the lines put in walk order at the end), and the entries are given the modes a seal
would give them as they are made: no second read of what arrived. The scratch folder is
the agent's alone (its store's, mode 0700), so what was written is what was hashed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from dockyard.agent.tree_wire import PIECE, Readable, Reader, TreeError, Writable, Writer
from dockyard.disk import content_digest, keeping, safecopy, safefs, sealing, tree_digests
from dockyard.disk.content_digest import CHUNK
from dockyard.disk.keeping import Bounds, read_record
from dockyard.disk.tree_limits import LIMITS, Limits

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
            builder = _Builder(root_fd, bounds, limits)
            builder.build(reader)
        # (as a seal of it would leave it: its own bits less writing, its owner's to enter)
        os.chmod(scratch, _folder_mode(reader.root_mode))
        sealed = builder.sealed(reader.root_mode)
        if sealed.digest != digest:
            raise TreeError(f"the tree sent as {digest[:12]} is {sealed.digest[:12]}")
        return keeping.keep(scratch, sealed, store)
    finally:
        with contextlib.suppress(FileNotFoundError):
            sealing.discard(scratch)


def _folder_mode(mode: int) -> int:
    """The bits a received folder keeps (sent as ``mode``), as a seal with
    :func:`~dockyard.disk.sealing.kept_mode` leaves them."""
    return sealing.kept_mode(stat.S_IFDIR | mode | 0o700)


def _file_mode(mode: int) -> int:
    """The bits a received file keeps (sent as ``mode``)."""
    return sealing.kept_mode(stat.S_IFREG | mode)


class _Listing:
    """What the tree's digest needs of one folder built from a stream: its files and
    links (less their paths), and its folders, by name."""

    __slots__ = ("entries", "folders")

    def __init__(self) -> None:
        # (name, a file's kept bits and its content digest; a link: -1 and its target)
        self.entries: list[tuple[str, int, str]] = []
        self.folders: list[tuple[str, int, _Listing]] = []  # (name, its kept bits, listing)


def _tree_digest(root_mode: int, root: _Listing) -> str:
    """The digest of a built tree from its listings: the lines
    :func:`~dockyard.disk.tree_digests.tree_digest` reads from a walk, in its order (names
    in order, a folder's files and links, then its folders' lines, then each folder)."""
    outer = hashlib.sha256(tree_digests.root_line(stat.S_IFDIR | _folder_mode(root_mode)))
    stack: list[tuple[str, _Listing]] = [("", root)]
    while stack:
        prefix, listing = stack.pop()
        for name, bits, rest in sorted(listing.entries):
            rel = prefix + name
            line = tree_digests.file_line(rel, bits, rest) if bits >= 0 else f"L {rel}\0{rest}"
            outer.update(line.encode("utf-8", "surrogateescape") + b"\n")
        folders = sorted(listing.folders, key=lambda f: f[0])
        for name, mode, _ in folders:
            line = f"D{tree_digests.digest_mode(stat.S_IFDIR | mode):03o} {prefix}{name}\n"
            outer.update(line.encode("utf-8", "surrogateescape"))
        stack.extend((f"{prefix}{name}/", sub) for name, _, sub in reversed(folders))
    return outer.hexdigest()


class _Builder:
    """Applies records to a scratch folder, counting against the bounds as it goes, and
    hashing what it writes."""

    def __init__(self, root_fd: int, bounds: Bounds, limits: Limits):
        self.folders = safefs.Folders(root_fd)  # (a step down or up is one system call)
        self.bounds, self.limits = bounds, limits
        self.size = self.data = self.files = self.entries = self.records = 0
        self.kept_data = 0  # bytes in chunks that are not zeros (what the digest counts)
        self.path = [0]  # the length of the current folder's path, with its '/', by depth
        self.listings = [_Listing()]  # the current folder's, by depth
        self.modes = [0]  # the bits each folder along the path keeps (the root's: later)
        # (fd, its hasher, its name and kept bits, where its data may go on)
        self.file: tuple[int, content_digest.Hasher, str, int, int] | None = None
        self.buffer = memoryview(bytearray(PIECE))

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
            while len(self.path) > 1:  # (the folders the stream did not leave)
                self._up()
        except FileExistsError as exc:
            raise TreeError(f"refused {exc.filename!r}: sent twice") from None
        except OSError as exc:
            if exc.errno not in _REFUSALS:
                raise
            raise TreeError(f"refused a member: {exc.strerror} ({exc.filename})") from None
        finally:
            if self.file is not None:
                os.close(self.file[0])
                self.file = None
            self.folders.close()

    def sealed(self, root_mode: int) -> sealing.Sealed:
        """What a seal of the built tree gives (its digest, from what was written)."""
        digest = _tree_digest(root_mode, self.listings[0])
        return sealing.Sealed(digest, self.size, self.files, (), self.kept_data, self.entries)

    def _apply(self, kind: bytes, reader: Reader) -> None:
        if kind == b"P":
            self._piece(reader)
        elif kind == b"U":
            if len(self.path) == 1:
                raise TreeError("the stream goes up from the tree's root")
            self._up()
        elif kind == b"D":
            mode = reader.mode()
            name = self._entry(reader.name())
            if len(self.path) > self.limits.depth:
                raise TreeError(
                    f"refused the tree: it nests folders more than {self.limits.depth:,} deep"
                )
            # (made ours to fill; given the bits it keeps when it is left)
            safefs.make_dir(self.folders.current(), name, mode | 0o700)  # (exists: twice)
            self.folders.down(name)
            self.path.append(self.path[-1] + len(name.encode("utf-8", "surrogateescape")) + 1)
            listing = _Listing()
            self.listings[-1].folders.append((name, _folder_mode(mode), listing))
            self.listings.append(listing)
            self.modes.append(_folder_mode(mode))
        elif kind == b"F":
            self._start_file(reader)
        elif kind == b"L":
            name = self._entry(reader.name())
            target = reader.target()
            if "\n" in target:  # (a seal drops it: no line of a digest holds a line break)
                raise TreeError(f"refused a link to {target!r}: a line break")
            os.symlink(target, name, dir_fd=self.folders.current())
            self.listings[-1].entries.append((name, -1, target))
        else:
            raise TreeError(f"the stream is corrupted (a record of type {kind!r})")

    def _up(self) -> None:
        os.fchmod(self.folders.current(), self.modes.pop())
        self.folders.up()
        self.path.pop()
        self.listings.pop()

    def _entry(self, name: str) -> str:
        """Count one more entry named ``name`` in the current folder."""
        self.entries += 1
        if self.entries > self.bounds.entries:
            raise TreeError(f"refused the tree: more than its {self.bounds.entries:,} entries")
        if "\n" in name:  # (a seal drops it: no line of a digest holds a line break)
            raise TreeError(f"refused a member named {name!r}: a line break")
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
        kept = _file_mode(mode)
        self.file = (fd, content_digest.Hasher(size), name, kept, 0)
        os.ftruncate(fd, size)  # (no blocks: all a hole until its pieces are written)
        os.fchmod(fd, kept)  # (written through this descriptor, opened for writing)

    def _piece(self, reader: Reader) -> None:
        offset, length = reader.number(8), reader.number(4)
        if self.file is None:
            raise TreeError("the stream is corrupted (data that is no file's)")
        fd, hasher, name, kept, after = self.file
        self.data += length
        if not (0 < length <= PIECE and after <= offset and offset + length <= hasher.size):
            raise TreeError("the stream is corrupted (a piece out of its file's order)")
        if offset % CHUNK or (length % CHUNK and offset + length != hasher.size):
            # (a writer sends whole chunks: tiny pieces would cost a write a byte)
            raise TreeError("the stream is corrupted (a piece that is not whole chunks)")
        if self.data > self.bounds.data:
            raise TreeError("refused the tree: more data than it holds")
        view = self.buffer[:length]
        reader.take_into(view, "a file's data")
        safecopy.write_at(fd, view, offset)
        hasher.update(offset, view)
        self.file = (fd, hasher, name, kept, offset + length)

    def _end_file(self) -> None:
        if self.file is not None:
            fd, hasher, name, kept, _ = self.file
            self.file = None
            os.close(fd)
            content = hasher.result()
            self.kept_data += content.data
            bits = tree_digests.digest_mode(kept)
            self.listings[-1].entries.append((name, bits, content.hex))


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
