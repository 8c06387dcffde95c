"""Streaming between containers through kernel pipes (``stdin: X``).

Each edge of a streamed chain is a FIFO in a folder bind-mounted into every member
at ``/.dockyard/stream``. A static busybox, bind-mounted read-only at
``/.dockyard/bin/busybox``, is each member's entrypoint: it opens the FIFOs as
stdin/stdout and ``exec``s the step's own command, so the bytes flow through the
kernel from one container to the next, never through the engine's API or dockyard,
and images need no shell of their own.

Opening a FIFO blocks until the other side opens it; if one side dies first, the
executor kills the rest of the chain, so neither side can wait forever.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from dockyard.disk.node_disk import fifo_name
from dockyard.errors import PlanError
from dockyard.images.busybox import find_static_busybox

STREAM_DIR = "/.dockyard/stream"
HELPER = "/.dockyard/bin/busybox"


def helper_binary() -> Path:
    """The static busybox that runs inside the containers (``DOCKYARD_HELPER`` overrides)."""
    override = os.environ.get("DOCKYARD_HELPER")
    if override:
        return Path(override)
    try:
        return find_static_busybox()
    except RuntimeError:
        raise PlanError(
            "stdin streaming needs a static busybox on the host to run inside the containers "
            "(Debian: apt-get install busybox-static; or set DOCKYARD_HELPER)"
        ) from None


def wrap(argv: tuple[str, ...], reads: str | None, writes: str | None) -> tuple[str, ...]:
    """The command that runs ``argv`` with stdin from ``reads`` and stdout into ``writes``."""

    def fifo(producer: str | None) -> str | None:
        return None if producer is None else f"{STREAM_DIR}/{fifo_name(producer)}"

    return redirect(argv, fifo(reads), fifo(writes), None, name="dockyard-stream")


def redirect(
    argv: tuple[str, ...],
    stdin: str | None,
    stdout: str | None,
    stderr: str | None,
    *,
    name: str = "dockyard-stdio",
) -> tuple[str, ...]:
    """The command that runs ``argv`` with its standard streams from and to these files
    (paths inside the container; relative ones from its working folder)."""
    script = 'exec "$@"'
    for sign, path in (("<", stdin), (">", stdout), ("2>", stderr)):
        if path is not None:
            script += f" {sign}{shlex.quote(path)}"
    return ("sh", "-c", script, name, *argv)
