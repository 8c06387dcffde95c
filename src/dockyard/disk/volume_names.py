"""What names a volume and its snapshots: the rules for names, tags and references (checked
here, so that no caller can make a path outside ``volumes/``), and what a snapshot and a
volume are described by."""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard.errors import InvalidInput
from dockyard.names import NAME_RE

# A tag is shown in tables and sent to other hosts: printable, no markup, not a number.
TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
SNAPSHOT_ID_RE = re.compile(r"[0-9]{1,18}")


def check_name(name: str) -> str:
    """A volume's name follows the pipeline file's rule for names (one path component)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"{name!r} is not a volume name: expected lower-case letters, digits, '-' and "
            "'_', starting with a letter or digit, at most 63 characters"
        )
    return name


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag) or tag.isdigit():
        raise InvalidInput(
            f"{tag!r} is not a snapshot tag: expected letters, digits, '.', '-' and '_', "
            "starting with a letter or digit, at most 63 characters, and not a number"
        )
    return tag


def check_ref(ref: str) -> str:
    """A snapshot as named on the command line: its id, or its tag."""
    if isinstance(ref, str) and SNAPSHOT_ID_RE.fullmatch(ref):
        return ref
    if isinstance(ref, str) and TAG_RE.fullmatch(ref):
        return ref
    raise InvalidInput(
        f"{ref!r} is not a snapshot: expected its id (a number) or its tag (letters, "
        "digits, '.', '-' and '_'); see `dockyard volume snapshots NAME`"
    )


@dataclass(frozen=True)
class Snapshot:
    id: int  # counts up within one volume on one host
    tag: str | None
    created: float
    files: int
    bytes: int
    copied_bytes: int
    uuid: str = ""  # the same on every host that has this snapshot (send/receive)
    parent: str = ""  # kept as the changes since this one (uuid), until its tree is built


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    path: str
    created: float
    files: int
    bytes: int
    snapshots: int


__all__ = [
    "SNAPSHOT_ID_RE",
    "TAG_RE",
    "Snapshot",
    "VolumeInfo",
    "check_name",
    "check_ref",
    "check_tag",
]
