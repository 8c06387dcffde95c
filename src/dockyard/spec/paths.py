"""Host paths named by a pipeline file: inputs, seeds, build contexts, scatter globs.

A host path must stay inside the pipeline file's folder (symlinks resolved), and what
a step mounts must not reach dockyard's state folder, which holds the state database
and every step's outputs and logs. Inputs are checked twice: when the file is read
(every distinct path any instance mounts) and again by :func:`resolve_input` when the
container is made, since the folder may have changed in between.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dockyard.errors import PlanError, short_repr
from dockyard.home import data_root

STATE_DIR_NAME = ".dockyard"
MAX_GLOB_MATCHES = 100_000  # as many instances as a step may have
MAX_GLOB_ENTRIES = 1_000_000  # folder entries a glob may look at (symlink loops end here)
MAX_GLOB_PARTS = 32
_MAGIC = frozenset("*?[")


class BadPath(ValueError):
    """A host path a pipeline names that cannot be used; the message says why."""


def resolve_input(root: Path, rel: str) -> Path:
    """The host path an input mounts, resolved now; :class:`PlanError` when it is not safe.

    The engine calls this when it makes a container, so a symlink planted after the
    file was checked cannot make a step mount a path outside the pipeline's folder or
    dockyard's state folder.
    """
    resolved = Resolver(root).resolve(rel)
    if isinstance(resolved, str):
        raise PlanError(resolved)
    return resolved


class InputPaths:
    """:func:`resolve_input` for the many instances of one run: the pipeline's folder and
    state folder are resolved once. With ``fresh`` (what a container mounts) each input's
    own folders are resolved anew every time, since one may have become a link since the
    last call; without (what a cache key hashes), each folder once."""

    def __init__(self, root: Path, *, fresh: bool, must_exist: bool = True):
        self.resolver = Resolver(root)
        self.fresh = fresh
        self.must_exist = must_exist  # (without: the caller's own stat will tell)

    def __call__(self, rel: str) -> str:
        return self.with_status(rel)[0]

    def with_status(self, rel: str) -> tuple[str, os.stat_result | None]:
        """The path, and its status when resolving it gave that."""
        if self.fresh:
            self.resolver.parents.clear()
        try:
            return self.resolver.real_and_status(rel, must_exist=self.must_exist)
        except BadPath as exc:
            raise PlanError(str(exc)) from None


@dataclass
class Resolver:
    """Resolves many paths under one root cheaply: each distinct parent folder once."""

    root: Path
    real_root: str = field(init=False)
    real_state: str = field(init=False)
    real_data: str = field(init=False)
    parents: dict[str, str | None] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.real_root = os.path.realpath(self.root)
        self.real_state = os.path.realpath(self.root / STATE_DIR_NAME)
        try:
            self.real_data = os.path.realpath(data_root())
        except RuntimeError:  # (no $HOME and no passwd entry: no data root to keep out)
            self.real_data = ""

    def resolve(
        self, raw: str, *, shown: str | None = None, must_exist: bool = True, state: bool = True
    ) -> Path | str:
        """The resolved path, or a message saying what is wrong with it.

        ``shown`` is how the file wrote it (``data/${f}``), ``state`` whether reaching
        the state folder is a problem (it is for anything a container sees).
        """
        try:
            return Path(self.real(raw, shown=shown, must_exist=must_exist, state=state))
        except BadPath as exc:
            return str(exc)

    def real(
        self, raw: str, *, shown: str | None = None, must_exist: bool = True, state: bool = True
    ) -> str:
        """As :meth:`resolve`, as a string, raising :class:`BadPath`: no object made per
        path, for the many inputs of a large scatter."""
        return self.real_and_status(raw, shown=shown, must_exist=must_exist, state=state)[0]

    def real_and_status(
        self, raw: str, *, shown: str | None = None, must_exist: bool = True, state: bool = True
    ) -> tuple[str, os.stat_result | None]:
        """As :meth:`real`, with the path's status when resolving it gave that (not a link):
        what hashes it need not ask again."""
        if not raw:
            raise BadPath("expected a relative path, found an empty string")
        if "\0" in raw:
            raise BadPath(f"expected a path without NUL characters, found {_shown(raw, shown)}")
        if raw[0] == "/" or raw[0] == "~":
            raise BadPath(
                "expected a path relative to the pipeline file's folder, found "
                f"{_shown(raw, shown)}"
            )
        resolved, seen = self._realpath(raw)
        if resolved != self.real_root and not resolved.startswith(self.real_root + os.sep):
            raise BadPath(
                f"path {_shown(raw, shown)} escapes the pipeline file's folder {str(self.root)!r}"
            )
        problem = self._reserved_problem(resolved, raw, shown, state=state)
        if problem is not None:
            raise BadPath(problem)
        if must_exist:
            try:
                mode = (seen or os.stat(resolved)).st_mode
            except FileNotFoundError:
                raise BadPath(
                    f"path {_shown(raw, shown)} does not exist under {str(self.root)!r}"
                ) from None
            except OSError as exc:
                raise BadPath(f"path {_shown(raw, shown)} cannot be used: {exc.strerror}") from None
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                # (reading a FIFO or a device for the cache key would never end)
                raise BadPath(f"path {_shown(raw, shown)} is neither a file nor a folder")
        return resolved, seen

    def _realpath(self, raw: str) -> tuple[str, os.stat_result | None]:
        """The path resolved, and its status when that came for free (not a link)."""
        head, leaf = os.path.split(os.path.normpath(raw))
        if leaf in ("", ".", ".."):
            return os.path.realpath(os.path.join(self.root, raw)), None
        if head not in self.parents:
            real = os.path.realpath(os.path.join(self.root, head))
            self.parents[head] = real if os.path.isdir(real) else None
        parent = self.parents[head]
        if parent is None:  # not a folder (yet): resolve the long way, for the message
            return os.path.realpath(os.path.join(self.root, raw)), None
        candidate = os.path.join(parent, leaf)
        try:
            seen = os.lstat(candidate)
        except OSError:
            return candidate, None
        if not stat.S_ISLNK(seen.st_mode):
            return candidate, seen  # the common case: one lstat per path
        return os.path.realpath(candidate), None

    def _reserved_problem(
        self, resolved: str, raw: str, shown: str | None, *, state: bool
    ) -> str | None:
        """Why ``resolved`` may not be used: it is, is inside or contains dockyard's data
        root (volumes, image caches, a cluster's key: never, not even as a build context),
        or, with ``state``, the pipeline's state folder."""
        reserved = []
        if self.real_data:
            what = "volumes, their snapshots and a cluster's key"
            reserved.append((self.real_data, f"dockyard's data root {self.real_data!r} ({what})"))
        if state:
            reserved.append(
                (
                    self.real_state,
                    f"dockyard's state folder {STATE_DIR_NAME!r} "
                    "(the state database and every step's outputs and logs)",
                )
            )
        for folder, what in reserved:
            relation = _relation(resolved, folder)
            if relation is not None:
                return (
                    f"path {_shown(raw, shown)} {relation} {what}, which no step may see; "
                    "name a subfolder that holds just what the step reads"
                )
        return None


def _relation(path: str, folder: str) -> str | None:
    """How ``path`` stands to ``folder`` (both resolved): is it, inside it, containing it."""
    if path == folder:
        return "is"
    if path.startswith(folder + os.sep):
        return "is inside"
    if folder.startswith(path.rstrip(os.sep) + os.sep):
        return "contains"
    return None


def _shown(raw: str, shown: str | None) -> str:
    """A path as a message shows it (and how the file wrote it, if that differs)."""
    text = short_repr(raw)
    if shown is not None and shown != raw:
        text += f" (from {short_repr(shown)})"
    return text


def glob_values(root: Path, pattern: str) -> tuple[str, ...] | str:
    """The sorted names of the files ``pattern`` matches under ``root``, or a problem.

    Like the shell, ``*`` and ``?`` do not match a leading ``.`` (hidden files) unless
    the pattern's part starts with ``.`` itself; ``**`` is any depth of folders (not
    followed through symlinks). The state folder never matches.
    """
    if not pattern:
        return "expected a glob pattern like data/*.fq, found an empty string"
    shown = short_repr(pattern)
    if "\0" in pattern or not pattern.isprintable():
        return f"expected a glob pattern of printable characters, found {shown}"
    if os.path.isabs(pattern) or pattern.startswith("~"):
        return f"expected a pattern relative to the pipeline file's folder, found {shown}"
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if ".." in parts:
        return f"glob {shown} escapes the pipeline file's folder (a pattern cannot use '..')"
    if not parts:
        return f"expected a glob pattern that names files, found {shown}"
    if len(parts) > MAX_GLOB_PARTS:
        return f"expected a glob pattern of at most {MAX_GLOB_PARTS} parts, found {shown}"
    if parts.count("**") > 1:
        return f"expected at most one '**' in a glob pattern, found {shown}"
    walk = _Walk(root)
    names: set[str] = set()
    try:
        for path, listed in walk.matches(str(root), parts):
            # A listed entry that is no link exists (the listing says so, no stat needed);
            # a link must point somewhere (a dangling one names no file).
            if (listed is not None and not listed.is_symlink()) or os.path.exists(path):
                names.add(os.path.basename(path))
                if len(names) > MAX_GLOB_MATCHES:
                    return f"glob {shown} matches more than {MAX_GLOB_MATCHES} files"
    except _TooMuch:
        return (
            f"glob {shown} looks at more than {MAX_GLOB_ENTRIES} folder entries "
            "(a symlink loop, or a tree too large); narrow it"
        )
    return tuple(sorted(names))


class _TooMuch(Exception):
    pass


@dataclass
class _Walk:
    root: Path
    seen: int = 0  # folder entries looked at so far
    # (device, inode, parts left) of each folder entered: what a folder yields for the
    # rest of the pattern is the same however it was reached (only names are kept), so
    # a symlink loop is walked once, not until the pattern runs out.
    entered: set[tuple[int, int, int]] = field(default_factory=set)

    def matches(
        self, folder: str, parts: list[str]
    ) -> Iterator[tuple[str, os.DirEntry[str] | None]]:
        """Each path the pattern matches, with its folder entry when a listing found it."""
        part, rest = parts[0], parts[1:]
        if part == "**":
            for sub in self._below(folder):
                yield from self.matches(sub, rest) if rest else [(sub, None)]
            if rest:
                yield from self.matches(folder, rest)
            return
        if not _MAGIC & set(part):
            path = os.path.join(folder, part)
            if self._is_state(folder, part):
                return
            if rest and os.path.isdir(path) and self._enter(os.stat(path), rest):
                yield from self.matches(path, rest)
            elif not rest and os.path.lexists(path):
                yield path, None
            return
        hidden_too = part.startswith(".")  # as in the shell: * does not match .hidden
        match = re.compile(fnmatch.translate(part)).match
        for entry in self._entries(folder):
            name = entry.name
            if (hidden_too or not name.startswith(".")) and match(name):
                if not rest:
                    yield entry.path, entry
                elif _is_dir(entry, follow=True) and self._enter(entry.stat(), rest):
                    yield from self.matches(entry.path, rest)

    def _below(self, folder: str) -> Iterator[str]:
        """Every folder below ``folder`` (depth first), symlinks not followed."""
        stack = [folder]
        while stack:
            for entry in self._entries(stack.pop()):
                if not entry.name.startswith(".") and _is_dir(entry, follow=False):
                    yield entry.path
                    stack.append(entry.path)

    def _entries(self, folder: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            return []
        self.seen += len(entries)
        if self.seen > MAX_GLOB_ENTRIES:
            raise _TooMuch
        if folder == str(self.root):
            entries = [e for e in entries if e.name != STATE_DIR_NAME]
        return entries

    def _enter(self, info: os.stat_result, rest: list[str]) -> bool:
        key = (info.st_dev, info.st_ino, len(rest))
        if key in self.entered:
            return False
        self.entered.add(key)
        return True

    def _is_state(self, folder: str, name: str) -> bool:
        return folder == str(self.root) and name == STATE_DIR_NAME


def _is_dir(entry: os.DirEntry[str], *, follow: bool) -> bool:
    try:
        return entry.is_dir(follow_symlinks=follow)
    except OSError:
        return False
