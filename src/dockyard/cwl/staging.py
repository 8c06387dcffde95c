"""Where a tool's input files appear inside its container: under paths named by what is
staged, never by chance, so that the command line, and with it the cache key, is the same
from one run to the next (cwltool's own staging folders are named by random UUIDs)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import MutableSequence
from pathlib import Path
from typing import Any

from cwl_utils.types import CWLDirectoryType, CWLFileType
from cwltool.pathmapper import PathMapper

from dockyard.cwl.locations import local_path


def stable_name(obj: Any) -> str:
    """A folder name for one staged File or Directory (with its secondary files): a digest
    of where each part comes from and the name it has, or, for a literal (a location
    ``_:...``), of what it holds."""
    return hashlib.sha256(json.dumps(_identity(obj), sort_keys=True).encode()).hexdigest()[:32]


def _identity(obj: Any) -> Any:
    if isinstance(obj, dict):
        location = str(obj.get("location", ""))
        found: dict[str, Any] = {"class": obj.get("class"), "basename": obj.get("basename")}
        if location.startswith("_:"):
            found["contents"] = obj.get("contents")
            found["listing"] = [_identity(o) for o in obj.get("listing", [])]
        else:
            found["location"] = location
        if obj.get("dirname"):
            found["dirname"] = obj["dirname"]
        found["writable"] = bool(obj.get("writable", False))
        found["secondaryFiles"] = [_identity(o) for o in obj.get("secondaryFiles", [])]
        return found
    return obj


class ContentPathMapper(PathMapper):
    """cwltool's mapper, with each input in a folder named by :func:`stable_name`."""

    def setup(
        self, referenced_files: MutableSequence[CWLFileType | CWLDirectoryType], basedir: str
    ) -> None:
        for fob in referenced_files:
            stagedir = self.stagedir
            if self.separateDirs:
                stagedir = os.path.join(self.stagedir, stable_name(fob))
            copy = bool(fob.get("writable", False))
            self.visit(fob, stagedir, basedir, copy=copy, staged=True)


def escapes(root: Path) -> str | None:
    """The first link under ``root`` (an output a container wrote) that leads outside it;
    None when there is none. Names are resolved (links read), no content is."""
    top = os.path.realpath(root)
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                resolved = os.path.realpath(path)
                if not (resolved == top or resolved.startswith(top + os.sep)):
                    return os.path.relpath(path, top)
    return None


def confine(outputs: Any, folder: Path, given: set[str]) -> None:
    """Refuse (PermissionError) an output object that names a file or folder outside the
    tool's committed ``folder`` (a tool's ``cwl.output.json`` may name any location, or
    ``..`` in a path), unless it is one of the inputs the tool was ``given`` (passed
    through), or whose name would leave the folder it is copied to."""
    top = os.path.realpath(folder)
    inputs = {os.path.realpath(p) for p in map(local_path, given) if p is not None}
    for item in _files_and_folders(outputs):
        name = item.get("basename")
        if isinstance(name, str) and (name in ("", ".", "..") or "/" in name):
            raise PermissionError(f"an output is named {name!r}")
        location = str(item.get("location") or "")
        if location.startswith("_:"):
            continue
        path = local_path(location)
        if path is None:
            raise PermissionError(f"an output is not a file of this machine: {location}")
        real = os.path.realpath(path)
        if any(real == given or real.startswith(given + os.sep) for given in inputs):
            continue  # (an input passed through, or what an input folder holds)
        if not (real == top or real.startswith(top + os.sep)):
            raise PermissionError(f"an output leads outside the tool's output folder: {location}")


def _files_and_folders(value: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if item.get("class") in ("File", "Directory"):
                found.append(item)
            stack.extend(item.values())
    return found
