"""The pipeline's state folder (``.dockyard/`` next to the pipeline file), checked before use."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dockyard.errors import StateFolderError


def prepare_state_folder(folder: Path, database: Path) -> None:
    """Make sure dockyard can keep its state in ``folder``, or say what the user must fix.

    SQLite's own words for these ("unable to open database file") name neither the
    folder nor the problem; a path that is a file would end in a traceback.
    """
    if folder.exists() and not folder.is_dir():
        raise StateFolderError(
            f"{folder} is not a folder: dockyard keeps the pipeline's state in a folder of "
            "this name next to the pipeline file; move the file away"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateFolderError(
            f"cannot create the state folder {folder}: {exc.strerror}; dockyard keeps the "
            "pipeline's state there, so the pipeline's folder must be writable"
        ) from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StateFolderError(
            f"cannot write in the state folder {folder}: {exc.strerror}; make it writable "
            f"(e.g. chmod u+w {folder}) or run the pipeline from a copy you can write"
        ) from None
    if database.exists() or database.is_symlink():
        if not database.is_file():
            raise StateFolderError(
                f"{database} is not a file: it should be dockyard's state database; move it away"
            )
        try:
            with database.open("r+b"):
                pass
        except OSError as exc:
            raise StateFolderError(
                f"cannot write the state database {database}: {exc.strerror}; make it "
                f"writable (e.g. chmod u+w {database})"
            ) from None
