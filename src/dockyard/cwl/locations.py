"""Where a CWL location is on this machine (no imports beyond the standard library: the
no-change rerun uses it before anything heavy is loaded)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit


def local_path(location: object) -> str | None:
    """The path on this machine that a CWL location (``file://`` or an absolute path)
    names; None for anything else (a literal, another scheme)."""
    if not isinstance(location, str):
        return None
    if location.startswith("file://"):
        return unquote(urlsplit(location).path)
    return location if location.startswith("/") else None


def path_of(item: dict[str, Any]) -> str | None:
    """The local path of a File or Directory object (its ``path``, else its location)."""
    return local_path(item.get("path") or item.get("location"))
