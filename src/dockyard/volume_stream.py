"""``dockyard volume send`` / ``receive``: a snapshot, or the increment between two, as a
self-describing, verifiable byte stream; the building block for moving volumes between
hosts.

Format (version 1)::

    DOCKYARD-VOLUME-STREAM 1\\n
    {"snapshot": UUID, "base": UUID or null, "volume": NAME, "tag": ...}\\n
    then records, each a type byte, a JSON line and (files only) raw data:
      D {"path", "mode", "mtime_ns"}                       a directory
      F {"path", "mode", "mtime_ns", "size", "extents"}    a file: the data of each
        [offset, length] extent follows; the gaps are holes, so sparse files stay sparse;
        then the data's sha256 as a hex line
      L {"path", "target"}                                 a symbolic link
      X {"path"}                                           gone since the base (increments)
      E {"records", "bytes", "digest"}                     the end: counts, and the sha256
                                                           of everything before it

Every record is checked as it arrives and the whole stream at its end. ``receive``
builds the snapshot in a staging folder (starting from hard links to its base, for an
increment) and renames it into place only when the end record checks out: a corrupted or
truncated stream changes nothing. Files are independent records, so a future resumable
transfer can skip those already received with a matching digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from dockyard import safefs
from dockyard.errors import InvalidInput, UnknownReference
from dockyard.volumes import Snapshot, VolumeStore, mirror

MAGIC = b"DOCKYARD-VOLUME-STREAM 1\n"
CHUNK = 1 << 20


class StreamError(InvalidInput):
    """A stream that is not valid: nothing was applied."""


class _Writer:
    def __init__(self, out: BinaryIO):
        self.out = out
        self.digest = hashlib.sha256()
        self.bytes = 0
        self.records = 0

    def write(self, data: bytes) -> None:
        self.out.write(data)
        self.digest.update(data)
        self.bytes += len(data)

    def record(self, kind: bytes, header: dict[str, object]) -> None:
        self.write(kind + json.dumps(header, separators=(",", ":")).encode() + b"\n")
        self.records += 1


def volume_extents(path: Path, size: int) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return safefs.extents(fd, size)
    finally:
        os.close(fd)


def clear(path: Path) -> None:
    safefs.rmtree(path)


def _send_file(w: _Writer, path: Path, rel: str, info: os.stat_result) -> None:
    extents = volume_extents(path, info.st_size)
    w.record(
        b"F",
        {
            "path": rel,
            "mode": stat.S_IMODE(info.st_mode) | 0o200,
            "mtime_ns": info.st_mtime_ns,
            "size": info.st_size,
            "extents": extents,
        },
    )
    content = hashlib.sha256()
    with path.open("rb") as fh:
        for start, length in extents:
            fh.seek(start)
            while length:
                chunk = fh.read(min(CHUNK, length))
                if not chunk:
                    raise StreamError(f"{rel} shrank while it was being sent")
                w.write(chunk)
                content.update(chunk)
                length -= len(chunk)
    w.write(content.hexdigest().encode() + b"\n")


def send(
    store: VolumeStore,
    name: str,
    out: BinaryIO,
    base_ref: str | None = None,
    to_ref: str | None = None,
) -> tuple[int, int]:
    """Write snapshot ``to_ref`` (default: the latest), or its increment over ``base_ref``.
    Returns (records, bytes)."""
    snaps = store.snapshots(name)
    if not snaps and to_ref is None:
        raise UnknownReference(
            f"volume {name!r} has no snapshot to send; take one with "
            f"`dockyard volume snapshot {name}`"
        )
    target = store.find(name, to_ref) if to_ref is not None else snaps[-1]
    base = store.find(name, base_ref) if base_ref is not None else None
    tree = store.tree(name, target)
    base_tree = store.tree(name, base) if base is not None else None
    w = _Writer(out)
    w.write(MAGIC)
    w.write(
        json.dumps(
            {
                "snapshot": target.uuid,
                "base": base.uuid if base else None,
                "volume": name,
                "tag": target.tag,
            }
        ).encode()
        + b"\n"
    )
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(tree)
        if rel_dir != Path("."):
            info = Path(dirpath).stat()
            w.record(
                b"D",
                {
                    "path": str(rel_dir),
                    "mode": stat.S_IMODE(info.st_mode),
                    "mtime_ns": info.st_mtime_ns,
                },
            )
            seen.add(str(rel_dir))
        links = [d for d in dirnames if (Path(dirpath) / d).is_symlink()]
        for entry in sorted(filenames + links):
            path, rel = Path(dirpath) / entry, str(rel_dir / entry)
            seen.add(rel)
            info = path.lstat()
            old = base_tree / rel if base_tree is not None else None
            if old is not None and (old.is_symlink() or old.exists()):
                old_info = old.lstat()
                if old_info.st_ino == info.st_ino or (
                    stat.S_ISLNK(info.st_mode)
                    and old.is_symlink()
                    and os.readlink(old) == os.readlink(path)
                ):
                    continue  # unchanged since the base: the receiver has it
            if stat.S_ISLNK(info.st_mode):
                w.record(b"L", {"path": rel, "target": os.readlink(path)})
            elif stat.S_ISREG(info.st_mode):
                _send_file(w, path, rel, info)
    if base_tree is not None:
        for dirpath, dirnames, filenames in os.walk(base_tree):
            rel_dir = Path(dirpath).relative_to(base_tree)
            for entry in filenames + dirnames:
                rel = str(rel_dir / entry)
                if rel not in seen and str(rel_dir) in seen | {"."}:
                    w.record(b"X", {"path": rel})
    end = {"records": w.records, "bytes": w.bytes}
    w.out.write(b"E" + json.dumps({**end, "digest": w.digest.hexdigest()}).encode() + b"\n")
    return w.records + 1, w.bytes


class _Reader:
    def __init__(self, inp: BinaryIO):
        self.inp = inp
        self.digest = hashlib.sha256()
        self.bytes = 0

    def line(self, limit: int = 1 << 20, *, counted: bool = True) -> bytes:
        data = self.inp.readline(limit)
        if not data.endswith(b"\n"):
            raise StreamError("the stream is truncated (it ends in the middle of a record)")
        if counted:
            self.digest.update(data)
            self.bytes += len(data)
        return data

    def exactly(self, size: int) -> bytes:
        data = self.inp.read(size)
        if len(data) != size:
            raise StreamError("the stream is truncated (a file's data is cut short)")
        self.digest.update(data)
        self.bytes += size
        return data


def _inside(root: Path, rel: str) -> Path:
    path = Path(os.path.normpath(root / rel))
    if not rel or os.path.isabs(rel) or (path != root and root not in path.parents):
        raise StreamError(f"the stream names a path outside the volume: {rel!r}")
    return path


def receive(store: VolumeStore, name: str, inp: BinaryIO) -> Snapshot:
    """Apply a stream to volume ``name`` (created if absent): all of it, or nothing."""
    r = _Reader(inp)
    if r.line(len(MAGIC) + 1) != MAGIC:
        raise StreamError("not a dockyard volume stream (or a newer version of one)")
    try:
        header = json.loads(r.line())
    except ValueError:
        raise StreamError("the stream's header is corrupted") from None
    existing = store.exists(name)
    base_uuid = header.get("base")
    base: Snapshot | None = None
    if base_uuid:
        base = (
            next((s for s in store.snapshots(name) if s.uuid == base_uuid), None)
            if existing
            else None
        )
        if base is None:
            raise StreamError(
                f"this is an increment over snapshot {base_uuid}, which volume "
                f"{name!r} does not have here; send a full stream first"
            )
    if any(s.uuid == header["snapshot"] for s in store.snapshots(name)) if existing else False:
        raise StreamError(f"volume {name!r} already has snapshot {header['snapshot']}")
    with store.lock(name, exclusive=True):
        folder = store.folder(name) / "snapshots"
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".receiving-{os.getpid()}"
        safefs.rmtree(staging)
        tree = staging / "tree"
        try:
            if base is not None:
                shutil.copytree(store.tree(name, base), tree, symlinks=True, copy_function=os.link)
            else:
                tree.mkdir(parents=True)
            files, total = _apply(r, tree)
            store.ensure(name)
            snap = store.adopt_snapshot(
                name, staging, header["snapshot"], header.get("tag"), files, total
            )
        except BaseException:
            safefs.rmtree(staging)
            raise
        mirror(store.tree(name, snap), store.live(name))
    return snap


def _apply(r: _Reader, tree: Path) -> tuple[int, int]:
    files = total = records = 0
    while True:
        kind = r.inp.read(1)
        if not kind:
            raise StreamError("the stream is truncated (no end record)")
        if kind == b"E":
            end = json.loads(r.line(counted=False))
            if end.get("digest") != r.digest.hexdigest() or end.get("records") != records:
                raise StreamError("the stream is corrupted (its checksum does not match)")
            return files, total
        r.digest.update(kind)
        r.bytes += 1
        records += 1
        try:
            meta = json.loads(r.line())
        except ValueError:
            raise StreamError("the stream is corrupted (a record header is unreadable)") from None
        path = _inside(tree, meta["path"])
        if kind == b"D":
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(meta["mode"] | 0o700)
        elif kind == b"L":
            clear(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(meta["target"], path)
        elif kind == b"X":
            clear(path)
        elif kind == b"F":
            clear(path)  # never write through a hard link to the base
            path.parent.mkdir(parents=True, exist_ok=True)
            content = hashlib.sha256()
            with path.open("wb") as fh:
                for start, length in meta["extents"]:
                    fh.seek(start)
                    while length:
                        chunk = r.exactly(min(CHUNK, length))
                        fh.write(chunk)
                        content.update(chunk)
                        length -= len(chunk)
                fh.truncate(meta["size"])
            if r.line().strip().decode() != content.hexdigest():
                raise StreamError(
                    f"the stream is corrupted ({meta['path']} does not match its checksum)"
                )
            os.chmod(path, meta["mode"] & ~0o222)
            os.utime(path, ns=(meta["mtime_ns"], meta["mtime_ns"]))
            files += 1
            total += meta["size"]
        else:
            raise StreamError(f"the stream is corrupted (unknown record type {kind!r})")
