"""Keeping sealed trees: the one way a sealed tree enters a content-addressed store, for a
step's output on one machine, on a node agent (an output its node made, or a tree fetched
from another), and in the fakes.

Beside the tree goes its record (:class:`Bounds`: what its seal counted), written first, so
a tree kept without one never exists (an agent asked for a tree sends it only within its
record's bounds). Then the tree is renamed into place in one ``rename(2)``: a crash at any
moment leaves no tree or a whole one. An identical tree kept already is kept as it is.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from dockyard.disk import sealing
from dockyard.disk.sealing import Sealed, Tally
from dockyard.errors import AgentFailure

_MOST = 2**63


class TreeError(AgentFailure):
    """A stream that is not a tree, or not the one it was sent as, or bounds that are not
    a tree's."""


def keep(staging: Path, sealed: Sealed, store: Path) -> Path:
    """Keep the sealed tree at ``staging`` in ``store`` under its digest: its record first,
    then the tree; ``staging`` is gone after. Where it is kept."""
    store.mkdir(parents=True, exist_ok=True)
    keep_record(store, sealed.digest, Bounds.of(sealed))
    return _place(staging, sealed, store)


@dataclass(frozen=True)
class Bounds:
    """The most a tree's stream may carry: what the tree's seal counted (bytes in its
    files, ``data`` of those sent, files, and files, folders and links)."""

    size: int
    data: int
    files: int
    entries: int

    @classmethod
    def of(cls, tally: Sealed | Tally) -> Bounds:
        return cls(tally.size, tally.data, tally.files, tally.entries)

    @classmethod
    def parse(cls, fields: object) -> Bounds:
        """From a record or a request; :class:`TreeError` unless it is exactly one."""
        names = {"size", "data", "files", "entries"}
        if not isinstance(fields, dict) or set(fields) != names:
            raise TreeError(f"not the bounds of a tree: {str(fields)[:200]}")
        values = {name: _count(value) for name, value in fields.items()}
        if not all(0 <= v < _MOST for v in values.values()):
            raise TreeError(f"not the bounds of a tree: {str(fields)[:200]}")
        return cls(**values)

    def query(self) -> str:
        return "&".join(f"{name}={value}" for name, value in asdict(self).items())

    @classmethod
    def from_query(cls, query: str) -> Bounds:
        pairs = [part.partition("=") for part in query.split("&")]
        if len(pairs) != 4:
            raise TreeError("a tree is sent with its bounds: size, data, files, entries")
        return cls.parse({name: value for name, _, value in pairs})


def _count(value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 20:
        return int(value)
    return -1


def _records(store: Path) -> Path:
    """Where the bounds of the trees kept in ``store`` are (beside it: not a tree)."""
    return store.with_name(f"{store.name}.records")


def keep_record(store: Path, digest: str, bounds: Bounds) -> None:
    """Remember what the tree ``digest`` in ``store`` holds, for those who fetch it."""
    folder = _records(store)
    folder.mkdir(mode=0o700, exist_ok=True)
    scratch = folder / f".{digest}.{secrets.token_hex(4)}"
    scratch.write_text(json.dumps(asdict(bounds)))
    os.replace(scratch, folder / digest)


def read_record(store: Path, digest: str) -> Bounds | None:
    try:
        text = (_records(store) / digest).read_text()
    except FileNotFoundError:
        return None
    try:
        return Bounds.parse(json.loads(text))
    except (ValueError, TreeError):
        return None  # (a torn record: as if none)


def _place(staging: Path, sealed: Sealed, outputs_dir: Path) -> Path:
    """Move a sealed tree into the content-addressed store; an identical output already
    there is kept and ``staging`` discarded."""
    final = outputs_dir / sealed.digest
    try:
        os.rename(staging, final)
    except FileNotFoundError:
        raise
    except OSError:  # (renaming onto a folder that is not empty: ENOTEMPTY or EEXIST)
        if not final.is_dir():
            raise
        sealing.discard(staging)  # the same content is kept already
    return final
