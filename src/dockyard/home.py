"""Where dockyard keeps what outlives a pipeline: the data root."""

from __future__ import annotations

import os
from pathlib import Path


def data_root() -> Path:
    """``$DOCKYARD_HOME``, else ``~/.local/share/dockyard``: named volumes, their snapshots,
    image caches and, for a cluster, its key."""
    configured = os.environ.get("DOCKYARD_HOME")
    return Path(configured) if configured else Path.home() / ".local" / "share" / "dockyard"


__all__ = ["data_root"]
