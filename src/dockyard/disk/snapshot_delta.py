"""A snapshot kept as what changed since the one before it (its *parent*): the list of
changes (``changes.json``) and the data of the files that changed (``delta/N``, numbered in
the order they came). Taking one, or receiving one from another node, costs the changes,
not the volume; the full tree (``tree/``: hard links to the parent's files and to the
delta's) is built afterwards, off the path that waits (a move between nodes), or when
something needs it (:func:`build`).

The changes are applied one after the other, in order (a folder before what is in it), as
a volume stream's records are, so the increment over the parent is the list itself with
the delta's data. The paths are a container's: every one is reached through
:mod:`.safefs` (the folder they are applied to may be a live folder holding its links),
and :class:`Outcome` refuses a list that does not apply before anything is.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dockyard.disk import safecopy, safefs
from dockyard.disk.live_index import Change, LiveIndex, status_of
from dockyard.errors import DockyardError

CHANGES = "changes.json"
DELTA = "delta"
TREE = "tree"
KINDS = {"D": "d", "F": "f", "L": "l"}  # a change's kind -> the kind of entry it makes


@dataclass(frozen=True)
class Step:
    """One change: ``D`` a folder (its permission bits), ``F`` a file (its data is
    ``delta/<data>``), ``L`` a link (its target), ``X`` gone."""

    kind: str
    path: str
    mode: int = 0
    target: str = ""
    data: int = -1


class BrokenSnapshot(DockyardError):
    """A list of changes that does not apply to the tree it is over."""


def save(folder: Path, parent: str, steps: list[Step]) -> None:
    rows = [[s.kind, s.path, s.mode, s.target, s.data] for s in steps]
    (folder / CHANGES).write_text(json.dumps({"parent": parent, "steps": rows}))


def load(folder: Path) -> tuple[str, list[Step]]:
    """(the parent's uuid, the steps) of the snapshot in ``folder``."""
    try:
        data = json.loads((folder / CHANGES).read_text())
        rows = data["steps"]
        steps = [Step(str(k), _path(str(p)), int(m), str(t), int(n)) for k, p, m, t, n in rows]
        return str(data["parent"]), steps
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise BrokenSnapshot(f"{folder / CHANGES} cannot be read ({exc})") from None


def _path(path: str) -> str:
    if not path or "\0" in path or any(p in ("", ".", "..") for p in path.split("/")):
        raise ValueError(f"{path!r} is not a path in a volume")
    return path


def has_changes(folder: Path) -> bool:
    return (folder / CHANGES).is_file()


def gone_since(gone: dict[str, int], path: str, at: int) -> bool:
    """Whether ``path``, or a folder above it, was removed or replaced after ``at`` (``gone``:
    path -> when). Costs the depth of the path."""
    if not gone:
        return False
    if gone.get(path, -1) > at:
        return True
    end = path.rfind("/")
    while end > 0:
        if gone.get(path[:end], -1) > at:
            return True
        end = path.rfind("/", 0, end)
    return False


class Outcome:
    """The tree an index describes (each entry's kind, a file's size) as steps change it,
    refusing a step that does not apply: one whose folder is missing, or is a file or a
    link.

    The index is not copied and nothing is removed from it: a step that removes or replaces
    a folder notes when (its number) in :attr:`gone`, and an entry is there only if neither
    it nor a folder above it went after it was made. So a step costs the depth of its path,
    however many entries the tree has and however many folders go."""

    def __init__(self, index: LiveIndex):
        self.base = index.entries
        self.made: dict[str, tuple[str, int, int]] = {}  # path -> (kind, size, its step)
        self.gone: dict[str, int] = {}  # path -> the last step that removed what was there
        self.count = 0

    def kind(self, path: str) -> str | None:
        made = self.made.get(path)
        if made is not None:
            kind, at = made[0], made[2]
        elif path in self.base:
            kind, at = self.base[path][0], -1
        else:
            return None
        return None if self._gone_since(path, at) else kind

    def _gone_since(self, path: str, at: int) -> bool:
        return gone_since(self.gone, path, at)

    def step(self, kind: str, path: str, size: int = 0) -> None:
        above = path.rpartition("/")[0]
        if above and self.kind(above) != "d":
            raise BrokenSnapshot(
                f"{path!r} is not in a folder"
                + (" (it goes through a file or a link)" if self.kind(above) else "")
            )
        was = self.kind(path)
        number = self.count = self.count + 1
        if kind == "D" and was == "d":
            return  # (its permissions: what is in it stays)
        if was is not None:
            self.gone[path] = number  # (and all that was in it, if it was a folder)
        if kind == "X":
            self.made.pop(path, None)
        else:
            self.made[path] = (KINDS[kind], size, number)

    def totals(self) -> tuple[int, int]:
        """(regular files, their bytes)."""
        files = total = 0
        for path, status in self.base.items():
            if status[0] == "f" and path not in self.made and not self._gone_since(path, -1):
                files, total = files + 1, total + status[2]
        for path, (kind, size, at) in self.made.items():
            if kind == "f" and not self._gone_since(path, at):
                files, total = files + 1, total + size
        return files, total


class Place:
    """Folders under a root, opened by their names without following links."""

    def __init__(self, root: int):
        self.folders = safefs.Folders(root)

    def parent(self, path: str) -> tuple[int, str]:
        """The folder ``path`` is in, and its last name."""
        *above, name = path.split("/")
        return self.folders.open(above), name

    def clear(self, path: str) -> tuple[int, str]:
        """Remove what is at ``path``; its folder (opened again) and name."""
        parent, name = self.parent(path)
        if safefs.remove(parent, name):
            self.folders.reset()  # it may have been one of the open folders
            parent, name = self.parent(path)
        return parent, name

    def close(self) -> None:
        self.folders.close()


def take(
    live: int, delta: int, changes: Iterable[Change], now: LiveIndex
) -> tuple[list[Step], int]:
    """Copy what changed from the live folder into the delta (read-only copies, as in a
    snapshot's tree); return the steps and the bytes copied. An entry that vanished since
    the walk (a service still writing) is recorded gone, and dropped from ``now``."""
    source = Place(live)
    steps: list[Step] = []
    copied = 0
    try:
        for kind, path, mode in changes:
            if kind in ("X", "D"):
                steps.append(Step(kind, path, mode))
                continue
            try:
                folder, name = source.parent(path)
                if kind == "L":
                    steps.append(Step("L", path, target=os.readlink(name, dir_fd=folder)))
                    continue
                number = len(steps)
                info = safecopy.copy_file(folder, name, delta, lambda m: m & 0o555, str(number))
                copied += info.st_size
                steps.append(Step("F", path, stat.S_IMODE(info.st_mode) & 0o777, data=number))
            except OSError as exc:
                if not safefs.vanished(exc):
                    raise
                now.forget_under(path)
                now.entries.pop(path, None)
                steps.append(Step("X", path))
    finally:
        source.close()
    return steps, copied


Put = Callable[[int, str, int, str], None]  # (delta, its name, folder, the name there)


def apply(
    root: int,
    delta: int,
    steps: Iterable[Step],
    put: Put,
    folder_mode: Callable[[int], int],
    touched: Callable[[str, int, str], None] | None = None,
) -> None:
    """Apply the steps, in order, to the tree at ``root``: ``put`` places a file from the
    delta (a hard link into a snapshot's tree, a copy into a live folder); ``touched(path,
    folder, name)`` is told of each entry made or removed."""
    tree = Place(root)
    try:
        for step in steps:
            parent, name = tree.parent(step.path)
            info = safefs.lstat_at(parent, name)
            if info is not None and (step.kind != "D" or not stat.S_ISDIR(info.st_mode)):
                parent, name = tree.clear(step.path)
                info = None
            if step.kind == "D" and info is None:
                safefs.make_dir(parent, name, folder_mode(step.mode))
            elif step.kind == "D":
                fd = safefs.open_dir(parent, name)
                try:
                    os.fchmod(fd, folder_mode(step.mode))
                finally:
                    os.close(fd)
            elif step.kind == "L":
                os.symlink(step.target, name, dir_fd=parent)
            elif step.kind == "F":
                put(delta, str(step.data), parent, name)
            if touched is not None:
                touched(step.path, parent, name)
    finally:
        tree.close()


def link(delta: int, data: str, folder: int, name: str) -> None:
    os.link(data, name, src_dir_fd=delta, dst_dir_fd=folder, follow_symlinks=False)


def copy_out(delta: int, data: str, folder: int, name: str) -> None:
    """A delta's file into a live folder: a copy (a snapshot's file is never linked to a live
    one), writable by its owner."""
    safecopy.copy_file(delta, data, folder, lambda m: (m & 0o777) | 0o200, name)


def build(folder: Path, parent_tree: Path) -> None:
    """Build the full tree of the snapshot in ``folder`` from its parent's tree and its
    delta: everything hard-linked, nothing copied; renamed into place when whole."""
    from dockyard.disk.volume_copy import copy_tree

    _, steps = load(folder)
    building = folder / ".tree-building"
    safefs.rmtree(building)
    os.mkdir(building, 0o700)
    try:
        with (
            safefs.opened(parent_tree) as old,
            safefs.opened(building) as root,
            safefs.opened(folder / DELTA) as delta,
        ):
            copy_tree(old, root, lambda mode: mode, link=True)
            apply(root, delta, steps, link, lambda mode: mode & 0o777)
        os.rename(building, folder / TREE)
    except BaseException:
        safefs.rmtree(building)
        raise


class Noted:
    """A ``touched`` for :func:`apply` that records in ``index`` each entry made or removed;
    :meth:`finish` then drops, in one pass, what was in the folders removed or replaced
    (not one pass per folder)."""

    def __init__(self, index: LiveIndex):
        self.index = index
        self.touched: dict[str, int] = {}  # path -> when (a count of calls)
        self.gone: dict[str, int] = {}  # a folder removed or replaced -> when
        self.calls = 0

    def __call__(self, path: str, parent: int, name: str) -> None:
        info = safefs.lstat_at(parent, name)
        status = status_of(info) if info is not None else None
        self.calls += 1
        when = self.calls
        was = self.index.entries.pop(path, None)
        if was is not None and was[0] == "d" and (status is None or status[0] != "d"):
            self.gone[path] = when
        self.index.racy.discard(path)
        if status is not None:
            self.index.entries[path] = status
            self.touched[path] = when

    def finish(self) -> list[str]:
        """Drop what went with a folder; the paths of the entries made."""
        if self.gone:
            for path in list(self.index.entries):
                if gone_since(self.gone, path, self.touched.get(path, -1)):
                    del self.index.entries[path]
                    self.index.racy.discard(path)
        return [p for p in self.touched if p in self.index.entries]


__all__ = [
    "CHANGES",
    "DELTA",
    "TREE",
    "BrokenSnapshot",
    "Noted",
    "Outcome",
    "Place",
    "Step",
    "apply",
    "build",
    "copy_out",
    "has_changes",
    "link",
    "load",
    "save",
    "take",
]
